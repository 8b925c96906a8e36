// Package storetest is the conformance suite every store.Store backend
// passes: offsets dense and stable, one event per log under repeats and
// concurrency, the snapshot boundary, the changes that leave no log
// (edits and deletions), sink cursors, dead letters, pauses, the
// registry of sinks, rule states, small values, pruning, durability
// across a reopen and ErrClosed after Close. A backend's test calls Run
// with a function that opens a fresh, empty store.
package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/diff/rules"
	"github.com/incs-relay/incs-relay/store"
)

// NewFunc opens a fresh, empty store for one test and returns it with a
// function that opens the same store again after it was closed (a
// restart). The test closes what it opens; NewFunc's cleanup must tolerate
// a store closed twice.
type NewFunc func(t *testing.T) (s store.Store, reopen func() store.Store)

// Run runs the conformance suite, each case on a store from newStore.
func Run(t *testing.T, newStore NewFunc) {
	cases := []struct {
		name string
		fn   func(*testing.T, NewFunc)
	}{
		{"DenseOffsets", testDenseOffsets},
		{"OneEventPerLog", testOneEventPerLog},
		{"ConcurrentIngest", testConcurrentIngest},
		{"Snapshot", testSnapshot},
		{"Boundary", testBoundary},
		{"Query", testQuery},
		{"Cursors", testCursors},
		{"DeadLettersAndRewind", testDeadLettersAndRewind},
		{"SinkState", testSinkState},
		{"Meta", testMeta},
		{"Rules", testRules},
		{"Notify", testNotify},
		{"NotifyRelease", testNotifyRelease},
		{"Prune", testPrune},
		{"OffsetSince", testOffsetSince},
		{"Reopen", testReopen},
		{"Edits", testEdits},
		{"EditsSnapshot", testEditsSnapshot},
		{"Delete", testDelete},
		{"RegistryFresh", testRegistryFresh},
		{"RegistryAdoption", testRegistryAdoption},
		{"RegistryStartModes", testRegistryStartModes},
		{"RegistryRemoval", testRegistryRemoval},
		{"ForgetSink", testForgetSink},
		{"PruneRemovedDeadLetters", testPruneRemovedDeadLetters},
		{"Closed", testClosed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, newStore) })
	}
}

var loc = time.FixedZone("CST", 8*3600)

// Task returns a task with logs of the given ids, created on 2026-04-08;
// log types cycle created, assigned, status changed, commented.
func Task(id int64, logIDs ...int64) diff.Task {
	t := diff.Task{
		ID: id, CreationID: 104, AuthID: 30058, Name: fmt.Sprintf("任务 %d", id),
		Type: 3, UserName: "Erin", AssigneeUsername: "incs_1", Status: 1,
		CreatedAt: "2026-04-08 17:22:01", UpdatedAt: "2026-04-08 17:28:54",
	}
	for i, lid := range logIDs {
		l := diff.Log{ID: lid, Type: i%4 + 1, CreatedAt: fmt.Sprintf("2026-04-08 17:%02d:%02d", 22+int(lid/60%30), lid%60)}
		switch l.Type {
		case diff.LogAssigned:
			l.AssigneeUsername = "incs_1"
		case diff.LogStatusChanged:
			l.Status = 1
		case diff.LogCommented:
			l.Comment = "已经跟进"
		}
		l.UpdatedAt = l.CreatedAt
		t.Logs = append(t.Logs, l)
	}
	return t
}

func ingest(t *testing.T, s store.Store, emit bool, tasks ...diff.Task) store.IngestResult {
	t.Helper()
	res, err := s.Ingest(context.Background(), tasks, loc, emit)
	require.NoError(t, err)
	return res
}

func readAll(t *testing.T, s store.Store) []diff.Event {
	t.Helper()
	evs, err := s.Read(context.Background(), 0, 1<<20)
	require.NoError(t, err)
	return evs
}

