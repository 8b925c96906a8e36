package partition

import (
	"context"
	"maps"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/store"
	"github.com/incs-relay/incs-relay/store/jsstore"
)

// The JetStream store is the Assignment cmd runs a Dispatcher on.
var _ Assignment = (*jsstore.Store)(nil)

// TestAssignment_Jsstore: jsstore's Ownership is its Role's, and
// SinkPaused its stored sink state's.
func TestAssignment_Jsstore(t *testing.T) {
	a := leader(t, jetStream(t), "a")
	self, owned := a.Ownership()
	assert.Equal(t, "a", self)
	assert.Equal(t, a.Role().Owned, owned)
	assert.Equal(t, []int{0, 1, 2, 3}, owned)
	assert.Equal(t, testParts, a.Partitions())

	paused, reason, err := a.SinkPaused("hook")
	require.NoError(t, err)
	assert.False(t, paused)
	assert.Empty(t, reason)
	require.NoError(t, a.SetSinkState("hook", store.SinkState{Paused: true, PauseReason: "410 gone"}))
	paused, reason, err = a.SinkPaused("hook")
	require.NoError(t, err)
	assert.True(t, paused)
	assert.Equal(t, "410 gone", reason)
}

// TestDispatcher_Handoff: two replicas deliver two partitions each. When
// b stops, its partitions' dispatchers stop and store their cursors,
// b's state keeps their totals, and a starts b's partitions only once b
// released them, from b's last cursors: no event is delivered twice.
func TestDispatcher_Handoff(t *testing.T) {
	url := jetStream(t)
	a := leader(t, url, "a")
	b, stopB := replica(t, url, "b")
	require.Eventually(t, func() bool {
		_, ownedA := a.Ownership()
		_, ownedB := b.Ownership()
		return len(ownedA) == 2 && len(ownedB) == 2 && len(b.Role().Assignments["a"]) == 2
	}, 15*time.Second, 10*time.Millisecond, "a and b deliver two partitions each")
	_, partsB := b.Ownership()
	recA, recB := newRecSink(), newRecSink()
	dA := newDispatcher(t, a, recA, 20*time.Millisecond)
	dB := newDispatcher(t, b, recB, time.Hour) // persists its cursors only when a partition stops
	run(t, dA)
	run(t, dB)
	require.Eventually(t, func() bool { return len(running(dA)) == 2 && slices.Equal(running(dB), partsB) },
		5*time.Second, 10*time.Millisecond, "each runs its two partitions")

	head := ingest(t, a, 1, 8)
	require.Equal(t, uint64(16), head)
	require.Eventually(t, func() bool {
		ta, _ := recA.count()
		tb, _ := recB.count()
		return ta+tb == 16
	}, 10*time.Second, 10*time.Millisecond, "every event delivered once")
	deliveredB, _ := recB.count()
	require.Positive(t, deliveredB)
	for _, p := range partsB {
		require.Zero(t, cursors(t, b)[p], "b's cursor of partition %d is not stored yet", p)
	}

	stopB() // b leaves: a is given its partitions
	require.Eventually(t, func() bool { return len(running(dB)) == 0 }, 10*time.Second, 10*time.Millisecond,
		"b stops the dispatchers of the partitions it lost")
	require.Eventually(t, func() bool { return dB.State().Delivered == uint64(deliveredB) }, 10*time.Second, 10*time.Millisecond,
		"b's state keeps what its stopped partitions delivered, once they drained")
	last := lastOffsets(t, b)
	got := cursors(t, b)
	for _, p := range partsB {
		assert.Equal(t, last[p], got[p], "b stored its cursor of partition %d when it stopped", p)
	}
	st := dB.State()
	assert.True(t, st.Running)
	assert.Zero(t, st.InFlight)

	require.Eventually(t, func() bool { _, owned := a.Ownership(); return len(owned) == testParts },
		15*time.Second, time.Millisecond, "a is given b's partitions")
	gained := time.Now()
	require.Eventually(t, func() bool { return len(running(dA)) == testParts }, 10*time.Second, time.Millisecond,
		"a starts b's partitions")
	waited := time.Since(gained)

	require.Equal(t, uint64(32), ingest(t, a, 9, 8))
	require.Eventually(t, func() bool { ta, _ := recA.count(); return ta == 32-deliveredB }, 10*time.Second, 10*time.Millisecond,
		"a delivers the new events of every partition")
	time.Sleep(200 * time.Millisecond)
	ta, offsetsA := recA.count()
	assert.Equal(t, 32-deliveredB, ta, "a delivered nothing b had delivered")
	assert.Equal(t, ta, offsetsA, "nothing twice")
	assert.Equal(t, uint64(ta), dA.State().Delivered, "a's state sums its partitions")
	t.Logf("a started b's partitions %s after it was given them", waited.Round(time.Millisecond))
}

