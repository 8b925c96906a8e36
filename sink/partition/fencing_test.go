package partition

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/store/jsstore"
)

// cursorOf returns st's record of the hook sink in partition p.
func cursorOf(t *testing.T, st Assignment, p int) (offset uint64, owner string, gen uint64) {
	t.Helper()
	offset, _, owner, gen, err := st.CursorOf("hook", p)
	require.NoError(t, err)
	return offset, owner, gen
}

// TestFencing_StaleOwner: a partition held by a live replica cannot be
// claimed; once released it can, at the next generation, from the cursor
// the last owner left; the last owner's cursor writes are refused after
// that, and its outbox, fenced, stops its dispatcher and reads nothing.
func TestFencing_StaleOwner(t *testing.T) {
	url := jetStream(t)
	a := leader(t, url, "a")
	b, _ := replica(t, url, "b")
	require.Eventually(t, func() bool { return len(a.Role().Members) == 2 }, 10*time.Second, 10*time.Millisecond)

	genA, ok, err := a.Claim("hook", 0)
	require.NoError(t, err)
	require.True(t, ok)
	ok, _, _, err = a.SetCursorAs("hook", 0, genA, 5, []uint64{7})
	require.NoError(t, err)
	require.True(t, ok)
	_, ok, err = b.Claim("hook", 0)
	require.NoError(t, err)
	require.False(t, ok, "a is live and holds partition 0")

	require.NoError(t, a.Release("hook", 0, genA))
	var genB uint64
	require.Eventually(t, func() bool { // once b's copy of the record shows the release
		genB, ok, err = b.Claim("hook", 0)
		return err == nil && ok
	}, 5*time.Second, 10*time.Millisecond, "released: b takes it")
	assert.Greater(t, genB, genA)
	off, done, owner, _, err := b.CursorOf("hook", 0)
	require.NoError(t, err)
	assert.Equal(t, uint64(5), off, "b starts from a's last cursor")
	assert.Equal(t, []uint64{7}, done, "and skips what a did past it")
	assert.Equal(t, "b", owner)
	outB := newFencedOutbox(b.Partition(0), b, "b", 0, genB, func() {}, func() {})
	_, err = outB.Cursor("hook")
	require.NoError(t, err)
	assert.False(t, outB.filter(nil)(&diff.Event{Offset: 7}), "b's dispatcher skips what a did past its cursor")
	assert.True(t, outB.filter(nil)(&diff.Event{Offset: 6}))

	require.Eventually(t, func() bool { _, owner, _ := cursorOf(t, a, 0); return owner == "b" }, 5*time.Second, time.Millisecond,
		"a's copy of the record shows b's claim")
	ok, owner, now, err := a.SetCursorAs("hook", 0, genA, 9, nil)
	require.NoError(t, err)
	assert.False(t, ok, "a stale owner's write is refused")
	assert.Equal(t, "b", owner)
	assert.Equal(t, genB, now)
	off, _, _ = cursorOf(t, b, 0)
	assert.Equal(t, uint64(5), off, "the cursor did not move")

	// The same through a's outbox for a dispatcher that held it at genA.
	fenced, rewound := 0, 0
	out := newFencedOutbox(a.Partition(0), a, "a", 0, genA, func() { rewound++ }, func() { fenced++ })
	err = out.SetCursor("hook", 11)
	require.ErrorIs(t, err, errFenced)
	assert.Equal(t, 1, fenced, "the dispatcher is stopped")
	assert.Zero(t, rewound)
	_, err = out.Read(context.Background(), 0, 10)
	assert.ErrorIs(t, err, errFenced, "and reads nothing more")
	assert.ErrorIs(t, out.DeadLetter("hook", 1, 3, "boom"), errFenced, "nor records a dead letter")
	require.ErrorIs(t, out.SetCursor("hook", 12), errFenced)
	off, _, _ = cursorOf(t, b, 0)
	assert.Equal(t, uint64(5), off)
	require.NoError(t, a.Release("hook", 0, genA), "a's release of what it lost is a no-op")
	_, owner, _ = cursorOf(t, b, 0)
	assert.Equal(t, "b", owner)
}