// requireDense checks that evs have offsets from..from+len-1, each body
// carrying its own id and offset.
func requireDense(t *testing.T, evs []diff.Event, from uint64) {
	t.Helper()
	ids := map[string]bool{}
	for i, ev := range evs {
		require.Equal(t, from+uint64(i), ev.Offset, "offsets are dense")
		var body struct {
			ID     string `json:"id"`
			Offset uint64 `json:"offset"`
		}
		require.NoError(t, json.Unmarshal(ev.Body, &body), "body of offset %d", ev.Offset)
		require.Equal(t, ev.ID, body.ID)
		require.Equal(t, ev.Offset, body.Offset, "the body carries the offset")
		require.False(t, ids[ev.ID], "event id %s stored twice", ev.ID)
		ids[ev.ID] = true
		require.False(t, ev.StoredAt.IsZero(), "StoredAt set")
	}
}

func testDenseOffsets(t *testing.T, newStore NewFunc) {
	s, _ := newStore(t)
	defer s.Close()
	head, err := s.Head()
	require.NoError(t, err)
	require.Zero(t, head)
	first, err := s.First()
	require.NoError(t, err)
	require.Zero(t, first)

	res := ingest(t, s, true, Task(1, 10, 11), Task(2, 20, 21, 22), Task(3, 30))
	require.Equal(t, 6, res.Events)
	require.Equal(t, uint64(1), res.FirstOffset)
	require.Equal(t, uint64(6), res.LastOffset)
	require.Equal(t, map[string]int{diff.TypeTaskCreated: 3, diff.TypeTaskAssigned: 2, diff.TypeTaskStatusChanged: 1}, res.Types,
		"the result counts what it appended by type")
	evs := readAll(t, s)
	require.Len(t, evs, 6)
	requireDense(t, evs, 1)
	// A task's events follow its log order.
	var task2 []string
	for _, ev := range evs {
		if ev.Data.TaskID == 2 {
			task2 = append(task2, ev.ID)
		}
	}
	require.Equal(t, []string{"log-20", "log-21", "log-22"}, task2)
	require.Equal(t, diff.TypeTaskCreated, evs[0].Type)
	require.Equal(t, diff.TypeTaskAssigned, evs[1].Type)

	head, err = s.Head()
	require.NoError(t, err)
	require.Equal(t, uint64(6), head)
	first, err = s.First()
	require.NoError(t, err)
	require.Equal(t, uint64(1), first)

	part, err := s.Read(context.Background(), 3, 2)
	require.NoError(t, err)
	require.Len(t, part, 2)
	require.Equal(t, evs[2].Offset, part[0].Offset)
	require.JSONEq(t, string(evs[2].Body), string(part[0].Body))
	one, err := s.Event(4)
	require.NoError(t, err)
	require.Equal(t, string(evs[3].Body), string(one.Body), "Event returns the stored body byte for byte")
	_, err = s.Event(99)
	require.ErrorIs(t, err, store.ErrNotFound)
	none, err := s.Read(context.Background(), 7, 10)
	require.NoError(t, err)
	require.Empty(t, none)

	st, err := s.Stats()
	require.NoError(t, err)
	require.Equal(t, uint64(6), st.Head)
	require.Equal(t, uint64(1), st.First)
	require.Equal(t, 6, st.Events)
	require.Equal(t, 3, st.Tasks)

}

func testOneEventPerLog(t *testing.T, newStore NewFunc) {
	s, _ := newStore(t)
	defer s.Close()
	ingest(t, s, true, Task(1, 10, 11))
	res := ingest(t, s, true, Task(1, 10, 11))
	require.Zero(t, res.Events, "a second read of the same logs")
	require.Equal(t, 1, res.Skipped)
	res = ingest(t, s, true, Task(1, 10, 11, 12), Task(1, 10, 11, 12), Task(2, 20))
	require.Equal(t, 2, res.Events, "a task repeated in one batch gets its new log once")
	require.Equal(t, uint64(3), res.FirstOffset)
	evs := readAll(t, s)
	requireDense(t, evs, 1)
	require.Equal(t, "log-12", evs[2].ID)
}

