package storetest

// The registry of sinks: adoption on the first sync, the start modes of
// sinks new afterwards, removal and re-adding, ForgetSink, and pruning
// that ignores a removed sink's dead letters.

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/store"
)

// t0 is the time of the first sync in the registry's cases.
var t0 = time.Date(2026, 4, 8, 9, 0, 0, 0, time.UTC)

func syncSinks(t *testing.T, s store.Store, now time.Time, specs ...store.SinkSpec) []store.RegisteredSink {
	t.Helper()
	got, err := s.SyncSinks(specs, now)
	require.NoError(t, err)
	all, err := s.Sinks()
	require.NoError(t, err)
	require.Equal(t, got, all, "SyncSinks returns what Sinks lists")
	return got
}

func fromNow(name string) store.SinkSpec { return store.SinkSpec{Name: name, Start: store.StartNow} }

// requireCursor checks the sink's cursor.
func requireCursor(t *testing.T, s store.Store, sink string, want uint64, msg string) {
	t.Helper()
	c, err := s.Cursor(sink)
	require.NoError(t, err)
	require.Equal(t, want, c, msg)
}

// hookAndBus opens a store whose first sync registered hook and bus,
// with events at offsets 1-4 and hook's dead letter at 2.
func hookAndBus(t *testing.T, newStore NewFunc) store.Store {
	t.Helper()
	s, _ := newStore(t)
	syncSinks(t, s, t0, fromNow("hook"), fromNow("bus"))
	ingest(t, s, true, Task(1, 10, 11, 12, 13))
	require.NoError(t, s.DeadLetter("hook", 2, 3, "HTTP 400"))
	return s
}

// testRegistryFresh: a new store's first sync adopts every sink at cursor
// 0 (Start 1, Head+1 anyway); a second sync changes nothing; the registry
// survives a restart.
func testRegistryFresh(t *testing.T, newStore NewFunc) {
	s, reopen := newStore(t)
	none, err := s.Sinks()
	require.NoError(t, err)
	require.Empty(t, none, "no entry before the first sync")
	_, err = s.SyncSinks([]store.SinkSpec{{Name: ""}}, t0)
	require.Error(t, err, "an empty sink name")
	_, err = s.SyncSinks([]store.SinkSpec{{Name: "hook", Start: store.StartMode(9)}}, t0)
	require.Error(t, err, "an unknown start mode")

	want := []store.RegisteredSink{
		{Name: "bus", Start: 1, Added: t0, Adopted: true},
		{Name: "hook", Start: 1, Added: t0, Adopted: true},
	}
	got := syncSinks(t, s, t0, fromNow("hook"), store.SinkSpec{Name: "bus", Start: store.StartEarliest}, fromNow("hook"))
	require.Equal(t, want, got, "sorted by name, a sink listed twice once")
	requireCursor(t, s, "hook", 0, "adopted at cursor 0")
	got = syncSinks(t, s, t0.Add(time.Hour), fromNow("bus"), fromNow("hook"))
	require.Equal(t, want, got, "a second sync with the same sinks changes nothing")

	require.NoError(t, s.Close())
	s = reopen()
	defer s.Close()
	all, err := s.Sinks()
	require.NoError(t, err)
	require.Equal(t, want, all, "the registry survives a restart")
}

// testRegistryAdoption: the first sync on a store with events registers
// each sink at its cursor, a sink that never saved one at 1, and leaves
// the cursors alone.
func testRegistryAdoption(t *testing.T, newStore NewFunc) {
	s, _ := newStore(t)
	defer s.Close()
	ingest(t, s, true, Task(1, 10, 11, 12, 13, 14, 15)) // offsets 1-6
	require.NoError(t, s.SetCursor("hook", 4))
	got := syncSinks(t, s, t0, fromNow("hook"), fromNow("bus"))
	require.Equal(t, []store.RegisteredSink{
		{Name: "bus", Start: 1, Added: t0, Adopted: true},
		{Name: "hook", Start: 5, Added: t0, Adopted: true},
	}, got)
	requireCursor(t, s, "hook", 4, "an adopted sink keeps its cursor")
	requireCursor(t, s, "bus", 0, "a sink that never saved a cursor keeps its backlog")
}

// testRegistryStartModes: after the first sync, a sink new to the store
// starts per its mode, events appended between the syncs; a sink with a
// cursor already keeps it.
func testRegistryStartModes(t *testing.T, newStore NewFunc) {
	s, _ := newStore(t)
	defer s.Close()
	ingest(t, s, true, Task(1, 10, 11, 12)) // offsets 1-3
	require.Empty(t, syncSinks(t, s, t0), "the first sync, no sink configured")
	ingest(t, s, true, Task(2, 20, 21, 22)) // offsets 4-6
	require.NoError(t, s.SetCursor("kept", 2))
	t1 := t0.Add(time.Minute)
	got := syncSinks(t, s, t1,
		fromNow("now"),
		store.SinkSpec{Name: "earliest", Start: store.StartEarliest},
		store.SinkSpec{Name: "from4", Start: store.StartOffset, Offset: 4},
		store.SinkSpec{Name: "from0", Start: store.StartOffset},
		store.SinkSpec{Name: "from99", Start: store.StartOffset, Offset: 99},
		fromNow("kept"),
	)
	require.Equal(t, []store.RegisteredSink{
		{Name: "earliest", Start: 1, Added: t1},
		{Name: "from0", Start: 1, Added: t1},
		{Name: "from4", Start: 4, Added: t1},
		{Name: "from99", Start: 7, Added: t1},
		{Name: "kept", Start: 7, Added: t1},
		{Name: "now", Start: 7, Added: t1},
	}, got)
	for sink, want := range map[string]uint64{"now": 6, "earliest": 0, "from4": 3, "from0": 0, "from99": 6, "kept": 2} {
		requireCursor(t, s, sink, want, sink)
	}
}

