package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/diff/difftest"
	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/sink/consume"
	"github.com/incs-relay/incs-relay/store"
)

// benchLocation is the API's zone in synthetic tasks.
var benchLocation = func() *time.Location {
	loc, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		panic(err)
	}
	return loc
}()

// syntheticTasks returns n tasks from id first on, each with logsPer logs
// (created, assigned, status changed, comment, ...), decoded from JSON as
// the poller decodes a page, so that events carry the task's raw JSON and
// are about 1 KiB like real ones.
func syntheticTasks(tb testing.TB, first int64, n, logsPer int) []diff.Task {
	tb.Helper()
	var tasks []diff.Task
	require.NoError(tb, json.Unmarshal(difftest.TasksJSON(first, n, logsPer, first*int64(logsPer)), &tasks))
	return tasks
}

// replayBenchEvents is the number of stored events each replay delivers.
const replayBenchEvents = 100_000

// prefillStore writes replayBenchEvents events (25,000 tasks of 4 logs)
// to a new store without fsync, then reopens it as the relay does.
func prefillStore(b *testing.B) *store.DB {
	b.Helper()
	path := filepath.Join(b.TempDir(), "relay.db")
	db, err := store.Open(path, store.Options{NoSync: true})
	require.NoError(b, err)
	const perBatch = 500
	for first := int64(1); first <= replayBenchEvents/4; first += perBatch {
		_, err := db.Ingest(context.Background(), syntheticTasks(b, first, perBatch, 4), benchLocation, true)
		require.NoError(b, err)
	}
	head, err := db.Head()
	require.NoError(b, err)
	require.Equal(b, uint64(replayBenchEvents), head)
	require.NoError(b, db.Close())
	db, err = store.Open(path, store.Options{})
	require.NoError(b, err)
	b.Cleanup(func() { db.Close() })
	return db
}

// countObserver closes done once want events were delivered.
type countObserver struct {
	sink.NopObserver
	n, want atomic.Int64
	done    chan struct{}
	once    sync.Once
}

func (o *countObserver) Delivered(string, *diff.Event, time.Duration) {
	if o.n.Add(1) == o.want.Load() {
		o.once.Do(func() { close(o.done) })
	}
}

// benchReplay measures replaying every stored event to s: the sink's
// cursor is rewound to 1 and a Dispatcher, as `run` configures it,
// delivers until the last event is acknowledged. before runs untimed
// ahead of each replay. It reports events/s, seconds per replay, peak Go
// heap in use, bytes allocated per event and the process's peak RSS
// during the replays (relay side and the receiver, which share this
// process).
func benchReplay(b *testing.B, s sink.Sink, maxInFlight int, before func()) {
	db := prefillStore(b)
	name := s.Name()
	var (
		total   time.Duration
		peak    atomic.Uint64
		allocs  uint64
		peakRSS int64
	)
	resetPeakRSS()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		before()
		require.NoError(b, db.Rewind(name, 1))
		obs := &countObserver{done: make(chan struct{})}
		obs.want.Store(replayBenchEvents)
		d := sink.NewDispatcher(sink.DispatcherConfig{
			Sink: s, Outbox: db, MaxInFlight: maxInFlight, Observer: obs,
			Retry: sink.RetryPolicy{Initial: 10 * time.Millisecond, Max: time.Second}, Logger: zerolog.Nop(),
		})
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		alloc0 := ms.TotalAlloc
		stopSampling := sampleHeap(&peak)
		ctx, cancel := context.WithCancel(context.Background())
		runDone := make(chan error, 1)
		b.StartTimer()
		start := time.Now()
		go func() { runDone <- d.Run(ctx) }()
		select {
		case <-obs.done:
		case <-time.After(10 * time.Minute):
			b.Fatalf("replay not done after 10 minutes: %d of %d", obs.n.Load(), replayBenchEvents)
		}
		total += time.Since(start)
		b.StopTimer()
		cancel()
		require.NoError(b, <-runDone)
		stopSampling()
		runtime.ReadMemStats(&ms)
		allocs += ms.TotalAlloc - alloc0
		cur, err := db.Cursor(name)
		require.NoError(b, err)
		require.Equal(b, uint64(replayBenchEvents), cur, "cursor after the replay")
		peakRSS = max(peakRSS, readPeakRSS())
	}
	sec := total.Seconds() / float64(b.N)
	b.ReportMetric(replayBenchEvents/sec, "events/s")
	b.ReportMetric(sec, "s/replay")
	b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MB")
	b.ReportMetric(float64(allocs)/float64(b.N)/replayBenchEvents, "B/event")
	if fi, err := os.Stat(db.Path()); err == nil {
		b.ReportMetric(float64(fi.Size())/(1<<20), "store-MB")
	}
	if peakRSS > 0 {
		b.ReportMetric(float64(peakRSS)/(1<<20), "peak-RSS-MB")
	}
}