func testConcurrentIngest(t *testing.T, newStore NewFunc) {
	s, _ := newStore(t)
	defer s.Close()
	var tasks []diff.Task
	for i := range int64(20) {
		tasks = append(tasks, Task(100+i, 1000+10*i, 1001+10*i))
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			_, err := s.Ingest(context.Background(), tasks, loc, true)
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	evs := readAll(t, s)
	require.Len(t, evs, 40, "every log once, whatever the interleaving")
	requireDense(t, evs, 1)
}

func testSnapshot(t *testing.T, newStore NewFunc) {
	s, _ := newStore(t)
	defer s.Close()
	res := ingest(t, s, false, Task(1, 10, 11), Task(2, 20))
	require.Zero(t, res.Events)
	require.Equal(t, 2, res.Changed)
	require.Empty(t, readAll(t, s))
	res = ingest(t, s, true, Task(1, 10, 11, 12), Task(2, 20))
	require.Equal(t, 1, res.Events, "only the log after the snapshot")
	evs := readAll(t, s)
	require.Len(t, evs, 1)
	require.Equal(t, "log-12", evs[0].ID)
	require.Equal(t, uint64(1), evs[0].Offset)
}

func testBoundary(t *testing.T, newStore NewFunc) {
	s, _ := newStore(t)
	defer s.Close()
	// Log 10 is at 17:22:10 and log 70 at 17:23:10, Shanghai time.
	boundary := time.Date(2026, 4, 8, 17, 23, 0, 0, loc)
	res, err := s.IngestAfter(context.Background(), []diff.Task{Task(1, 10, 70)}, loc, boundary)
	require.NoError(t, err)
	require.Equal(t, 1, res.Events)
	evs := readAll(t, s)
	require.Len(t, evs, 1)
	require.Equal(t, "log-70", evs[0].ID)
	// The log before the boundary stays seen.
	res = ingest(t, s, true, Task(1, 10, 70))
	require.Zero(t, res.Events)
}

func testQuery(t *testing.T, newStore NewFunc) {
	s, _ := newStore(t)
	defer s.Close()
	ingest(t, s, true, Task(1, 10, 11, 12, 13), Task(2, 20, 21, 22, 23))
	ctx := context.Background()
	evs, err := s.Events(ctx, store.EventQuery{TaskID: 2})
	require.NoError(t, err)
	require.Len(t, evs, 4)
	for _, ev := range evs {
		require.Equal(t, int64(2), ev.Data.TaskID)
	}
	evs, err = s.Events(ctx, store.EventQuery{Type: diff.TypeTaskCommented})
	require.NoError(t, err)
	require.Len(t, evs, 2)
	evs, err = s.Events(ctx, store.EventQuery{Type: diff.TypeTaskCommented, From: 5, Limit: 1})
	require.NoError(t, err)
	require.Len(t, evs, 1)
	require.Equal(t, "log-23", evs[0].ID)
}

func testCursors(t *testing.T, newStore NewFunc) {
	s, _ := newStore(t)
	defer s.Close()
	c, err := s.Cursor("hook")
	require.NoError(t, err)
	require.Zero(t, c, "a sink never seen starts at 0")
	require.Error(t, s.SetCursor("hook", 1), "a cursor beyond Head")
	ingest(t, s, true, Task(1, 10, 11, 12, 13, 14, 15, 16))
	require.NoError(t, s.SetCursor("hook", 5))
	require.NoError(t, s.SetCursor("nats", 7))
	require.NoError(t, s.SetCursor("hook", 2), "a lower cursor is accepted")
	c, err = s.Cursor("hook")
	require.NoError(t, err)
	require.Equal(t, uint64(2), c)
	c, err = s.Cursor("nats")
	require.NoError(t, err)
	require.Equal(t, uint64(7), c)
	require.Error(t, s.SetCursor("", 1), "an empty sink name")
}

func testDeadLettersAndRewind(t *testing.T, newStore NewFunc) {
	s, _ := newStore(t)
	defer s.Close()
	ingest(t, s, true, Task(1, 10, 11, 12, 13))
	require.NoError(t, s.DeadLetter("hook", 2, 5, "HTTP 500"))
	require.NoError(t, s.DeadLetter("hook", 4, 3, "HTTP 400"))
	require.NoError(t, s.SetCursor("hook", 4))
	require.NoError(t, s.SetSinkState("hook", store.SinkState{Paused: true, PauseReason: "HTTP 410"}))
	dls, err := s.DeadLetters("hook")
	require.NoError(t, err)
	require.Len(t, dls, 2)
	require.Equal(t, uint64(2), dls[0].Offset)
	require.Equal(t, "log-11", dls[0].EventID)
	require.Equal(t, diff.TypeTaskAssigned, dls[0].Type)
	require.Equal(t, int64(1), dls[0].TaskID)
	require.Equal(t, 5, dls[0].Attempts)
	require.Equal(t, "HTTP 500", dls[0].Error)
	other, err := s.DeadLetters("nats")
	require.NoError(t, err)
	require.Empty(t, other)

	require.NoError(t, s.Rewind("hook", 3))
	c, err := s.Cursor("hook")
	require.NoError(t, err)
	require.Equal(t, uint64(2), c)
	dls, err = s.DeadLetters("hook")
	require.NoError(t, err)
	require.Len(t, dls, 1, "dead letters at or above from are cleared")
	require.Equal(t, uint64(2), dls[0].Offset)
	st, err := s.SinkState("hook")
	require.NoError(t, err)
	require.False(t, st.Paused, "a rewind clears the pause")

	require.NoError(t, s.Rewind("hook", 0))
	c, err = s.Cursor("hook")
	require.NoError(t, err)
	require.Zero(t, c, "from below First is clamped to First")
	require.NoError(t, s.Rewind("hook", 100))
	c, err = s.Cursor("hook")
	require.NoError(t, err)
	require.Equal(t, uint64(4), c, "from beyond Head+1 is clamped to Head+1")
}

func testSinkState(t *testing.T, newStore NewFunc) {
	s, _ := newStore(t)
	defer s.Close()
	st, err := s.SinkState("hook")
	require.NoError(t, err)
	require.Equal(t, store.SinkState{}, st)
	at := time.Date(2026, 4, 8, 9, 0, 0, 0, time.UTC)
	want := store.SinkState{Paused: true, PauseReason: "HTTP 410 Gone", LastError: "HTTP 410 Gone", LastErrorAt: at, LastDeliveryAt: at.Add(-time.Minute)}
	require.NoError(t, s.SetSinkState("hook", want))
	st, err = s.SinkState("hook")
	require.NoError(t, err)
	require.True(t, want.LastErrorAt.Equal(st.LastErrorAt))
	st.LastErrorAt, st.LastDeliveryAt = want.LastErrorAt, want.LastDeliveryAt
	require.Equal(t, want, st)
}

func testMeta(t *testing.T, newStore NewFunc) {
	s, _ := newStore(t)
	defer s.Close()
	_, err := s.Meta("poller.tiers")
	require.ErrorIs(t, err, store.ErrNotFound)
	require.NoError(t, s.SetMeta("poller.tiers", []byte(`{"a":1}`)))
	v, err := s.Meta("poller.tiers")
	require.NoError(t, err)
	require.Equal(t, `{"a":1}`, string(v))
	require.NoError(t, s.SetMeta("poller.tiers", nil), "nil deletes")
	_, err = s.Meta("poller.tiers")
	require.ErrorIs(t, err, store.ErrNotFound)

	ok, err := s.Initialized()
	require.NoError(t, err)
	require.False(t, ok)
	require.NoError(t, s.SetInitialized())
	require.NoError(t, s.SetInitialized(), "idempotent")
	ok, err = s.Initialized()
	require.NoError(t, err)
	require.True(t, ok)
}

func testRules(t *testing.T, newStore NewFunc) {
	s, _ := newStore(t)
	defer s.Close()
	ctx := context.Background()
	tk := Task(237, 531, 532)
	ingest(t, s, true, tk)
	rule := &rules.Rule{Name: "stalled", Event: "task.stalled", When: rules.When{Status: []int{tk.Status}}, Since: rules.SinceLastLog, After: time.Minute}
	require.NoError(t, rules.CheckSet([]*rules.Rule{rule}))
	e := rules.NewEngine([]*rules.Rule{rule}, loc)
	anchor, err := diff.ParseTime(tk.Logs[1].CreatedAt, loc)
	require.NoError(t, err)
	b := e.Evaluate([]diff.Task{tk}, nil, anchor.Add(2*time.Minute))
	var ws []store.RuleWrite
	for _, c := range b.Changes {
		ws = append(ws, store.RuleWrite{TaskID: c.TaskID, Record: c.Record, Task: c.Task, Events: c.Events})
	}
	require.Len(t, ws, 1)
	res, err := s.ApplyRules(ctx, ws)
	require.NoError(t, err)
	require.Equal(t, store.RuleResult{Events: 1, FirstOffset: 3, LastOffset: 3, Types: map[string]int{"task.stalled": 1}}, res, "derived offsets continue the outbox's")
	e.Commit(b)
	evs := readAll(t, s)
	requireDense(t, evs, 1)
	require.Equal(t, "task.stalled", evs[2].Type)

	var got []int64
	require.NoError(t, s.RuleStates(func(id int64, rec []byte) error {
		got = append(got, id)
		require.Equal(t, string(ws[0].Record), string(rec))
		return nil
	}))
	require.Equal(t, []int64{237}, got)
	_, err = s.ApplyRules(ctx, []store.RuleWrite{{TaskID: 237}})
	require.NoError(t, err)
	got = nil
	require.NoError(t, s.RuleStates(func(id int64, _ []byte) error { got = append(got, id); return nil }))
	require.Empty(t, got, "a nil record deletes the state")
}

func testNotify(t *testing.T, newStore NewFunc) {
	s, _ := newStore(t)
	defer s.Close()
	ctx := t.Context()
	a, b := s.Notify(ctx), s.Notify(ctx)
	ingest(t, s, true, Task(1, 10))
	for i, ch := range []<-chan struct{}{a, b} {
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("subscriber %d not woken by a commit that appended events", i)
		}
	}
}

