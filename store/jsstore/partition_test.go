// Tests of delivery partitions: their assignment and spread, Rewound,
// the body cache, delivery across a failover.

package jsstore

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store"
	"github.com/incs-relay/incs-relay/store/storetest"
)

// owners returns, for each partition, the replicas whose Role lists it.
func owners(stores []*Store, parts int) [][]string {
	out := make([][]string, parts)
	for _, s := range stores {
		for _, p := range s.Role().Owned {
			out[p] = append(out[p], s.o.ReplicaID)
		}
	}
	return out
}

// requireSpread waits until every partition has exactly one owner among
// stores and each owns between lo and hi, checking meanwhile that no
// partition ever has two.
func requireSpread(t *testing.T, stores []*Store, parts, lo, hi int, within time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		own := owners(stores, parts)
		for p, ids := range own {
			require.LessOrEqual(t, len(ids), 1, "partition %d delivered by %v at once", p, ids)
		}
		for _, ids := range own {
			if len(ids) != 1 {
				return false
			}
		}
		for _, s := range stores {
			if n := len(s.Role().Owned); n < lo || n > hi {
				return false
			}
		}
		return true
	}, within, 10*time.Millisecond)
}

// TestPartitions: the leader spreads the partitions evenly over the live
// replicas, moves a dead replica's partitions at once and a live one's
// only after it let them go; a partition's outbox holds only its tasks'
// events, and the store-level cursor is what every partition has done.
func TestPartitions(t *testing.T) {
	srv := runServer(t)
	ctx := context.Background()
	loc := time.FixedZone("CST", 8*3600)
	const parts = 6
	open := func(id string) (*Store, func()) {
		s := openStore(t, srv.ClientURL(), Options{ReplicaID: id, Partitions: parts})
		return s, startRun(t, s)
	}
	a, _ := open("a")
	waitLeader(t, a, 5*time.Second)
	b, stopB := open("b")
	changes := b.Changes()
	requireSpread(t, []*Store{a, b}, parts, 3, 3, 10*time.Second)
	select {
	case <-changes:
	default:
		t.Fatal("Changes did not signal the new partitions")
	}
	r := b.Role()
	require.Equal(t, "a", r.Leader)
	require.Equal(t, []string{"a", "b"}, r.Members)
	require.Len(t, r.Assignments, 2)
	require.False(t, r.LeaseExpires.IsZero())

	var tasks []diff.Task
	for i := range int64(12) {
		tasks = append(tasks, storetest.Task(i+1, 100*(i+1), 100*(i+1)+1))
	}
	_, err := a.Ingest(ctx, tasks, loc, true)
	require.NoError(t, err)
	require.Eventually(t, func() bool { h, _ := b.Head(); return h == 24 }, 5*time.Second, 10*time.Millisecond, "b tails a's appends")
	var all []uint64
	for p := range parts {
		evs, err := b.Partition(p).Read(ctx, 0, 100)
		require.NoError(t, err)
		require.NotEmpty(t, evs)
		for i, ev := range evs {
			require.Equal(t, p, int(ev.Data.TaskID%parts), "partition %d holds only its tasks", p)
			if i > 0 {
				require.Greater(t, ev.Offset, evs[i-1].Offset)
			}
			all = append(all, ev.Offset)
		}
		part, err := b.Partition(p).Read(ctx, evs[len(evs)-1].Offset, 100)
		require.NoError(t, err)
		require.Len(t, part, 1)
	}
	slices.Sort(all)
	require.Len(t, all, 24)
	require.Equal(t, uint64(24), all[23])

	// Partition cursors: the store-level cursor is the highest offset
	// every partition has done.
	for p := range parts {
		require.NoError(t, b.Partition(p).SetCursor("hook", 24))
	}
	c, err := b.Cursor("hook")
	require.NoError(t, err)
	require.Equal(t, uint64(24), c)
	require.Eventually(t, func() bool { c, _ := a.Cursor("hook"); return c == 24 }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, b.Partition(3).SetCursor("hook", 5)) // task 3's events: 5, 6
	c, err = b.Cursor("hook")
	require.NoError(t, err)
	require.Equal(t, uint64(5), c)
	pc, err := a.Partition(3).Cursor("hook")
	require.NoError(t, err)
	require.Eventually(t, func() bool { pc, _ = a.Partition(3).Cursor("hook"); return pc == 5 }, 5*time.Second, 10*time.Millisecond, "a learns b's cursor")

	// A third replica joins: partitions move over, never delivered twice.
	c3, stopC := open("c")
	requireSpread(t, []*Store{a, b, c3}, parts, 2, 2, 15*time.Second)
	// b leaves: its partitions go to the others.
	stopB()
	requireSpread(t, []*Store{a, c3}, parts, 3, 3, 15*time.Second)
	require.Empty(t, b.Role().Owned)
	// c dies without a word (its heartbeat stops): a takes everything
	// once c's membership lapses.
	_ = stopC
	c3.nc.Close()
	requireSpread(t, []*Store{a}, parts, parts, parts, 3*a.o.Lease)
	require.Eventually(t, func() bool { return len(c3.Role().Owned) == 0 }, 2*a.o.Lease, 10*time.Millisecond,
		"a replica cut off from the cluster stops delivering")
}