// testRegistryRemoval: a sink no config lists is marked removed once,
// keeps its cursor, and resumes from it when configured again.
func testRegistryRemoval(t *testing.T, newStore NewFunc) {
	s := hookAndBus(t, newStore)
	defer s.Close()
	require.NoError(t, s.SetCursor("hook", 3))
	t1, t2, t3 := t0.Add(time.Minute), t0.Add(2*time.Minute), t0.Add(3*time.Minute)
	got := syncSinks(t, s, t1, fromNow("bus"))
	require.Equal(t, []store.RegisteredSink{
		{Name: "bus", Start: 1, Added: t0, Adopted: true},
		{Name: "hook", Start: 1, Added: t0, Removed: t1, Adopted: true},
	}, got)
	got = syncSinks(t, s, t2, fromNow("bus"))
	require.Equal(t, t1, got[1].Removed, "removed once, at the first sync without it")
	ingest(t, s, true, Task(1, 10, 11, 12, 13, 14, 15)) // offsets 5-6
	got = syncSinks(t, s, t3, fromNow("bus"), fromNow("hook"))
	require.Equal(t, store.RegisteredSink{Name: "hook", Start: 1, Added: t0, Adopted: true}, got[1], "listed again, as registered")
	requireCursor(t, s, "hook", 3, "it resumes from its kept cursor")
}

// testForgetSink: ForgetSink deletes the entry, cursor, dead letters and
// state; a sink of that name configured later is new to the store.
func testForgetSink(t *testing.T, newStore NewFunc) {
	s := hookAndBus(t, newStore)
	defer s.Close()
	require.NoError(t, s.SetCursor("hook", 3))
	require.NoError(t, s.SetCursor("bus", 4))
	require.NoError(t, s.SetSinkState("hook", store.SinkState{Paused: true, PauseReason: "HTTP 410"}))
	syncSinks(t, s, t0.Add(time.Minute), fromNow("bus"))

	require.NoError(t, s.ForgetSink("hook"))
	require.NoError(t, s.ForgetSink("hook"), "forgetting again")
	require.NoError(t, s.ForgetSink("never"), "a sink the store does not know")
	require.Error(t, s.ForgetSink(""), "an empty sink name")
	all, err := s.Sinks()
	require.NoError(t, err)
	require.Equal(t, []store.RegisteredSink{{Name: "bus", Start: 1, Added: t0, Adopted: true}}, all)
	requireCursor(t, s, "hook", 0, "the cursor is gone")
	dls, err := s.DeadLetters("hook")
	require.NoError(t, err)
	require.Empty(t, dls)
	st, err := s.SinkState("hook")
	require.NoError(t, err)
	require.Equal(t, store.SinkState{}, st)
	requireCursor(t, s, "bus", 4, "other sinks keep theirs")

	t2 := t0.Add(2 * time.Minute)
	got := syncSinks(t, s, t2, fromNow("bus"), fromNow("hook"))
	require.Equal(t, store.RegisteredSink{Name: "hook", Start: 5, Added: t2}, got[1], "new to the store: from now")
	requireCursor(t, s, "hook", 4, "")
}

// testPruneRemovedDeadLetters: only the sinks the relay passes (the
// registry's not removed) hold events back; a removed sink's dead
// letters and cursor do not.
func testPruneRemovedDeadLetters(t *testing.T, newStore NewFunc) {
	s := hookAndBus(t, newStore)
	defer s.Close()
	require.NoError(t, s.SetCursor("hook", 1))
	require.NoError(t, s.SetCursor("bus", 4))
	var active []string
	for _, e := range syncSinks(t, s, t0.Add(time.Minute), fromNow("bus")) {
		if e.Removed.IsZero() {
			active = append(active, e.Name)
		}
	}
	require.Equal(t, []string{"bus"}, active)
	res, err := s.Prune(context.Background(), store.PruneOptions{Retention: time.Hour, Sinks: active, Now: time.Now().Add(2 * time.Hour)})
	require.NoError(t, err)
	require.Equal(t, 4, res.Events, "the removed sink's dead letter and cursor keep nothing")
	first, err := s.First()
	require.NoError(t, err)
	require.Zero(t, first)
	require.Empty(t, readAll(t, s))
}
