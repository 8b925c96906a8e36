// Test helpers (servers, stores, a leading store) and tests of Open, the
// store.Store conformance suite, ensure, a lost commit reply and
// pipelined Ingest.

package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store"
	"github.com/incs-relay/incs-relay/store/storetest"
)

// runServer starts an in-process single-node JetStream server on
// 127.0.0.1 with its store in a temporary directory.
func runServer(t testing.TB) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		ServerName: "js1", Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir(),
	})
	require.NoError(t, err)
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s
}

func connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// openStore opens a store on url with test defaults.
func openStore(t testing.TB, url string, o Options) *Store {
	t.Helper()
	if o.Lease == 0 {
		o.Lease = 2 * time.Second
	}
	if o.Partitions == 0 {
		o.Partitions = 4
	}
	// INCS_DEBUG=1 logs each store's lease and tail events to the test.
	if os.Getenv("INCS_DEBUG") != "" {
		o.Logger = zerolog.New(zerolog.NewTestWriter(t)).With().Timestamp().Str("r", o.ReplicaID).Logger().Level(zerolog.DebugLevel)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, connect(t, url), o)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// startRun runs s.Run until the test ends and returns a function that
// stops it and waits for it to return.
func startRun(t testing.TB, s *Store) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once bool
	stop = func() {
		if once {
			return
		}
		once = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return")
		}
	}
	t.Cleanup(stop)
	return stop
}

// waitLeader waits until s leads.
func waitLeader(t testing.TB, s *Store, within time.Duration) {
	t.Helper()
	require.Eventually(t, s.IsLeader, within, 20*time.Millisecond, "%s never led", s.o.ReplicaID)
}

// leadingStore opens a store on url, runs it and waits until it leads.
func leadingStore(t testing.TB, url string, o Options) *Store {
	t.Helper()
	s := openStore(t, url, o)
	startRun(t, s)
	waitLeader(t, s, 10*time.Second)
	return s
}

// TestConformance runs the store conformance suite on a single-node
// JetStream server, one stream name per case.
func TestConformance(t *testing.T) {
	srv := runServer(t)
	n := 0
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
		n++
		o := Options{Name: fmt.Sprintf("conf%d", n), ReplicaID: "r1"}
		s := leadingStore(t, srv.ClientURL(), o)
		reopen := func() store.Store {
			return leadingStore(t, srv.ClientURL(), o)
		}
		return s, reopen
	})
}

// TestServerVersion: servers older than 2.12 are refused with the version
// found and the reason.
func TestServerVersion(t *testing.T) {
	for _, c := range []struct {
		v  string
		ok bool
	}{{"2.12.0", true}, {"2.15.2", true}, {"v2.12.1-beta.1", true}, {"3.0.0", true}, {"2.11.9", false}, {"2.9.25", false}, {"1.4.1", false}} {
		err := checkVersion(c.v)
		if c.ok {
			require.NoError(t, err, c.v)
			continue
		}
		require.Error(t, err, c.v)
		require.Contains(t, err.Error(), c.v)
		require.Contains(t, err.Error(), "atomic batch")
	}
	srv := runServer(t)
	nc := connect(t, srv.ClientURL())
	require.NoError(t, checkVersion(nc.ConnectedServerVersion()), "the embedded server")
}