// TestRewound: a rewind on one replica reaches every replica's Rewound
// channel, with the cursors of every partition moved back.
func TestRewound(t *testing.T) {
	srv := runServer(t)
	ctx := context.Background()
	loc := time.FixedZone("CST", 8*3600)
	a := leadingStore(t, srv.ClientURL(), Options{ReplicaID: "a"})
	b := openStore(t, srv.ClientURL(), Options{ReplicaID: "b"})
	_, err := a.Ingest(ctx, []diff.Task{storetest.Task(1, 10, 11), storetest.Task(2, 20, 21)}, loc, true)
	require.NoError(t, err)
	require.NoError(t, a.SetCursor("hook sink", 4))
	require.Eventually(t, func() bool { c, _ := b.Cursor("hook sink"); return c == 4 }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, a.Rewind("hook sink", 2))
	for _, s := range []*Store{a, b} {
		select {
		case sink := <-s.Rewound():
			require.Equal(t, "hook sink", sink)
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no rewind notice", s.o.ReplicaID)
		}
	}
	for p := range b.Partitions() {
		c, err := b.Partition(p).Cursor("hook sink")
		require.NoError(t, err)
		require.Equal(t, uint64(1), c, fmt.Sprintf("partition %d", p))
	}
	_, err = b.Ingest(ctx, []diff.Task{storetest.Task(3, 30)}, loc, true)
	require.ErrorIs(t, err, ErrNotLeader, "a follower does not append")
	require.NoError(t, b.SetMeta("k", []byte("v")), "a follower writes state")
}

