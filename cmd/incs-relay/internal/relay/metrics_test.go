package relay

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/store"
)

// value reads a counter's or a histogram's count.
func value(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	require.NoError(t, (<-ch).Write(&m))
	if h := m.GetHistogram(); h != nil {
		return float64(h.GetSampleCount())
	}
	return m.GetCounter().GetValue()
}

// TestMetrics_Counted: what the ingester, the dispatchers' observer hooks
// and the API client report is counted under the right labels.
func TestMetrics_Counted(t *testing.T) {
	cfg := config.Default()
	cfg.Sinks = []config.SinkConfig{{Name: "hooks", Type: config.SinkWebhook}}
	m := newMetrics(testRelay(&cfg))

	m.ingested(store.IngestResult{Changed: 2, Skipped: 3, Failed: 1, Types: map[string]int{diff.TypeTaskCreated: 4, diff.TypeTaskAssigned: 1}})
	m.eventsAppended(map[string]int{"task.stalled": 2})
	assert.Equal(t, 2.0, value(t, m.ingestTasks.WithLabelValues("changed")))
	assert.Equal(t, 3.0, value(t, m.ingestTasks.WithLabelValues("unchanged")))
	assert.Equal(t, 1.0, value(t, m.ingestTasks.WithLabelValues("failed")))
	assert.Equal(t, 4.0, value(t, m.events.WithLabelValues(diff.TypeTaskCreated)))
	assert.Equal(t, 1.0, value(t, m.events.WithLabelValues(diff.TypeTaskAssigned)))
	assert.Equal(t, 2.0, value(t, m.events.WithLabelValues("task.stalled")))
	m.deleted(store.IngestResult{Events: 2, Types: map[string]int{"task.deleted": 2}}, 3)
	assert.Equal(t, 3.0, value(t, m.deletions), "tasks handed to the store")
	assert.Equal(t, 2.0, value(t, m.events.WithLabelValues("task.deleted")), "events the store appended")

	ev := &diff.Event{Time: time.Now().Add(-time.Second)}
	m.Failing("hooks", errors.New("503"))
	m.Retried("hooks", ev, 1, errors.New("503"))
	m.Retried("hooks", ev, 2, fmt.Errorf("dial: %w", sink.ErrRefusedAddress))
	m.Delivered("hooks", ev, time.Millisecond)
	m.DeadLettered("hooks", ev, fmt.Errorf("dial: %w", sink.ErrRefusedAddress))
	m.Paused("hooks", errors.New("410"))
	assert.Equal(t, 2.0, value(t, m.retries.WithLabelValues("hooks")))
	assert.Equal(t, 2.0, value(t, m.refused.WithLabelValues("hooks")), "a refused retry and a refused dead letter")
	assert.Equal(t, 1.0, value(t, m.deliveries.WithLabelValues("hooks", outcomeDelivered)))
	assert.Equal(t, 1.0, value(t, m.deliveries.WithLabelValues("hooks", outcomeDeadLettered)))
	assert.Equal(t, 1.0, value(t, m.deliveryLat.WithLabelValues("hooks").(prometheus.Histogram)))
	assert.Equal(t, 1.0, value(t, m.sinkFailing.WithLabelValues("hooks", "failing")))
	assert.Equal(t, 1.0, value(t, m.sinkFailing.WithLabelValues("hooks", "paused")))

	codes := []int{200, 401, 429, 503, 404}
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(codes[0])
		codes = codes[1:]
	}))
	defer api.Close()
	client := &http.Client{Transport: m.instrumentAPI(http.DefaultTransport)}
	for range 5 {
		resp, err := client.Get(api.URL)
		require.NoError(t, err)
		resp.Body.Close()
	}
	api.Close()
	_, err := client.Get(api.URL)
	require.Error(t, err)
	for _, o := range []string{"ok", "unauthorized", "rate_limited", "server_error", "client_error", "error"} {
		assert.Equal(t, 1.0, value(t, m.apiRequests.WithLabelValues(o)), o)
	}
	assert.Equal(t, 6.0, value(t, m.apiLatency))
}

// testRelay is a Relay with cfg and nothing else, for what reads only its
// config (metrics).
func testRelay(cfg *config.Config) *Relay {
	r := &Relay{}
	r.cfg.Store(cfg)
	return r
}
