package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller/sim"
)

// scrape is one parsed /metrics answer.
type scrape map[string]*dto.MetricFamily

// scrapeMetrics GETs /metrics and parses it.
func (h *obsRelay) scrapeMetrics(t *testing.T) scrape {
	t.Helper()
	code, body := h.get(t, "/metrics", true)
	require.Equal(t, http.StatusOK, code, body)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	require.NoError(t, err)
	return fams
}

// value sums the samples of metric name whose labels include labels (name
// and value pairs); a histogram counts its observations. A missing metric
// is -1, so a check against 0 fails loudly.
func (s scrape) value(name string, labels ...string) float64 {
	f, ok := s[name]
	if !ok {
		return -1
	}
	sum := 0.0
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			sum += m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			sum += m.GetGauge().GetValue()
		case dto.MetricType_HISTOGRAM:
			sum += float64(m.GetHistogram().GetSampleCount())
		default:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum
}

// obsLogBuffer is a goroutine-safe log sink.
type obsLogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *obsLogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *obsLogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines decodes the JSON log lines.
func (l *obsLogBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(l.String()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), "log line %q is JSON", sc.Text())
		out = append(out, m)
	}
	return out
}

// TestMetrics_AfterRun runs the relay against an API that fails 15% of
// requests in every way but slowness, while tasks change, with a webhook
// sink whose receiver fails the first attempt of some events with 503 and
// refuses one event with 400 for good, and a second webhook sink filtered
// to status changes. It then scrapes /metrics and checks each counter and
// gauge against what the API, the receiver and the store saw. The same run
// checks the logs: one line per failed attempt, with the stable field
// names, and never the API token, the webhook secret or a signature.
func TestMetrics_AfterRun(t *testing.T) {
	logs := &obsLogBuffer{}
	h := startObsRelay(t, obsOptions{
		tasks:    40,
		interval: 100 * time.Millisecond,
		log:      zerolog.New(logs).Level(zerolog.DebugLevel).With().Timestamp().Logger(),
		logSet:   true,
		sinks: func(hookURL string) []config.SinkConfig {
			return []config.SinkConfig{
				{Name: "hooks", Type: config.SinkWebhook, URL: hookURL, Secret: e2eSecret, MaxInFlight: 4, Retry: obsRetry},
				{Name: "changes", Type: config.SinkWebhook, URL: strings.TrimSuffix(hookURL, "/incs") + "/changes", Secret: e2eSecret,
					Events: []string{diff.TypeTaskStatusChanged}, Retry: obsRetry},
			}
		},
	})
	initial := h.world.Logs()
	require.NotEmpty(t, initial)
	poison := diff.EventID(initial[len(initial)/2].LogID) // refused for good: dead-lettered

	var (
		mu       sync.Mutex
		attempts = map[string]int{}
		retried  int // 503 answers: each one a retry
	)
	h.setHookStatus(func(path, id string) int {
		if path != "/incs" {
			return 0
		}
		if id == poison {
			return http.StatusBadRequest
		}
		mu.Lock()
		defer mu.Unlock()
		attempts[id]++
		n, _ := strconv.ParseInt(strings.TrimPrefix(id, "log-"), 10, 64)
		if n%4 == 0 && attempts[id] == 1 {
			retried++
			return http.StatusServiceUnavailable
		}
		return 0
	})
	h.world.SetFaults(sim.Faults{Rate: 0.5, Kinds: []sim.FaultKind{
		sim.Status401, sim.Status429, sim.Status500, sim.Status503, sim.ErrorEnvelope, sim.Truncated, sim.NotJSON}})
	failedCodes := func() int {
		h.apiMu.Lock()
		defer h.apiMu.Unlock()
		n := 0
		for code, k := range h.apiCodes {
			if code != http.StatusOK {
				n += k
			}
		}
		return n
	}
	// Change the world until some requests and some cycles failed.
	for i := 0; i < 400 && (i < 20 || failedCodes() < 3 || h.r.PollStatus().LastFailure.IsZero()); i++ {
		h.world.Step(2)
		time.Sleep(50 * time.Millisecond)
	}
	h.world.SetFaults(sim.Faults{})
	all := h.world.Logs()
	statusChanges := 0
	for _, l := range all {
		if diff.TypeOf(l.Type) == diff.TypeTaskStatusChanged {
			statusChanges++
		}
	}
	// The world's edits without a log are events too: count the logs'
	// events and wait for every event stored.
	require.Eventually(t, func() bool {
		return h.storedLogEvents(t) == len(all) && h.ackedAt("/incs") >= int(h.head(t))-1 && h.ackedAt("/changes") >= statusChanges
	}, 60*time.Second, 20*time.Millisecond, "stored %d of %d logs, hooks %d, changes %d of %d",
		h.storedLogEvents(t), len(all), h.ackedAt("/incs"), h.ackedAt("/changes"), statusChanges)
	// A last, clean change, so the hooks sink's last attempt is a success.
	h.setHookStatus(func(path, id string) int {
		if path == "/incs" && id == poison {
			return http.StatusBadRequest
		}
		return 0
	})
	h.world.Step(1)
	all = h.world.Logs()
	statusChanges = 0
	for _, l := range all {
		if diff.TypeOf(l.Type) == diff.TypeTaskStatusChanged {
			statusChanges++
		}
	}
	require.Eventually(t, func() bool {
		return h.storedLogEvents(t) == len(all) && h.ackedAt("/incs") >= int(h.head(t))-1 && h.ackedAt("/changes") >= statusChanges
	}, 20*time.Second, 20*time.Millisecond)
	head := h.head(t)
	stored, err := h.r.Store().Read(context.Background(), 1, 1<<20)
	require.NoError(t, err)
	require.Len(t, stored, int(head))

	// The API keeps being polled: compare while no request is under way,
	// i.e. the API's answers are the same before and after the scrape.
	apiCodes := func() map[int]int {
		h.apiMu.Lock()
		defer h.apiMu.Unlock()
		m := make(map[int]int, len(h.apiCodes))
		for k, v := range h.apiCodes {
			m[k] = v
		}
		return m
	}
	outcome := func(code int) string {
		switch {
		case code >= 200 && code < 300:
			return "ok"
		case code == 401 || code == 403:
			return "unauthorized"
		case code == 429:
			return "rate_limited"
		case code >= 500:
			return "server_error"
		}
		return "client_error"
	}
	var s scrape
	var want map[string]int
	require.Eventually(t, func() bool {
		before, cycles := apiCodes(), h.r.PollStatus().Cycles
		s = h.scrapeMetrics(t)
		after, cycles2 := apiCodes(), h.r.PollStatus().Cycles
		if len(before) != len(after) || cycles != cycles2 {
			return false
		}
		want = map[string]int{}
		for code, n := range before {
			if after[code] != n {
				return false
			}
			want[outcome(code)] += n
		}
		for o, n := range want {
			if s.value("incs_relay_api_requests_total", "outcome", o) != float64(n) {
				return false
			}
		}
		return s.value("incs_relay_polls_total") == float64(cycles) &&
			s.value("incs_relay_sink_cursor", "sink", "hooks") == float64(head) &&
			s.value("incs_relay_sink_cursor", "sink", "changes") == float64(head) &&
			// the observer counts a delivery just after the cursor moves
			s.value("incs_relay_deliveries_total", "sink", "hooks", "outcome", "delivered") == float64(head-1) &&
			s.value("incs_relay_deliveries_total", "sink", "changes", "outcome", "delivered") == float64(statusChanges)
	}, 20*time.Second, 50*time.Millisecond, "API requests and poll cycles as the API saw them: polls %v, cursors %v %v of %d, delivered %v %v of %d and %d",
		s.value("incs_relay_polls_total"), s.value("incs_relay_sink_cursor", "sink", "hooks"), s.value("incs_relay_sink_cursor", "sink", "changes"), head,
		s.value("incs_relay_deliveries_total", "sink", "hooks", "outcome", "delivered"), s.value("incs_relay_deliveries_total", "sink", "changes", "outcome", "delivered"), head-1, statusChanges)

	t.Run("api", func(t *testing.T) {
		total := 0
		for o, n := range want {
			assert.Equal(t, float64(n), s.value("incs_relay_api_requests_total", "outcome", o), "outcome %s", o)
			total += n
		}
		assert.Greater(t, want["ok"], 0)
		assert.Greater(t, total-want["ok"], 0, "faults were injected")
		assert.Equal(t, float64(total), s.value("incs_relay_api_requests_total"))
		assert.Zero(t, s.value("incs_relay_api_requests_total", "outcome", "error"), "no request went unanswered")
		assert.Equal(t, float64(total), s.value("incs_relay_api_request_duration_seconds"), "one latency observation per request")
	})

	t.Run("polls", func(t *testing.T) {
		ps := h.r.PollStatus()
		ok := s.value("incs_relay_polls_total", "outcome", "ok")
		assert.Greater(t, ok, 0.0)
		assert.Equal(t, float64(ps.Cycles), ok+s.value("incs_relay_polls_total", "outcome", "error"))
		assert.Greater(t, s.value("incs_relay_polls_total", "outcome", "error"), 0.0, "some cycles failed on the faults")
		last := s.value("incs_relay_last_poll_success_timestamp_seconds")
		assert.InDelta(t, float64(time.Now().Unix()), last, 10)
		assert.Zero(t, s.value("incs_relay_poll_consecutive_failures"))
		assert.Equal(t, 1.0, s.value("incs_relay_ready"))
	})

	t.Run("events", func(t *testing.T) {
		byType := map[string]int{}
		tasks := map[int64]bool{}
		for _, l := range all {
			tasks[l.TaskID] = true
		}
		for _, ev := range stored {
			byType[ev.Type]++
		}
		for _, typ := range diff.Types {
			assert.Equal(t, float64(byType[typ]), s.value("incs_relay_events_total", "type", typ), "events of type %s", typ)
		}
		assert.Equal(t, float64(head), s.value("incs_relay_events_total"))
		assert.Equal(t, float64(head), s.value("incs_relay_outbox_head_offset"))
		assert.Equal(t, float64(head), s.value("incs_relay_outbox_events"))
		assert.Equal(t, float64(len(tasks)), s.value("incs_relay_seen_tasks"))
		assert.Greater(t, s.value("incs_relay_ingested_tasks_total", "result", "changed"), 0.0)
		assert.Greater(t, s.value("incs_relay_ingested_tasks_total", "result", "unchanged"), 0.0)
		fi, err := os.Stat(h.r.Config().Store.Path)
		require.NoError(t, err)
		assert.Equal(t, float64(fi.Size()), s.value("incs_relay_store_file_bytes"))
	})

	t.Run("deliveries", func(t *testing.T) {
		mu.Lock()
		wantRetries := retried
		mu.Unlock()
		assert.Greater(t, wantRetries, 0)
		assert.Equal(t, float64(head-1), s.value("incs_relay_deliveries_total", "sink", "hooks", "outcome", "delivered"))
		assert.Equal(t, 1.0, s.value("incs_relay_deliveries_total", "sink", "hooks", "outcome", "dead_lettered"))
		assert.Equal(t, float64(wantRetries), s.value("incs_relay_delivery_retries_total", "sink", "hooks"))
		assert.Equal(t, 1.0, s.value("incs_relay_sink_dead_letters", "sink", "hooks"))
		assert.Equal(t, float64(head-1), s.value("incs_relay_delivery_latency_seconds", "sink", "hooks"), "one latency per acknowledgement")
		assert.Zero(t, s.value("incs_relay_sink_lag_events", "sink", "hooks"))
		assert.Zero(t, s.value("incs_relay_sink_lag_seconds", "sink", "hooks"))
		assert.Equal(t, 1.0, s.value("incs_relay_sink_healthy", "sink", "hooks"))
		assert.Zero(t, s.value("incs_relay_sink_paused", "sink", "hooks"))
		assert.GreaterOrEqual(t, s.value("incs_relay_sink_failures_total", "sink", "hooks", "reason", "failing"), 1.0)
		assert.InDelta(t, float64(time.Now().Unix()), s.value("incs_relay_sink_last_delivery_timestamp_seconds", "sink", "hooks"), 30)

		assert.Equal(t, float64(statusChanges), s.value("incs_relay_deliveries_total", "sink", "changes", "outcome", "delivered"), "the filtered sink counts only what it sent")
		assert.Equal(t, float64(h.ackedAt("/changes")), s.value("incs_relay_deliveries_total", "sink", "changes", "outcome", "delivered"))
		assert.Zero(t, s.value("incs_relay_deliveries_total", "sink", "changes", "outcome", "dead_lettered"))
		assert.Zero(t, s.value("incs_relay_sink_lag_events", "sink", "changes"))
		assert.Zero(t, s.value("incs_relay_outbound_refused_total", "sink", "hooks"))
	})

	h.stop(t)

	t.Run("logs", func(t *testing.T) {
		mu.Lock()
		wantRetries := retried
		mu.Unlock()
		var retryLines, deadLines int
		for _, l := range logs.lines(t) {
			switch l["message"] {
			case "delivery failed; will retry":
				retryLines++
			case "event dead-lettered":
				deadLines++
			default:
				continue
			}
			for _, f := range []string{"sink", "event_id", "task_id", "offset", "attempt", "error"} {
				assert.Contains(t, l, f, "failure line %v has %s", l, f)
			}
			assert.Contains(t, l["error"], "HTTP ", "the line names the cause")
		}
		assert.Equal(t, wantRetries, retryLines, "one line per failed attempt")
		assert.Equal(t, 1, deadLines)

		out := logs.String()
		key := strings.TrimPrefix(e2eSecret, "whsec_")
		for _, secret := range []string{"api-token-s3cr3t", e2eSecret, key} {
			assert.NotContains(t, out, secret)
		}
		raw, err := base64.StdEncoding.DecodeString(key)
		require.NoError(t, err)
		assert.NotContains(t, out, string(raw))
		h.ackedMu.Lock()
		sigs := append([]string(nil), h.signatures...)
		h.ackedMu.Unlock()
		require.NotEmpty(t, sigs)
		for _, sig := range sigs {
			assert.NotContains(t, out, strings.TrimPrefix(sig, "v1,"), "a signature leaked into the logs")
		}
	})
}

