package sink

// Benchmarks of a Dispatcher delivering to each kind of sink; run with
// -bench Dispatcher.

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

// benchObserver closes done once n events were delivered.
type benchObserver struct {
	NopObserver
	n, count int64
	done     chan struct{}
}

func (o *benchObserver) Delivered(string, *diff.Event, time.Duration) {
	if atomic.AddInt64(&o.count, 1) == o.n {
		close(o.done)
	}
}

// benchDispatch delivers b.N events spread over 2,000 tasks from an
// in-memory outbox to sink and reports events/s.
func benchDispatch(b *testing.B, sink Sink, maxInFlight int) {
	ob := newMemOutbox()
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < b.N; i += 1000 {
		ob.Append(b, dispatchTestEvents(min(1000, b.N-i), 2000, int64(i+1), rng)...)
	}
	obs := &benchObserver{n: int64(b.N), done: make(chan struct{})}
	d := NewDispatcher(DispatcherConfig{Sink: sink, Outbox: ob, MaxInFlight: maxInFlight, Observer: obs})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	b.ResetTimer()
	begin := time.Now()
	go func() { errc <- d.Run(ctx) }()
	select {
	case <-obs.done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("delivered %d of %d", atomic.LoadInt64(&obs.count), b.N)
	}
	elapsed := time.Since(begin)
	b.StopTimer()
	cancel()
	require.NoError(b, <-errc)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}

func BenchmarkDispatcher_JetStream(b *testing.B) {
	for _, inFlight := range []int{16, 64, 128, 256} {
		b.Run(fmt.Sprintf("in_flight=%d", inFlight), func(b *testing.B) {
			s := natsTestServer(b, b.TempDir(), -1, nil)
			n := newTestNATS(b, NATSConfig{URL: s.ClientURL(), JetStream: true, Stream: &StreamConfig{Name: "INCS"}})
			benchDispatch(b, n, inFlight)
		})
	}
}

func BenchmarkDispatcher_JetStreamEmbedded(b *testing.B) {
	n := newTestNATS(b, NATSConfig{URL: NATSEmbedded, JetStream: true, Stream: &StreamConfig{Name: "INCS"},
		Embedded: EmbeddedOptions{Port: -1, StoreDir: b.TempDir()}})
	benchDispatch(b, n, DefaultMaxInFlight)
}

func BenchmarkDispatcher_NATSCore(b *testing.B) {
	for _, inFlight := range []int{16, 64} {
		b.Run(fmt.Sprintf("in_flight=%d", inFlight), func(b *testing.B) {
			s := natsTestServer(b, b.TempDir(), -1, nil)
			n := newTestNATS(b, NATSConfig{URL: s.ClientURL()})
			benchDispatch(b, n, inFlight)
		})
	}
}

func BenchmarkDispatcher_Webhook(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	w, err := NewWebhook(WebhookConfig{Name: "hooks", URL: srv.URL, Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
	require.NoError(b, err)
	defer w.Close(context.Background())
	benchDispatch(b, w, DefaultMaxInFlight)
}

// BenchmarkDispatcher_WebhookSlow: a receiver answering after 50ms; 16 in
// flight make at most 320 events/s.
func BenchmarkDispatcher_WebhookSlow(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		time.Sleep(50 * time.Millisecond)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	w, err := NewWebhook(WebhookConfig{Name: "hooks", URL: srv.URL, Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
	require.NoError(b, err)
	defer w.Close(context.Background())
	benchDispatch(b, w, DefaultMaxInFlight)
}

// BenchmarkDispatcher_Nop measures the dispatcher itself, with a sink that
// acknowledges at once.
func BenchmarkDispatcher_Nop(b *testing.B) {
	benchDispatch(b, newDispatchTestSink("nop", nil), DefaultMaxInFlight)
}