// TestConfigMismatch: a replica whose config hash differs from the
// leader's refuses to join.
func TestConfigMismatch(t *testing.T) {
	srv := runServer(t)
	leadingStore(t, srv.ClientURL(), Options{ReplicaID: "a", ConfigHash: "h1"})
	b := openStore(t, srv.ClientURL(), Options{ReplicaID: "b", ConfigHash: "h2"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := b.Run(ctx)
	require.ErrorIs(t, err, ErrConfigMismatch)
	require.Contains(t, err.Error(), "leader a")
	c := openStore(t, srv.ClientURL(), Options{ReplicaID: "c", ConfigHash: "h1"})
	startRun(t, c)
	require.Eventually(t, func() bool { return c.Role().Leader == "a" }, 5*time.Second, 10*time.Millisecond)
}

// TestOlderFormatLeader: a replica refuses to join a leader of an older
// version, which writes a message per seen record or its events
// uncompressed, and says why.
func TestOlderFormatLeader(t *testing.T) {
	for _, c := range []struct{ suffix, why string }{
		{s2FormatSuffix, "leader a runs an older incs-relay, which writes a message per seen record"},
		{plainFormatSuffix, "leader a runs an older incs-relay, which writes its events uncompressed"},
	} {
		t.Run(c.suffix, func(t *testing.T) {
			srv := runServer(t)
			a := openStore(t, srv.ClientURL(), Options{ReplicaID: "a", ConfigHash: "h1"})
			require.Equal(t, "h1"+formatSuffix, a.o.ConfigHash)
			a.o.ConfigHash = "h1" + c.suffix // as that version publishes it
			startRun(t, a)
			require.Eventually(t, func() bool { return a.Role().Leader == "a" }, 5*time.Second, 10*time.Millisecond)
			b := openStore(t, srv.ClientURL(), Options{ReplicaID: "b", ConfigHash: "h1"})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := b.Run(ctx)
			require.ErrorIs(t, err, ErrConfigMismatch)
			require.ErrorContains(t, err, c.why)
			require.ErrorContains(t, err, "stop every replica")
		})
	}
}

// TestOpenOptions: bad options and a partition count other than the
// stream's are refused.
func TestOpenOptions(t *testing.T) {
	srv := runServer(t)
	nc := connect(t, srv.ClientURL())
	ctx := context.Background()
	for _, o := range []Options{{Name: "a.b"}, {Name: "a b"}, {Lease: time.Second}, {Lease: 2500 * time.Millisecond}, {Replicas: 7}} {
		_, err := Open(ctx, nc, o)
		require.Error(t, err, "%+v", o)
	}
	s := openStore(t, srv.ClientURL(), Options{Name: "parts", Partitions: 6})
	require.Equal(t, 6, s.Partitions())
	_, err := Open(ctx, nc, Options{Name: "parts", Partitions: 8})
	require.ErrorContains(t, err, "created with 6 partitions, not 8")
	s2, err := Open(ctx, nc, Options{Name: "parts", Partitions: 6})
	require.NoError(t, err)
	require.NoError(t, s2.Close())
	require.NoError(t, s2.Close(), "a second Close is harmless")
}

// TestEnsure: a create that loses to another replica's ("in use") binds
// to the winner's on the next attempt; a store that can be neither bound
// nor created fails after setupAttempts with the last error.
func TestEnsure(t *testing.T) {
	ctx := context.Background()
	binds := 0
	bind := func(context.Context) (int, error) {
		if binds++; binds == 1 {
			return 0, jetstream.ErrStreamNotFound
		}
		return 42, nil
	}
	create := func(context.Context) (int, error) { return 0, jetstream.ErrStreamNameAlreadyInUse }
	notFound := func(err error) bool { return errors.Is(err, jetstream.ErrStreamNotFound) }
	v, err := ensure(ctx, "stream x", bind, create, notFound)
	require.NoError(t, err)
	require.Equal(t, 42, v)
	require.Equal(t, 2, binds)

	defer func(n int) { setupAttempts = n }(setupAttempts)
	setupAttempts = 3
	creates := 0
	_, err = ensure(ctx, "stream x",
		func(context.Context) (int, error) { return 0, jetstream.ErrStreamNotFound },
		func(context.Context) (int, error) { creates++; return 0, context.DeadlineExceeded }, notFound)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "stream x: neither bound nor created after 3 attempts")
	require.Equal(t, 3, creates)

	// A context that ends during a pause (the first is 50ms or more) ends
	// ensure with the last attempt's error beside it.
	tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	_, err = ensure(tctx, "stream x",
		func(context.Context) (int, error) { return 0, jetstream.ErrStreamNotFound }, create, notFound)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "stream x: context deadline exceeded (last attempt: ")

	// The pauses: 100ms doubling up to setupBackoffMax, each jittered to
	// half to one and a half times that.
	b := setupBackOff()
	for _, want := range []time.Duration{100, 200, 400, 800, 800, 800} {
		want *= time.Millisecond
		require.InDelta(t, want, b.NextBackOff(), float64(want/2))
	}
}

// TestLostAck: a commit the server stored but whose answer was lost is
// sent again; the server refuses the second attempt (it expects the head
// the first one replaced), the leader sees its own head stored and
// counts the batch once: no event stored twice, offsets dense.
func TestLostAck(t *testing.T) {
	srv := runServer(t)
	s := leadingStore(t, srv.ClientURL(), Options{ReplicaID: "a"})
	ctx := context.Background()
	loc := time.FixedZone("CST", 8*3600)
	_, err := s.Ingest(ctx, []diff.Task{storetest.Task(1, 10)}, loc, true)
	require.NoError(t, err)

	dropped := 0
	dropAck = func() bool { dropped++; return dropped == 1 }
	defer func() { dropAck = nil }()
	before, err := s.stream.Info(ctx)
	require.NoError(t, err)
	res, err := s.Ingest(ctx, []diff.Task{storetest.Task(2, 20, 21), storetest.Task(1, 10, 11)}, loc, true)
	require.NoError(t, err)
	require.Equal(t, 2, dropped, "two answers: the first commit's (dropped), the second attempt's (a refusal)")
	require.Equal(t, 3, res.Events)
	require.Equal(t, uint64(2), res.FirstOffset)
	require.Equal(t, uint64(4), res.LastOffset)
	after, err := s.stream.Info(ctx)
	require.NoError(t, err)
	// One batch: the seen records of tasks 1 and 2 in one pack, one
	// event message per partition (tasks 1 and 2: two), the head.
	require.Equal(t, before.State.LastSeq+4, after.State.LastSeq, "the batch stored once")

	// The page again, and the next one: nothing twice, offsets go on.
	res, err = s.Ingest(ctx, []diff.Task{storetest.Task(2, 20, 21), storetest.Task(1, 10, 11), storetest.Task(3, 30)}, loc, true)
	require.NoError(t, err)
	require.Equal(t, 1, res.Events)
	require.Equal(t, uint64(5), res.FirstOffset)
	// A replica that only tails agrees.
	b := openStore(t, srv.ClientURL(), Options{ReplicaID: "b"})
	for _, st := range []*Store{s, b} {
		require.Eventually(t, func() bool { h, _ := st.Head(); return h == 5 }, 5*time.Second, 10*time.Millisecond)
		evs, err := st.Read(ctx, 0, 100)
		require.NoError(t, err)
		require.Len(t, evs, 5)
		for i, ev := range evs {
			require.Equal(t, uint64(i+1), ev.Offset)
		}
	}
}