// TestMetrics_OutboundRefused configures a webhook sink whose receiver is
// in its deny_networks and one aimed at the cloud metadata address: no
// request reaches the receiver, every attempt is refused before it
// connects and counted, and the sinks' status names the guard.
func TestMetrics_OutboundRefused(t *testing.T) {
	h := startObsRelay(t, obsOptions{
		tasks: 5,
		sinks: func(hookURL string) []config.SinkConfig {
			return []config.SinkConfig{
				{Name: "denied", Type: config.SinkWebhook, URL: hookURL, Secret: e2eSecret, Retry: obsRetry, DenyNetworks: []string{"127.0.0.0/8", "::1/128"}},
				{Name: "metadata", Type: config.SinkWebhook, URL: "http://169.254.169.254/latest/meta-data/", Secret: e2eSecret, Retry: obsRetry},
				{Name: "allowed", Type: config.SinkWebhook, URL: hookURL, Secret: e2eSecret, Retry: obsRetry, AllowNetworks: []string{"127.0.0.0/8"}},
			}
		},
	})
	h.waitCaughtUp(t, func(logs []sim.LogRef) int { return len(logs) })
	var s scrape
	require.Eventually(t, func() bool {
		s = h.scrapeMetrics(t)
		// The receiver counts a delivery before the relay hears its answer,
		// so the delivered count is waited for too.
		return s.value("incs_relay_outbound_refused_total", "sink", "denied") >= 3 &&
			s.value("incs_relay_outbound_refused_total", "sink", "metadata") >= 3 &&
			s.value("incs_relay_deliveries_total", "sink", "allowed", "outcome", "delivered") == float64(h.head(t))
	}, 20*time.Second, 50*time.Millisecond)
	assert.Equal(t, float64(h.head(t)), s.value("incs_relay_deliveries_total", "sink", "allowed", "outcome", "delivered"))
	assert.Zero(t, s.value("incs_relay_outbound_refused_total", "sink", "allowed"))
	assert.Zero(t, s.value("incs_relay_deliveries_total", "sink", "denied", "outcome", "delivered"))
	assert.Zero(t, s.value("incs_relay_deliveries_total", "sink", "denied", "outcome", "dead_lettered"), "a refusal is retried, not dead-lettered at once")
	assert.Equal(t, 0.0, s.value("incs_relay_sink_healthy", "sink", "denied"))
	assert.Equal(t, h.hooks.total(), int(h.head(t)), "only the allowed sink reached the receiver")

	_, body := h.get(t, "/v1/sinks", true)
	var got struct{ Sinks []relay.SinkStatus }
	require.NoError(t, json.Unmarshal([]byte(body), &got))
	require.Len(t, got.Sinks, 3)
	assert.Contains(t, got.Sinks[0].LastError, "outbound guard: refused to connect to 127.0.0.1: in deny_networks 127.0.0.0/8")
	assert.Contains(t, got.Sinks[1].LastError, "outbound guard: refused to connect to 169.254.169.254: link-local")
	assert.NotContains(t, got.Sinks[1].LastError, "meta-data", "errors name the host, never the path")
}