// TestOutboxFromStream: with no cache at all, every read (Read, Event, a
// partition, DeadLetter, a query by task and by type) fetches the events
// from the stream byte for byte; a prune purges the event messages below
// the floor, keeps the dead letter's event readable from its copy, and a
// replica opened afterwards reads the same outbox.
func TestOutboxFromStream(t *testing.T) {
	srv := runServer(t)
	ctx := context.Background()
	loc := time.FixedZone("CST", 8*3600)
	s := leadingStore(t, srv.ClientURL(), Options{ReplicaID: "a", Partitions: 3, CacheBytes: -1})
	_, err := s.Ingest(ctx, []diff.Task{storetest.Task(1, 10, 11, 12), storetest.Task(2, 20, 21)}, loc, true)
	require.NoError(t, err)
	before, err := s.Read(ctx, 0, 100)
	require.NoError(t, err)
	require.Len(t, before, 5)
	var tasks []diff.Task
	for i := range int64(20) {
		tasks = append(tasks, storetest.Task(10+i, 100*(i+1), 100*(i+1)+1))
	}
	for i := 0; i < len(tasks); i += 4 {
		_, err = s.Ingest(ctx, tasks[i:i+4], loc, true)
		require.NoError(t, err)
	}
	after, err := s.Read(ctx, 0, 100)
	require.NoError(t, err)
	require.Len(t, after, 45)
	for i, ev := range after {
		require.Equal(t, uint64(i+1), ev.Offset)
		if i < len(before) {
			require.Equal(t, string(before[i].Body), string(ev.Body), "offset %d", ev.Offset)
			require.Equal(t, before[i].ID, ev.ID)
			require.True(t, before[i].StoredAt.Equal(ev.StoredAt))
		}
	}
	// Every window of the outbox reads the same from any start.
	for from := uint64(1); from <= 45; from += 7 {
		got, err := s.Read(ctx, from, 5)
		require.NoError(t, err)
		require.Equal(t, after[from-1:min(from-1+5, 45)], got, "from %d", from)
		one, err := s.Event(from)
		require.NoError(t, err)
		require.Equal(t, after[from-1], one)
	}
	byTask, err := s.Events(ctx, store.EventQuery{TaskID: 15})
	require.NoError(t, err)
	require.Len(t, byTask, 2)
	byType, err := s.Events(ctx, store.EventQuery{Type: diff.TypeTaskCreated, From: 10, Limit: 3})
	require.NoError(t, err)
	require.Len(t, byType, 3)
	part, err := s.Partition(1).Read(ctx, 0, 100)
	require.NoError(t, err)
	require.Equal(t, "log-10", part[0].ID)
	require.NoError(t, s.DeadLetter("hook", 1, 2, "HTTP 500"))
	dls, err := s.DeadLetters("hook")
	require.NoError(t, err)
	require.Equal(t, "log-10", dls[0].EventID)

	// A prune up to 40 purges every message below, the dead letter's
	// among them; its event stays readable from its copy.
	info, err := s.stream.Info(ctx)
	require.NoError(t, err)
	msgsBefore := info.State.Msgs
	require.NoError(t, s.SetCursor("hook", 40))
	res, err := s.Prune(ctx, store.PruneOptions{Retention: time.Nanosecond, Sinks: []string{"hook"}, Now: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	require.Equal(t, 40, res.Events)
	info, err = s.stream.Info(ctx)
	require.NoError(t, err)
	require.Less(t, info.State.Msgs, msgsBefore, "event messages purged")
	first, err := s.First()
	require.NoError(t, err)
	require.Equal(t, uint64(41), first)
	dead, err := s.Event(1)
	require.NoError(t, err)
	require.Equal(t, after[0], dead, "the dead letter's event, from its copy")
	_, err = s.Event(2)
	require.ErrorIs(t, err, store.ErrNotFound)
	st, err := s.Stats()
	require.NoError(t, err)
	require.Equal(t, 5, st.Events)
	require.Zero(t, s.PruneStatus().PurgeFailures)

	// A replica opened now reads the same outbox.
	r := openStore(t, srv.ClientURL(), Options{ReplicaID: "r", Partitions: 3})
	got, err := r.Read(ctx, 0, 100)
	require.NoError(t, err)
	require.Equal(t, after[40:], got)
	head, err := r.Head()
	require.NoError(t, err)
	require.Equal(t, uint64(45), head)
	first, err = r.First()
	require.NoError(t, err)
	require.Equal(t, uint64(41), first)
}

// TestDeliveryAcrossFailover runs three replicas, each delivering its
// partitions (one reader per owned partition, as cmd's dispatchers do)
// while whoever leads ingests; the leader loses its connection half way.
// Every log gets one event, every event is delivered, and each task's
// events are first delivered in offset order.
func TestDeliveryAcrossFailover(t *testing.T) {
	srv := runServer(t)
	const lease = 2 * time.Second
	loc := time.FixedZone("CST", 8*3600)
	var stores []*Store
	for i := range 3 {
		s := openStore(t, srv.ClientURL(), Options{ReplicaID: fmt.Sprintf("d%d", i+1), Lease: lease, Partitions: 6})
		startRun(t, s)
		stores = append(stores, s)
	}
	var (
		mu        sync.Mutex
		delivered = map[uint64]int{}
		firstSeen = map[int64][]uint64{} // task -> offsets in first-delivery order
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range stores {
		wg.Go(func() {
			for ctx.Err() == nil {
				for _, p := range s.Role().Owned {
					po := s.Partition(p)
					c, err := po.Cursor("sink")
					if err != nil {
						return
					}
					evs, err := po.Read(ctx, c+1, 20)
					if err != nil || len(evs) == 0 {
						continue
					}
					mu.Lock()
					for _, ev := range evs {
						if delivered[ev.Offset] == 0 {
							firstSeen[ev.Data.TaskID] = append(firstSeen[ev.Data.TaskID], ev.Offset)
						}
						delivered[ev.Offset]++
					}
					mu.Unlock()
					if po.SetCursor("sink", evs[len(evs)-1].Offset) != nil {
						return // cut off from the cluster
					}
				}
				select {
				case <-ctx.Done():
				case <-s.Changes():
				case <-time.After(10 * time.Millisecond):
				}
			}
		})
	}
	// Ingest rounds: each adds a log to 30 tasks, through whoever leads.
	round := int64(0)
	ingest := func() {
		round++
		var tasks []diff.Task
		for id := range int64(30) {
			logs := make([]int64, round)
			for k := range logs {
				logs[k] = 1000*(id+1) + int64(k)
			}
			tasks = append(tasks, storetest.Task(id+1, logs...))
		}
		deadline := time.Now().Add(4 * lease)
		for {
			for _, s := range stores {
				if s.IsLeader() {
					if _, err := s.Ingest(ctx, tasks, loc, true); err == nil {
						return
					}
				}
			}
			require.True(t, time.Now().Before(deadline), "round %d: no leader took the page", round)
			time.Sleep(20 * time.Millisecond)
		}
	}
	for range 10 {
		ingest()
	}
	lead := leaderOf(t, stores, lease)
	lead.nc.Close()
	for range 10 {
		ingest()
	}
	head := uint64(30 * 20)
	survivor := leaderOf(t, without(stores, lead), 2*lease)
	h, err := survivor.Head()
	require.NoError(t, err)
	require.Equal(t, head, h, "one event per log")
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(delivered) == int(head)
	}, 6*lease, 20*time.Millisecond, "every event delivered")
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for _, n := range delivered {
		dups += n - 1
	}
	for task, offs := range firstSeen {
		require.True(t, slices.IsSorted(offs), "task %d first delivered out of order: %v", task, offs)
	}
	t.Logf("%d events delivered, %d twice or more across the failover", len(delivered), dups)
}

// TestSearchLeavesCache: the messages a search for an offset reads on its
// way are not cached, only the one it finds: a replica opened on 64
// batches (an event message each, of 10 events) that reads from the middle
// caches that one message, not the search's half a dozen; reads from there
// on go on without searching again.
func TestSearchLeavesCache(t *testing.T) {
	srv := runServer(t)
	ctx := context.Background()
	lead := leadingStore(t, srv.ClientURL(), Options{ReplicaID: "a", Partitions: 1})
	storeBatches(t, lead, 64)
	r := openStore(t, srv.ClientURL(), Options{ReplicaID: "r", Partitions: 1})
	cached := func() int {
		r.cache.mu.Lock()
		defer r.cache.mu.Unlock()
		return r.cache.order.Len()
	}
	require.Zero(t, cached())
	po := r.Partition(0)
	evs, err := po.Read(ctx, 321, 2)
	require.NoError(t, err)
	require.Len(t, evs, 2)
	require.Equal(t, uint64(321), evs[0].Offset)
	require.Equal(t, 1, cached(), "the message found; none of those the search read on its way")
	more, err := po.Read(ctx, 323, 20)
	require.NoError(t, err)
	require.Len(t, more, 20)
	require.Equal(t, uint64(323), more[0].Offset)
	require.Equal(t, 3, cached(), "and the two read next")
}

// TestCursorRemembersNext: a sink's status asks each partition for the
// event after its cursor (Cursor) and when the one after the sink's
// cursor was stored; asked again while the cursors of two sinks stand
// still, a replica that does not hold those messages answers without
// reading the stream, and a cursor that moved is answered afresh.
func TestCursorRemembersNext(t *testing.T) {
	srv := runServer(t)
	lead := leadingStore(t, srv.ClientURL(), Options{ReplicaID: "a", Partitions: 4})
	storeBatches(t, lead, 64)
	require.NoError(t, lead.SetCursor("s", 100))
	require.NoError(t, lead.SetCursor("u", 300))
	r := openStore(t, srv.ClientURL(), Options{ReplicaID: "r", Partitions: 4})
	inMsgs := func() int64 {
		v, err := srv.Varz(nil)
		require.NoError(t, err)
		return v.InMsgs
	}
	statusOf := func(sink string) uint64 { // what a sink's status reads: the cursor, and when the event after it was stored
		c, err := r.Cursor(sink)
		require.NoError(t, err)
		_, ok := r.CachedStoredAt(c + 1)
		require.True(t, ok, "sink %s: the event after its cursor, as Cursor found it", sink)
		return c
	}
	status := func() uint64 { return statusOf("s") }
	require.Equal(t, uint64(100), status())
	require.Equal(t, uint64(300), statusOf("u"))
	at, ok := r.CachedStoredAt(101)
	require.True(t, ok, "the event after the cursor, as Cursor found it")
	ev, err := r.Event(101)
	require.NoError(t, err)
	require.Equal(t, ev.StoredAt, at)
	before := inMsgs()
	for range 10 {
		require.Equal(t, uint64(100), status())
		require.Equal(t, uint64(300), statusOf("u"))
	}
	require.Zero(t, inMsgs()-before, "requests to the server for ten more statuses of two sinks")

	require.NoError(t, lead.SetCursor("s", 200))
	require.Eventually(t, func() bool { c, err := r.Cursor("s"); return err == nil && c == 200 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, uint64(200), status(), "a moved cursor is read again")
}

// storeBatches stores n batches in lead, each of two tasks of five logs.
func storeBatches(t *testing.T, lead *Store, n int64) {
	t.Helper()
	for i := range n {
		l := 100 * i
		_, err := lead.Ingest(context.Background(), []diff.Task{storetest.Task(2*i+1, l+1, l+2, l+3, l+4, l+5), storetest.Task(2*i+2, l+6, l+7, l+8, l+9, l+10)}, time.UTC, true)
		require.NoError(t, err)
	}
}