// TestDispatcher_RewindGuard: a rewind made elsewhere (by a store handle
// that does not deliver, as the CLI's) is not undone by the cursor a
// running partition flushes next: the write is dropped and every running
// partition rereads its cursor, so everything is delivered again. The
// store's rewind notice is not passed on here: the guard alone must do.
func TestDispatcher_RewindGuard(t *testing.T) {
	url := jetStream(t)
	a := leader(t, url, "a")
	rec := newRecSink()
	d := newDispatcher(t, a, rec, 20*time.Millisecond)
	run(t, d)
	require.Eventually(t, func() bool { return len(running(d)) == testParts }, 5*time.Second, 10*time.Millisecond)
	ingest(t, a, 1, 8)
	require.Eventually(t, func() bool { return slices.Equal(cursors(t, a), lastOffsets(t, a)) }, 10*time.Second, 10*time.Millisecond,
		"every partition delivered and stored its cursor")

	cli := open(t, url, "cli")
	require.NoError(t, cli.Rewind("hook", 1))
	require.Eventually(t, func() bool { return slices.Equal(cursors(t, a), make([]uint64, testParts)) }, 5*time.Second, 10*time.Millisecond,
		"a sees the rewind")
	ingest(t, a, 9, 8) // the partitions deliver these and flush their cursors
	require.Eventually(t, func() bool {
		for off := uint64(1); off <= 16; off++ {
			if rec.times(off) < 2 {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond, "every event before the rewind is delivered again")
	require.Eventually(t, func() bool { return slices.Equal(cursors(t, a), lastOffsets(t, a)) }, 10*time.Second, 10*time.Millisecond,
		"the cursors reach the head again")
}

// TestDispatcher_FollowResume: paused partitions stay paused while the
// stored state says paused, and resume resumeFollowDelay after they
// paused once it no longer does (resumed on another replica).
func TestDispatcher_FollowResume(t *testing.T) {
	a := leader(t, jetStream(t), "a")
	rec := newRecSink()
	rec.paused.Store(true)
	d := newDispatcher(t, a, rec, 20*time.Millisecond)
	ctx := context.Background()
	d.sync(ctx, []int{0, 1, 2, 3}) // no Run: followResume is called here, with made-up times
	t.Cleanup(func() { d.sync(ctx, nil) })
	ingest(t, a, 1, 4)
	require.Eventually(t, func() bool { return allPaused(t, d, a) }, 10*time.Second, 10*time.Millisecond,
		"every partition with events pauses")
	require.NoError(t, a.SetSinkState("hook", store.SinkState{Paused: true, PauseReason: "410 gone"}))

	refused := rec.refused.Load()
	t0 := time.Now()
	d.followResume(t0)
	d.followResume(t0.Add(2 * resumeFollowDelay))
	time.Sleep(100 * time.Millisecond)
	require.True(t, d.State().Paused, "the stored state says paused")
	require.Equal(t, refused, rec.refused.Load(), "no partition resumed: none tried again")

	rec.paused.Store(false)
	require.NoError(t, a.SetSinkState("hook", store.SinkState{})) // resumed on another replica
	d.followResume(t0.Add(resumeFollowDelay - time.Millisecond))
	time.Sleep(100 * time.Millisecond)
	require.True(t, d.State().Paused, "not before resumeFollowDelay")
	d.followResume(t0.Add(resumeFollowDelay))
	require.Eventually(t, func() bool { _, n := rec.count(); return n == 8 && !d.State().Paused }, 10*time.Second, 10*time.Millisecond,
		"the partitions follow the resume and deliver")
	d.mu.Lock()
	defer d.mu.Unlock()
	assert.True(t, d.pausedSince.IsZero())
}

// allPaused reports whether every running partition that has events in
// the store is paused: only then has each made the attempt that paused
// it (the sink's State is paused as soon as one partition is).
func allPaused(t *testing.T, d *Dispatcher, st *jsstore.Store) bool {
	t.Helper()
	d.mu.Lock()
	runs := maps.Clone(d.runs)
	d.mu.Unlock()
	for p, run := range runs {
		evs, err := st.Partition(p).Read(context.Background(), 1, 1)
		require.NoError(t, err)
		if len(evs) > 0 && !run.d.State().Paused {
			return false
		}
	}
	return true
}

// TestDispatcher_NotePause: a partition started under a stored pause
// starts paused with its reason and counts as saved; NotePause reports a
// pause only when it is new.
func TestDispatcher_NotePause(t *testing.T) {
	a := leader(t, jetStream(t), "a")
	require.NoError(t, a.SetSinkState("hook", store.SinkState{Paused: true, PauseReason: "410 gone"}))
	d := newDispatcher(t, a, newRecSink(), 20*time.Millisecond)
	assert.False(t, d.PauseSaved())
	ctx := context.Background()
	d.sync(ctx, []int{1})
	t.Cleanup(func() { d.sync(ctx, nil) })
	st := d.State()
	assert.True(t, st.Paused)
	assert.Equal(t, "410 gone", st.PauseReason)
	assert.True(t, d.PauseSaved(), "a stored pause is not written again")
	assert.False(t, d.NotePause(true))
	assert.False(t, d.NotePause(false))
	assert.False(t, d.PauseSaved())
	assert.True(t, d.NotePause(true), "a new pause")
	assert.False(t, d.NotePause(true))
	assert.True(t, d.PauseSaved())
}

// TestDispatcher_Reset: Reset stops the partitions, runs fn (the store's
// rewind) and resumes every partition from the rewound cursors, clearing
// a pause; with no partition running it only runs fn.
func TestDispatcher_Reset(t *testing.T) {
	a := leader(t, jetStream(t), "a")
	rec := newRecSink()
	d := newDispatcher(t, a, rec, 20*time.Millisecond)
	ran := false
	require.NoError(t, d.Reset(context.Background(), func() error { ran = true; return nil }), "nothing running")
	require.True(t, ran)
	run(t, d)
	require.Eventually(t, func() bool { return len(running(d)) == testParts }, 5*time.Second, 10*time.Millisecond)
	ingest(t, a, 1, 8)
	require.Eventually(t, func() bool { _, n := rec.count(); return n == 16 }, 10*time.Second, 10*time.Millisecond)
	rec.paused.Store(true)
	ingest(t, a, 9, 1)
	require.Eventually(t, func() bool { return d.State().Paused }, 10*time.Second, 10*time.Millisecond)
	rec.paused.Store(false)
	require.NoError(t, d.Reset(context.Background(), func() error { return a.Rewind("hook", 1) }))
	require.Eventually(t, func() bool {
		for off := uint64(1); off <= 16; off++ {
			if rec.times(off) < 2 {
				return false
			}
		}
		return rec.times(17) == 1 && rec.times(18) == 1
	}, 10*time.Second, 10*time.Millisecond, "everything delivered again from the rewound cursors")
	st := d.State()
	assert.False(t, st.Paused, "Reset cleared the pause")
	assert.Equal(t, uint64(34), st.Delivered)
}

// TestDispatcher_RebalanceReleasesNotify: every partition dispatcher
// subscribes to the store's Notify; partitions started and stopped many
// times (here the whole delivery, each start claiming all four) leave no
// subscription behind, so the store's count stays bounded.
func TestDispatcher_RebalanceReleasesNotify(t *testing.T) {
	a := leader(t, jetStream(t), "a")
	base := a.Subscribers()
	const cycles = 10
	var held []int // what each cycle left behind
	left := 0
	for i := range cycles {
		d := newDispatcher(t, a, newRecSink(), 20*time.Millisecond)
		stop := run(t, d)
		require.Eventually(t, func() bool { return len(running(d)) == testParts }, 10*time.Second, time.Millisecond,
			"cycle %d: every partition starts", i)
		assert.Eventually(t, func() bool { return a.Subscribers()-left == base+testParts }, time.Second, time.Millisecond,
			"cycle %d: one subscription per running partition", i)
		stop()
		assert.Eventually(t, func() bool { return a.Subscribers() == base }, time.Second, time.Millisecond,
			"cycle %d: stopped partitions hold no subscription", i)
		left = a.Subscribers() - base
		held = append(held, left)
	}
	require.Equal(t, make([]int, cycles), held, "subscriptions left after each cycle")
}

// TestDispatcher_ReadAheadShared: the sink's read-ahead is shared out over
// the partitions, as its deliveries under way are: with every delivery
// held, the partitions together read about ReadAhead events, not
// ReadAhead each (12 times as much memory with the default partitions);
// each still reads at least a full read of 256.
func TestDispatcher_ReadAheadShared(t *testing.T) {
	url := jetStream(t)
	st := leader(t, url, "a")
	head := ingest(t, st, 1, 2000) // 4,000 events over the 4 partitions
	require.Equal(t, uint64(4000), head)

	held := &heldSink{release: make(chan struct{})}
	var read atomic.Int64 // events read by every partition
	d := New(Config{
		Dispatcher: sink.DispatcherConfig{Sink: held, MaxInFlight: 8, ReadAhead: 2000, Logger: zerolog.New(zerolog.NewTestWriter(t))},
		Assignment: st,
		Outbox:     func(p int) sink.Outbox { return &countingOutbox{Outbox: st.Partition(p), read: &read} },
		Changes:    st.Changes(),
	})
	run(t, d)
	t.Cleanup(func() { close(held.release) }) // before run's stop: Run drains
	require.Eventually(t, func() bool { return held.started.Load() == 8 }, 10*time.Second, 10*time.Millisecond,
		"two deliveries under way per partition: MaxInFlight 8 shared out")
	time.Sleep(200 * time.Millisecond) // room to read more, were it allowed
	require.LessOrEqual(t, read.Load(), int64(2000), "each partition reads ahead its share of 2,000 (at least one read of 256)")
	require.Positive(t, read.Load())
}

// heldSink holds every delivery until release is closed, counting those
// started.
type heldSink struct {
	started atomic.Int64
	release chan struct{}
}

func (s *heldSink) Name() string { return "hook" }

func (s *heldSink) Deliver(ctx context.Context, _ *diff.Event) error {
	s.started.Add(1)
	select {
	case <-s.release:
	case <-ctx.Done():
	}
	return ctx.Err()
}

func (s *heldSink) Close(context.Context) error { return nil }

// countingOutbox counts the events its Reads return into read.
type countingOutbox struct {
	sink.Outbox
	read *atomic.Int64
}

func (o *countingOutbox) Read(ctx context.Context, from uint64, limit int) ([]diff.Event, error) {
	evs, err := o.Outbox.Read(ctx, from, limit)
	o.read.Add(int64(len(evs)))
	return evs, err
}

// TestDispatcher_LiveCursors: between cursor flushes the store's cursor
// lags what the partitions delivered; with the dispatchers' live cursors
// (PartitionStates, as a sink's status asks) it is the sink's true
// cursor; a partition with events pending has its next right after its
// cursor; stored cursors that are ahead still count.
func TestDispatcher_LiveCursors(t *testing.T) {
	a := leader(t, jetStream(t), "a")
	rec := newRecSink()
	d := newDispatcher(t, a, rec, time.Hour) // persists its cursors only when a partition stops
	run(t, d)
	require.Eventually(t, func() bool { return len(running(d)) == testParts }, 5*time.Second, 10*time.Millisecond)
	head := ingest(t, a, 1, 8)
	require.Eventually(t, func() bool { n, _ := rec.count(); return n == int(head) }, 10*time.Second, 10*time.Millisecond)

	stored, err := a.Cursor("hook")
	require.NoError(t, err)
	assert.Zero(t, stored, "nothing flushed yet")
	states := d.PartitionStates()
	assert.Len(t, states, testParts)
	live := map[int]jsstore.LiveCursor{}
	for p, st := range states {
		assert.Zero(t, st.Pending)
		live[p] = jsstore.LiveCursor{Cursor: st.Cursor}
	}
	c, err := a.CursorWith("hook", live)
	require.NoError(t, err)
	assert.Equal(t, head, c, "every event delivered")

	// A partition whose dispatcher holds events it has not finished: the
	// lowest is right after its cursor, whatever the cache holds.
	c, err = a.CursorWith("hook", map[int]jsstore.LiveCursor{0: {Cursor: head}, 1: {Cursor: 2, Pending: true}, 2: {Cursor: head}, 3: {Cursor: head}})
	require.NoError(t, err)
	assert.Equal(t, uint64(2), c)

	c, err = a.CursorWith("hook", map[int]jsstore.LiveCursor{0: {Cursor: head}})
	require.NoError(t, err)
	assert.Less(t, c, head, "the other partitions' stored cursors hold it back")
	assert.Equal(t, c, lowestNextBelow(t, a, 0, head), "below the lowest event above them")
}

// lowestNextBelow returns one below the lowest offset of any partition
// but p: the sink's cursor when p alone is done with the first head
// events and no other partition delivered any.
func lowestNextBelow(t *testing.T, st *jsstore.Store, p int, head uint64) uint64 {
	t.Helper()
	low := head + 1
	for q := range testParts {
		if q == p {
			continue
		}
		evs, err := st.Partition(q).Read(context.Background(), 1, 1)
		require.NoError(t, err)
		if len(evs) > 0 {
			low = min(low, evs[0].Offset)
		}
	}
	return low - 1
}