// TestPipelinedIngest: Ingests called as the relay calls them, the next
// page while the previous one commits, with a task getting new logs on
// consecutive pages: every log gets one event, in order, offsets dense,
// and a batch following one that failed fails too (nothing stored out of
// order, nothing twice).
func TestPipelinedIngest(t *testing.T) {
	srv := runServer(t)
	s := leadingStore(t, srv.ClientURL(), Options{ReplicaID: "a"})
	ctx := context.Background()
	loc := time.FixedZone("CST", 8*3600)
	page := func(k int) []diff.Task {
		// Task 1 gains a log on every page; each page has 20 new tasks.
		logs := make([]int64, k+1)
		for i := range logs {
			logs[i] = int64(10 + i)
		}
		tasks := []diff.Task{storetest.Task(1, logs...)}
		for j := range 20 {
			id := int64(100 + 20*k + j)
			tasks = append(tasks, storetest.Task(id, 10*id, 10*id+1))
		}
		return tasks
	}
	inflight := func() *pipeBatch {
		s.appendMu.Lock()
		defer s.appendMu.Unlock()
		return s.inflight
	}
	const pages = 30
	var prev chan error
	events := 0
	for k := range pages {
		ch := make(chan error, 1)
		before := inflight()
		go func() {
			res, err := s.Ingest(ctx, page(k), loc, true)
			if err == nil && res.Events != 41 {
				err = fmt.Errorf("page %d: %d events", k, res.Events)
			}
			ch <- err
		}()
		// Page k is under way (as the poller hands pages in order) before
		// page k-1's outcome is awaited.
		require.Eventually(t, func() bool { return inflight() != before }, 5*time.Second, time.Millisecond)
		if prev != nil {
			require.NoError(t, <-prev)
			events += 41
		}
		prev = ch
	}
	require.NoError(t, <-prev)
	events += 41
	evs, err := s.Read(ctx, 0, 10000)
	require.NoError(t, err)
	require.Len(t, evs, events)
	ids := map[string]bool{}
	var task1 []int64
	for i, ev := range evs {
		require.Equal(t, uint64(i+1), ev.Offset)
		require.False(t, ids[ev.ID], "%s twice", ev.ID)
		ids[ev.ID] = true
		if ev.Data.TaskID == 1 {
			var l struct {
				ID int64 `json:"id"`
			}
			require.NoError(t, json.Unmarshal(ev.Data.Log, &l))
			task1 = append(task1, l.ID)
		}
	}
	require.Len(t, task1, pages)
	require.IsIncreasing(t, task1, "task 1's events in order")
	res, err := s.Ingest(ctx, page(pages-1), loc, true)
	require.NoError(t, err)
	require.Zero(t, res.Events, "all seen")

	// A batch built on one that fails is not sent: fence the leader with
	// a newer epoch while two Ingests are under way.
	s.appendMu.Lock()
	s.drain()
	s.appendMu.Unlock()
	b := openStore(t, srv.ClientURL(), Options{ReplicaID: "b"})
	require.NoError(t, b.becomeLeader(ctx, 0, time.Now()))
	head, _ := b.Head()
	e1, e2 := make(chan error, 1), make(chan error, 1)
	before := inflight()
	go func() { _, err := s.Ingest(ctx, page(pages), loc, true); e1 <- err }()
	require.Eventually(t, func() bool { return inflight() != before }, 5*time.Second, time.Millisecond)
	go func() { _, err := s.Ingest(ctx, page(pages+1), loc, true); e2 <- err }()
	require.ErrorIs(t, <-e1, ErrFenced)
	require.Error(t, <-e2)
	after, _ := b.Head()
	require.Equal(t, head, after, "the fenced leader stored nothing")
}