// TestFencing_Rewind: an operator's rewind (another store handle, as the
// CLI's) of a partition a dispatcher holds is not fencing: the owner's
// next write is dropped, the dispatcher told to reread once, the rewind
// stands, and after the reread the owner writes again.
func TestFencing_Rewind(t *testing.T) {
	url := jetStream(t)
	a := leader(t, url, "a")
	ingest(t, a, 1, 8)
	gen, ok, err := a.Claim("hook", 0)
	require.NoError(t, err)
	require.True(t, ok)
	fenced, rewound := 0, 0
	out := newFencedOutbox(a.Partition(0), a, "a", 0, gen, func() { rewound++ }, func() { fenced++ })
	c, err := out.Cursor("hook")
	require.NoError(t, err)
	require.Zero(t, c)
	require.NoError(t, out.SetCursor("hook", 7))
	out.Delivered("hook", &diff.Event{Offset: 12}, 0)

	cli := open(t, url, "cli")
	require.NoError(t, cli.Rewind("hook", 1))
	require.Eventually(t, func() bool { c, _, _ := cursorOf(t, a, 0); return c == 0 }, 5*time.Second, time.Millisecond, "a sees the rewind")
	require.NoError(t, out.SetCursor("hook", 9), "dropped, not an error")
	require.NoError(t, out.SetCursor("hook", 10))
	assert.Equal(t, 1, rewound, "the dispatcher is told once")
	assert.Zero(t, fenced, "a rewind is not fencing")
	c, owner, now := cursorOf(t, a, 0)
	assert.Equal(t, uint64(0), c, "the rewind stands")
	assert.Equal(t, "a", owner, "a still holds the partition")
	assert.Greater(t, now, gen)

	c, err = out.Cursor("hook") // the dispatcher's reread
	require.NoError(t, err)
	require.Zero(t, c)
	assert.True(t, out.filter(nil)(&diff.Event{Offset: 12}), "the rewind dropped what was done past the old cursor")
	require.NoError(t, out.SetCursor("hook", 3))
	c, _, _ = cursorOf(t, a, 0)
	assert.Equal(t, uint64(3), c, "written once reread")
	got, _ := out.state()
	assert.Equal(t, now, got, "at the rewind's generation")
}

// TestFencing_KilledOwner: the partition of an owner killed without
// releasing it (its connection dropped, nothing stopped) is taken once its
// membership lapsed, from the last cursor it wrote; not before.
func TestFencing_KilledOwner(t *testing.T) {
	url := jetStream(t)
	a := leader(t, url, "a")
	b, ncB := openConn(t, url, "b")
	background(t, "b: store Run", b.Run)
	require.Eventually(t, func() bool { return len(a.Role().Members) == 2 }, 10*time.Second, 10*time.Millisecond)
	gen, ok, err := b.Claim("hook", 1)
	require.NoError(t, err)
	require.True(t, ok)
	ok, _, _, err = b.SetCursorAs("hook", 1, gen, 4, nil)
	require.NoError(t, err)
	require.True(t, ok)

	ncB.Close() // kill -9: b's membership is no longer renewed
	killed := time.Now()
	_, ok, err = a.Claim("hook", 1)
	require.NoError(t, err)
	require.False(t, ok, "b's membership has not lapsed yet")
	var genA uint64
	require.Eventually(t, func() bool {
		genA, ok, err = a.Claim("hook", 1)
		return err == nil && ok
	}, 10*time.Second, 50*time.Millisecond, "a takes b's partition once b's membership lapsed")
	took := time.Since(killed)
	assert.Greater(t, took, time.Second, "not before the membership's TTL (2s) ran out")
	assert.Greater(t, genA, gen)
	c, owner, _ := cursorOf(t, a, 1)
	assert.Equal(t, uint64(4), c, "from b's last cursor")
	assert.Equal(t, "a", owner)
	t.Logf("taken %s after the kill", took.Round(time.Millisecond))
}

// failRelease is a store whose first Release calls fail.
type failRelease struct {
	*jsstore.Store
	fails int
}

func (f *failRelease) Release(sink string, p int, gen uint64) error {
	if f.fails > 0 {
		f.fails--
		return errors.New("no quorum")
	}
	return f.Store.Release(sink, p, gen)
}

// TestDispatcher_ReleaseRetried: a partition stopped here whose release
// failed stays held (no other replica could claim it) until a later sync
// releases it.
func TestDispatcher_ReleaseRetried(t *testing.T) {
	a := leader(t, jetStream(t), "a")
	st := &failRelease{Store: a, fails: 1}
	d := New(Config{Dispatcher: sink.DispatcherConfig{Sink: newRecSink(), CursorFlush: 20 * time.Millisecond},
		Assignment: st, Outbox: func(p int) sink.Outbox { return a.Partition(p) }, Changes: make(chan struct{})})
	ctx := context.Background()
	d.sync(ctx, []int{2})
	_, owner, _ := cursorOf(t, a, 2)
	require.Equal(t, "a", owner, "claimed")
	d.sync(ctx, nil)
	_, owner, _ = cursorOf(t, a, 2)
	require.Equal(t, "a", owner, "the release failed: still held")
	d.sync(ctx, nil)
	_, owner, _ = cursorOf(t, a, 2)
	assert.Empty(t, owner, "released at the next sync")
	assert.Empty(t, d.unreleased)
}