// sampleHeap records the highest HeapInuse in peak every 10ms until the
// returned function is called.
func sampleHeap(peak *atomic.Uint64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// resetPeakRSS resets the kernel's peak RSS of this process (VmHWM) so
// that the prefill does not count; a no-op where /proc does not allow it.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// readPeakRSS reads this process's peak RSS (VmHWM) from /proc; 0 if it
// cannot.
func readPeakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkReplay100k_JetStream replays 100,000 stored events to an
// embedded JetStream server: each publish carries Nats-Msg-Id and counts
// once the stream acknowledged it. The stream is recreated before each
// replay so that every message is stored, not dropped as a duplicate.
//
//	go test -run '^$' -bench Replay100k -benchtime 3x ./cmd/incs-relay
func BenchmarkReplay100k_JetStream(b *testing.B) {
	ns := runNATS(b)
	ctx := context.Background()
	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(b, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(b, err)
	streamCfg := jetstream.StreamConfig{Name: "BENCH", Subjects: []string{"incs.tasks.>"}, Storage: jetstream.FileStorage}
	_, err = js.CreateStream(ctx, streamCfg)
	require.NoError(b, err)
	s, err := sink.NewNATS(ctx, sink.NATSConfig{Name: "bus", URL: ns.ClientURL(), JetStream: true,
		Stream: &sink.StreamConfig{Name: "BENCH", Subjects: []string{"incs.tasks.>"}}})
	require.NoError(b, err)
	defer s.Close(ctx)
	benchReplay(b, s, sink.DefaultNATSMaxInFlight, func() {
		require.NoError(b, js.DeleteStream(ctx, "BENCH"))
		_, err := js.CreateStream(ctx, streamCfg)
		require.NoError(b, err)
	})
	info, err := js.Stream(ctx, "BENCH")
	require.NoError(b, err)
	st, err := info.Info(ctx)
	require.NoError(b, err)
	require.Equal(b, uint64(replayBenchEvents), st.State.Msgs, "every event stored once")
}

// BenchmarkReplay100k_Webhook replays 100,000 stored events to a local
// Standard Webhooks receiver that answers 204 at once and verifies the
// signature of every 100th delivery, with the default max_in_flight 16.
//
//	go test -run '^$' -bench Replay100k -benchtime 3x ./cmd/incs-relay
func BenchmarkReplay100k_Webhook(b *testing.B) {
	v, err := consume.NewVerifier([]string{e2eSecret})
	require.NoError(b, err)
	var n, bad atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%100 == 0 {
			if _, err := v.Verify(r); err != nil {
				bad.Add(1)
			}
		} else {
			_, _ = io.Copy(io.Discard, r.Body)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	s, err := sink.NewWebhook(sink.WebhookConfig{Name: "hooks", URL: hook.URL + "/incs", Secrets: []string{e2eSecret}, MaxInFlight: 16})
	require.NoError(b, err)
	defer s.Close(context.Background())
	benchReplay(b, s, 16, func() {})
	require.Zero(b, bad.Load(), "bad signatures")
}