// subscriberCounter is what both backends' concrete types expose for this
// test: how many Notify subscriptions the store holds.
type subscriberCounter interface{ Subscribers() int }

// testNotifyRelease: a subscription whose context ended is dropped and
// receives nothing more; the others still do.
func testNotifyRelease(t *testing.T, newStore NewFunc) {
	s, _ := newStore(t)
	defer s.Close()
	counter, ok := s.(subscriberCounter)
	require.True(t, ok, "%T has no Subscribers() int", s)
	before := counter.Subscribers()
	keep := s.Notify(t.Context())
	ctx, cancel := context.WithCancel(t.Context())
	subs := make([]<-chan struct{}, 10)
	for i := range subs {
		subs[i] = s.Notify(ctx)
	}
	require.Equal(t, before+11, counter.Subscribers())
	cancel()
	require.Eventually(t, func() bool { return counter.Subscribers() == before+1 },
		5*time.Second, 5*time.Millisecond, "subscriptions of an ended context released")
	ingest(t, s, true, Task(1, 10))
	select {
	case <-keep:
	case <-time.After(5 * time.Second):
		t.Fatal("a live subscription not woken by a commit that appended events")
	}
	for i, ch := range subs {
		select {
		case <-ch:
			t.Fatalf("released subscription %d woken", i)
		default:
		}
	}
}

