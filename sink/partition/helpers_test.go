package partition

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/store/jsstore"
	"github.com/incs-relay/incs-relay/store/storetest"
)

// testParts is the number of partitions of every test store.
const testParts = 4

// jetStream starts an embedded single-node JetStream server until the
// test ends and returns its client URL.
func jetStream(t *testing.T) string {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir()})
	require.NoError(t, err)
	srv.Start()
	t.Cleanup(srv.Shutdown)
	require.True(t, srv.ReadyForConnections(10*time.Second), "nats server ready")
	return srv.ClientURL()
}

// open opens the store as replica id on url until the test ends; it
// delivers nothing until Run (a command such as rewind does not run it).
func open(t *testing.T, url, id string) *jsstore.Store {
	t.Helper()
	st, _ := openConn(t, url, id)
	return st
}

// openConn is open, also returning the store's connection.
func openConn(t *testing.T, url, id string) (*jsstore.Store, *nats.Conn) {
	t.Helper()
	return openOpts(t, url, jsstore.Options{Name: "relay", Lease: 2 * time.Second, Partitions: testParts, ReplicaID: id})
}

// openOpts opens the store with o on url until the test ends.
func openOpts(t *testing.T, url string, o jsstore.Options) (*jsstore.Store, *nats.Conn) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := jsstore.Open(ctx, nc, o)
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	return st, nc
}

// replica opens the store as replica id on url and runs it until the test
// ends or stop is called.
func replica(t *testing.T, url, id string) (st *jsstore.Store, stop func()) {
	t.Helper()
	st = open(t, url, id)
	return st, background(t, id+": store Run", st.Run)
}

// leader runs replica id and waits until it leads, with every partition.
func leader(t *testing.T, url, id string) *jsstore.Store {
	t.Helper()
	st, _ := replica(t, url, id)
	require.Eventually(t, func() bool { _, owned := st.Ownership(); return st.IsLeader() && len(owned) == testParts },
		10*time.Second, 10*time.Millisecond, "%s leads and delivers every partition", id)
	return st
}

// ingest appends tasks first..first+n-1 (two logs each, so two events),
// which spread over the partitions, and returns the new head.
func ingest(t *testing.T, st *jsstore.Store, first, n int64) uint64 {
	t.Helper()
	var tasks []diff.Task
	for id := first; id < first+n; id++ {
		tasks = append(tasks, storetest.Task(id, 100*id, 100*id+1))
	}
	_, err := st.Ingest(context.Background(), tasks, time.UTC, true)
	require.NoError(t, err)
	head, err := st.Head()
	require.NoError(t, err)
	return head
}

// recSink records every acknowledged delivery; while paused it answers
// with a *sink.PauseError instead, and counts those attempts in refused.
type recSink struct {
	paused  atomic.Bool
	refused atomic.Int64
	mu      sync.Mutex
	acked   map[uint64]int // offset -> acknowledged deliveries
	total   int
}

func newRecSink() *recSink { return &recSink{acked: map[uint64]int{}} }

func (s *recSink) Name() string { return "hook" }

func (s *recSink) Deliver(_ context.Context, ev *diff.Event) error {
	if s.paused.Load() {
		s.refused.Add(1)
		return &sink.PauseError{Err: errors.New("410 gone")}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acked[ev.Offset]++
	s.total++
	return nil
}

func (s *recSink) Close(context.Context) error { return nil }

// count returns the deliveries acknowledged in all, and how many offsets
// they cover.
func (s *recSink) count() (total, offsets int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total, len(s.acked)
}

// times returns how often the event at offset was acknowledged.
func (s *recSink) times(offset uint64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked[offset]
}

// newDispatcher returns the partitioned delivery of rec on st, whose
// partitions persist their cursors every flush; it logs to the test.
func newDispatcher(t *testing.T, st *jsstore.Store, rec *recSink, flush time.Duration) *Dispatcher {
	return New(Config{
		Dispatcher: sink.DispatcherConfig{Sink: rec, MaxInFlight: 8, CursorFlush: flush, Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel),
			Retry: sink.RetryPolicy{Initial: time.Millisecond, Max: 5 * time.Millisecond, MaxElapsed: time.Minute}},
		Assignment: st,
		Outbox:     func(p int) sink.Outbox { return st.Partition(p) },
		Changes:    st.Changes(),
	})
}

// run runs d until the test ends or stop is called.
func run(t *testing.T, d *Dispatcher) (stop func()) {
	t.Helper()
	stop = background(t, "Run", d.Run)
	require.Eventually(t, func() bool { return d.State().Running }, 5*time.Second, time.Millisecond)
	return stop
}

// background runs fn until the test ends or stop is called; stop cancels
// its context and waits for it to return nil.
func background(t *testing.T, what string, fn func(ctx context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				assert.NoError(t, err, what)
			case <-time.After(15 * time.Second):
				t.Errorf("%s did not return", what)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// running returns the partitions d runs a dispatcher for, sorted.
func running(d *Dispatcher) []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []int
	for p := range testParts {
		if _, ok := d.runs[p]; ok {
			out = append(out, p)
		}
	}
	return out
}

// cursors returns st's stored cursor of the hook sink in each partition.
func cursors(t *testing.T, st *jsstore.Store) []uint64 {
	t.Helper()
	out := make([]uint64, testParts)
	for p := range out {
		c, err := st.Partition(p).Cursor("hook")
		require.NoError(t, err)
		out[p] = c
	}
	return out
}

// lastOffsets returns the highest offset of each partition's events.
func lastOffsets(t *testing.T, st *jsstore.Store) []uint64 {
	t.Helper()
	out := make([]uint64, testParts)
	for p := range out {
		evs, err := st.Partition(p).Read(context.Background(), 0, 1000)
		require.NoError(t, err)
		if len(evs) > 0 {
			out[p] = evs[len(evs)-1].Offset
		}
	}
	return out
}
