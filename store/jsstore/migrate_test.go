// Tests of Migrate from a bbolt store.

package jsstore

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store"
	"github.com/incs-relay/incs-relay/store/storetest"
)

// TestMigrate carries a bbolt store over: the same offsets, ids, bodies
// (byte for byte) and commit times, offsets continuing after the old head
// (also past pruned events), the seen-set (no log gets a second event),
// rule states, cursors, dead letters, sink states and small values.
func TestMigrate(t *testing.T) {
	ctx := context.Background()
	loc := time.FixedZone("CST", 8*3600)
	db, err := store.Open(filepath.Join(t.TempDir(), "relay.db"), store.Options{})
	require.NoError(t, err)
	defer db.Close()
	var tasks []diff.Task
	for i := range int64(400) {
		tasks = append(tasks, storetest.Task(i+1, 10*(i+1), 10*(i+1)+1, 10*(i+1)+2))
	}
	_, err = db.Ingest(ctx, tasks, loc, true)
	require.NoError(t, err)
	require.NoError(t, db.SetCursor("hook", 10))
	require.NoError(t, db.SetCursor("nats", 1200))
	require.NoError(t, db.DeadLetter("hook", 7, 3, "HTTP 500"))
	require.NoError(t, db.SetSinkState("hook", store.SinkState{Paused: true, PauseReason: "HTTP 410"}))
	require.NoError(t, db.SetMeta("poller.tiers", []byte(`{"hot":[1]}`)))
	require.NoError(t, db.SetInitialized())
	synced := time.Date(2026, 4, 8, 9, 0, 0, 0, time.UTC)
	_, err = db.SyncSinks([]store.SinkSpec{{Name: "hook"}, {Name: "nats"}, {Name: "old"}}, synced)
	require.NoError(t, err)
	registry, err := db.SyncSinks([]store.SinkSpec{{Name: "hook"}, {Name: "nats"}}, synced.Add(time.Minute))
	require.NoError(t, err)
	_, err = db.ApplyRules(ctx, []store.RuleWrite{{TaskID: 3, Record: []byte("state-3"), Task: []byte(`{"id":3}`)}})
	require.NoError(t, err)
	// Prune the first five events, so offsets start past 1.
	_, err = db.Prune(ctx, store.PruneOptions{Retention: time.Nanosecond, Sinks: []string{"hook", "nats"}, Now: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	first, err := db.First()
	require.NoError(t, err)
	require.Equal(t, uint64(7), first, "all through the hook's cursor but its dead letter")

	srv := runServer(t)
	js := leadingStore(t, srv.ClientURL(), Options{ReplicaID: "m"})
	res, err := Migrate(ctx, js, db)
	require.NoError(t, err)
	require.Equal(t, uint64(1200), res.Head)
	require.Equal(t, 1200-9, res.Events)
	require.Equal(t, 400, res.Tasks)
	require.Equal(t, 1, res.Rules)
	require.Equal(t, 2, res.Sinks)
	require.Equal(t, 1, res.DeadLetters)

	want, err := db.Read(ctx, 0, 5000)
	require.NoError(t, err)
	got, err := js.Read(ctx, 0, 5000)
	require.NoError(t, err)
	require.Len(t, got, len(want))
	for i := range want {
		require.Equal(t, want[i].Offset, got[i].Offset)
		require.Equal(t, want[i].ID, got[i].ID)
		require.Equal(t, string(want[i].Body), string(got[i].Body), "offset %d byte for byte", want[i].Offset)
		require.True(t, want[i].StoredAt.Equal(got[i].StoredAt))
	}
	for _, c := range []struct {
		sink string
		want uint64
	}{{"hook", 10}, {"nats", 1200}} {
		cur, err := js.Cursor(c.sink)
		require.NoError(t, err)
		require.Equal(t, c.want, cur, c.sink)
	}
	dls, err := js.DeadLetters("hook")
	require.NoError(t, err)
	require.Len(t, dls, 1)
	require.Equal(t, uint64(7), dls[0].Offset)
	require.Equal(t, "HTTP 500", dls[0].Error)
	st, err := js.SinkState("hook")
	require.NoError(t, err)
	require.True(t, st.Paused)
	v, err := js.Meta("poller.tiers")
	require.NoError(t, err)
	require.Equal(t, `{"hot":[1]}`, string(v))
	ok, err := js.Initialized()
	require.NoError(t, err)
	require.True(t, ok)
	var rules []int64
	require.NoError(t, js.RuleStates(func(id int64, rec []byte) error {
		rules = append(rules, id)
		require.Equal(t, "state-3", string(rec))
		return nil
	}))
	require.Equal(t, []int64{3}, rules)

	// The seen-set came along and offsets continue after the old head.
	r, err := js.Ingest(ctx, []diff.Task{storetest.Task(1, 10, 11, 12, 13), storetest.Task(2, 20, 21, 22)}, loc, true)
	require.NoError(t, err)
	require.Equal(t, 1, r.Events)
	require.Equal(t, uint64(1201), r.FirstOffset)
	// The rule task came along: an event without a task gets it.
	rr, err := js.ApplyRules(ctx, []store.RuleWrite{{TaskID: 3, Record: []byte("state-3b"), Events: []diff.Event{{
		SpecVersion: "1.0", ID: "rule-x-3", Source: "test", Type: "task.stalled", Data: diff.Data{TaskID: 3},
	}}}})
	require.NoError(t, err)
	ev, err := js.Event(rr.FirstOffset)
	require.NoError(t, err)
	require.JSONEq(t, `{"id":3}`, string(ev.Data.Task))

	// The registry came along, with its marker: a sink new to dst starts
	// per its mode, not adopted.
	entries, err := js.Sinks()
	require.NoError(t, err)
	require.Equal(t, registry, entries)
	entries, err = js.SyncSinks([]store.SinkSpec{{Name: "hook"}, {Name: "nats"}, {Name: "bus"}}, synced.Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, store.RegisteredSink{Name: "bus", Start: rr.FirstOffset + 1, Added: synced.Add(time.Hour)}, entries[0])

	_, err = Migrate(ctx, js, db)
	require.ErrorContains(t, err, "not empty")
}