func testPrune(t *testing.T, newStore NewFunc) {
	s, _ := newStore(t)
	defer s.Close()
	ctx := context.Background()
	ingest(t, s, true, Task(1, 10, 11, 12, 13))
	require.NoError(t, s.SetCursor("hook", 3))
	require.NoError(t, s.SetCursor("nats", 2))
	later := time.Now().Add(2 * time.Hour)
	res, err := s.Prune(ctx, store.PruneOptions{Retention: time.Hour, Sinks: []string{"hook", "nats"}, Now: later})
	require.NoError(t, err)
	require.Equal(t, 2, res.Events, "only what every sink has passed")
	first, err := s.First()
	require.NoError(t, err)
	require.Equal(t, uint64(3), first)
	res, err = s.Prune(ctx, store.PruneOptions{Retention: 3 * time.Hour, Sinks: []string{"hook"}, Now: later})
	require.NoError(t, err)
	require.Zero(t, res.Events, "nothing older than the retention")
	ingest(t, s, true, Task(1, 10, 11, 12, 13, 14))
	evs := readAll(t, s)
	require.Len(t, evs, 3)
	requireDense(t, evs, 3)
	require.Equal(t, uint64(5), evs[2].Offset, "pruned offsets are never reused")
}

func testOffsetSince(t *testing.T, newStore NewFunc) {
	s, _ := newStore(t)
	defer s.Close()
	before := time.Now().Add(-time.Minute)
	off, err := s.OffsetSince(before)
	require.NoError(t, err)
	require.Equal(t, uint64(1), off, "an empty store: Head+1")
	ingest(t, s, true, Task(1, 10, 11))
	off, err = s.OffsetSince(before)
	require.NoError(t, err)
	require.Equal(t, uint64(1), off)
	off, err = s.OffsetSince(time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, uint64(3), off, "none stored after t: Head+1")
}

