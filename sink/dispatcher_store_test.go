package sink

// storeOutbox, the real bbolt store as an Outbox for the dispatcher tests
// (forEachOutbox in dispatcher_test.go).

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store"
)

// storeOutbox runs the dispatcher tests on the real bbolt store: Append
// ingests a task per event, as the poller would hand it over, so the store
// diffs, assigns offsets and commits; the events come back as it reads
// them.
type storeOutbox struct {
	*store.DB
}

// ingester is what Append needs of a store: storeOutbox's bbolt store,
// jsOutbox's JetStream store.
type ingester interface {
	Head() (uint64, error)
	Ingest(ctx context.Context, tasks []diff.Task, loc *time.Location, emit bool) (store.IngestResult, error)
}

func newStoreOutbox(t testing.TB) dispatchTestOutbox {
	db, err := store.Open(filepath.Join(t.TempDir(), "relay.db"), store.Options{NoSync: true})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, db.Close()) })
	return storeOutbox{db}
}

var _ Outbox = storeOutbox{}

// Append ingests one task per event, each carrying the event's log, in
// batches of distinct tasks so that offsets follow the order of evs.
func (o storeOutbox) Append(t testing.TB, evs ...diff.Event) []diff.Event {
	return appendByIngest(t, o.DB, o.DB, evs)
}

// appendByIngest is Append on a store: ingest a task per event into s and
// read the events back from ob.
func appendByIngest(t testing.TB, s ingester, ob Outbox, evs []diff.Event) []diff.Event {
	ctx := context.Background()
	head, err := s.Head()
	require.NoError(t, err)
	var batch []diff.Task
	inBatch := map[int64]bool{}
	flush := func() {
		if len(batch) > 0 {
			res, err := s.Ingest(ctx, batch, time.UTC, true)
			require.NoError(t, err)
			require.Equal(t, len(batch), res.Events, "every log is new")
		}
		batch, inBatch = batch[:0], map[int64]bool{}
	}
	for i := range evs {
		task := storeOutboxTask(t, &evs[i])
		if inBatch[task.ID] {
			flush()
		}
		inBatch[task.ID] = true
		batch = append(batch, task)
	}
	flush()
	out, err := ob.Read(ctx, head+1, len(evs))
	require.NoError(t, err)
	require.Len(t, out, len(evs))
	for i := range out {
		require.Equal(t, evs[i].ID, out[i].ID, "offset %d", out[i].Offset)
		require.Equal(t, evs[i].Type, out[i].Type, "offset %d", out[i].Offset)
	}
	return out
}

// storeOutboxTask returns the task, with the one log, that the diff step
// turns into ev: its type, as a test may have changed it, picks the log
// type.
func storeOutboxTask(t testing.TB, ev *diff.Event) diff.Task {
	var log map[string]any
	require.NoError(t, json.Unmarshal(ev.Data.Log, &log))
	for lt := diff.LogCreated; lt <= diff.LogCommented; lt++ {
		if diff.TypeOf(lt) == ev.Type {
			log["type"] = lt
		}
	}
	var task map[string]any
	require.NoError(t, json.Unmarshal(ev.Data.Task, &task))
	task["logs"] = []any{log}
	b, err := json.Marshal(task)
	require.NoError(t, err)
	var out diff.Task
	require.NoError(t, json.Unmarshal(b, &out))
	return out
}

// DeadLetters returns the store's dead letters of sink, in offset order.
func (o storeOutbox) DeadLetters(t testing.TB, sink string) []dispatchDeadLetter {
	dls, err := o.DB.DeadLetters(sink)
	require.NoError(t, err)
	return deadLettersOf(dls)
}

func deadLettersOf(dls []store.DeadLetter) []dispatchDeadLetter {
	out := make([]dispatchDeadLetter, len(dls))
	for i, d := range dls {
		out[i] = dispatchDeadLetter{Offset: d.Offset, Attempts: d.Attempts, LastErr: d.Error}
	}
	return out
}