func testReopen(t *testing.T, newStore NewFunc) {
	s, reopen := newStore(t)
	ingest(t, s, true, Task(1, 10, 11))
	require.NoError(t, s.SetCursor("hook", 1))
	require.NoError(t, s.DeadLetter("hook", 2, 1, "HTTP 400"))
	require.NoError(t, s.SetMeta("k", []byte("v")))
	require.NoError(t, s.SetInitialized())
	before := readAll(t, s)
	require.NoError(t, s.Close())

	s = reopen()
	defer s.Close()
	after := readAll(t, s)
	require.Len(t, after, len(before))
	for i := range before {
		require.Equal(t, before[i].Offset, after[i].Offset)
		require.Equal(t, string(before[i].Body), string(after[i].Body), "bodies survive a restart byte for byte")
	}
	c, err := s.Cursor("hook")
	require.NoError(t, err)
	require.Equal(t, uint64(1), c)
	dls, err := s.DeadLetters("hook")
	require.NoError(t, err)
	require.Len(t, dls, 1)
	v, err := s.Meta("k")
	require.NoError(t, err)
	require.Equal(t, "v", string(v))
	ok, err := s.Initialized()
	require.NoError(t, err)
	require.True(t, ok)
	res := ingest(t, s, true, Task(1, 10, 11, 12))
	require.Equal(t, 1, res.Events, "the seen-set survives a restart")
	require.Equal(t, uint64(3), res.FirstOffset, "offsets continue after a restart")
}

func testClosed(t *testing.T, newStore NewFunc) {
	s, _ := newStore(t)
	require.NoError(t, s.Close())
	_, err := s.Head()
	require.ErrorIs(t, err, store.ErrClosed)
	_, err = s.Ingest(context.Background(), []diff.Task{Task(1, 10)}, loc, true)
	require.ErrorIs(t, err, store.ErrClosed)
	require.ErrorIs(t, s.SetCursor("hook", 1), store.ErrClosed)
	_, err = s.Meta("k")
	require.ErrorIs(t, err, store.ErrClosed)
	_, err = s.SyncSinks([]store.SinkSpec{{Name: "hook"}}, t0)
	require.ErrorIs(t, err, store.ErrClosed)
	require.ErrorIs(t, s.ForgetSink("hook"), store.ErrClosed)
}
