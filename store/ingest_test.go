package store

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

func TestIngest_Offsets(t *testing.T) {
	clock := newClock()
	db := mustOpen(t, withClock(clock))

	unsorted := task(7, 30, 10, 20) // the API may list logs in any order
	res := ingest(t, db, true, task(5, 1, 2), unsorted)
	assert.Equal(t, IngestResult{Events: 5, Tasks: 2, Changed: 2, FirstOffset: 1, LastOffset: 5,
		Types: map[string]int{diff.TypeTaskCreated: 2, diff.TypeTaskAssigned: 2, diff.TypeTaskStatusChanged: 1}}, res)

	res = ingest(t, db, true, task(5, 1, 2, 3))
	assert.Equal(t, IngestResult{Events: 1, Tasks: 1, Changed: 1, FirstOffset: 6, LastOffset: 6,
		Types: map[string]int{diff.TypeTaskStatusChanged: 1}}, res)

	evs := readAll(t, db)
	require.Len(t, evs, 6)
	want := []struct {
		offset uint64
		id     string
		task   int64
	}{
		{1, "log-1", 5}, {2, "log-2", 5}, {3, "log-10", 7}, {4, "log-20", 7}, {5, "log-30", 7}, {6, "log-3", 5},
	}
	for i, w := range want {
		ev := evs[i]
		assert.Equal(t, w.offset, ev.Offset)
		assert.Equal(t, w.id, ev.ID)
		assert.Equal(t, w.task, ev.Data.TaskID)
		assert.Equal(t, clock.Now(), ev.StoredAt.UTC())

		// Body is exactly json.Marshal of the event with its offset.
		plain := ev
		plain.Body, plain.StoredAt = nil, time.Time{}
		b, err := json.Marshal(plain)
		require.NoError(t, err)
		assert.JSONEq(t, string(b), string(ev.Body))
		assert.Equal(t, string(b), string(ev.Body))
	}
	assert.Equal(t, diff.TypeTaskAssigned, evs[2].Type)
	assert.Equal(t, "incs_1", evs[2].Data.AssigneeUsername)
	assert.Equal(t, "2026-04-08T17:22:10+08:00", evs[2].Time.Format(time.RFC3339))

	head, err := db.Head()
	require.NoError(t, err)
	assert.Equal(t, uint64(6), head)
}

func TestIngest_Idempotent(t *testing.T) {
	tests := []struct {
		name    string
		batches [][]diff.Task
		reopen  bool
		want    []string // event ids in offset order
	}{
		{
			name:    "same page twice",
			batches: [][]diff.Task{{task(1, 1, 2), task(2, 3)}, {task(1, 1, 2), task(2, 3)}},
			want:    []string{"log-1", "log-2", "log-3"},
		},
		{
			name:    "same task twice in one batch",
			batches: [][]diff.Task{{task(1, 1, 2), task(2, 5), task(1, 1, 2)}},
			want:    []string{"log-1", "log-2", "log-5"},
		},
		{
			name: "task repeated with a new log in one batch",
			// The task moved between pages while the sweep paged; its
			// second copy has one more log, and an older one it lacked.
			batches: [][]diff.Task{{task(1, 2, 4), task(2, 5), task(1, 1, 2, 4, 6)}},
			want:    []string{"log-1", "log-2", "log-4", "log-6", "log-5"},
		},
		{
			name:    "after reopen",
			batches: [][]diff.Task{{task(1, 1, 2)}, {task(1, 1, 2, 3)}},
			reopen:  true,
			want:    []string{"log-1", "log-2", "log-3"},
		},
		{
			name:    "log repeated within a task",
			batches: [][]diff.Task{{task(1, 1, 1, 2)}},
			want:    []string{"log-1", "log-2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "relay.db")
			db, err := Open(path, Options{})
			require.NoError(t, err)
			for _, b := range tt.batches {
				ingest(t, db, true, b...)
				if tt.reopen {
					require.NoError(t, db.Close())
					db, err = Open(path, Options{})
					require.NoError(t, err)
				}
			}
			evs := readAll(t, db)
			require.NoError(t, db.Close())
			var ids []string
			for i, ev := range evs {
				ids = append(ids, ev.ID)
				assert.Equal(t, uint64(i+1), ev.Offset)
			}
			assert.Equal(t, tt.want, ids)
		})
	}
}

func TestIngest_Snapshot(t *testing.T) {
	db := mustOpen(t)
	res := ingest(t, db, false, task(1, 1, 2), task(2, 3))
	assert.Equal(t, IngestResult{Tasks: 2, Changed: 2}, res)
	head, err := db.Head()
	require.NoError(t, err)
	assert.Zero(t, head)

	res = ingest(t, db, true, task(1, 1, 2, 4), task(2, 3))
	assert.Equal(t, IngestResult{Events: 1, Tasks: 2, Changed: 1, Skipped: 1, FirstOffset: 1, LastOffset: 1,
		Types: map[string]int{diff.TypeTaskStatusChanged: 1}}, res)
	evs := readAll(t, db)
	require.Len(t, evs, 1)
	assert.Equal(t, "log-4", evs[0].ID)
}

func TestIngest_DiffError(t *testing.T) {
	db := mustOpen(t)
	bad := task(2, 3, 4)
	bad.Logs[1].CreatedAt = "yesterday"
	res, err := db.Ingest(context.Background(), []diff.Task{task(1, 1), bad, task(3, 5)}, shanghai, true)
	var de *DiffError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, []int64{2}, de.TaskIDs)
	assert.Contains(t, err.Error(), "tasks 2 left unseen")
	assert.Contains(t, err.Error(), `"yesterday"`)
	assert.Equal(t, IngestResult{Events: 2, Tasks: 3, Changed: 2, Failed: 1, FirstOffset: 1, LastOffset: 2,
		Types: map[string]int{diff.TypeTaskCreated: 2}}, res)

	// The bad task's logs stayed unseen, also the one that parsed.
	fixed := task(2, 3, 4)
	res = ingest(t, db, true, fixed)
	assert.Equal(t, 2, res.Events)

	var ids []string
	for _, ev := range readAll(t, db) {
		ids = append(ids, ev.ID)
	}
	assert.Equal(t, []string{"log-1", "log-5", "log-3", "log-4"}, ids)

	// A snapshot needs no times: it marks the logs seen regardless.
	bad = task(9, 90)
	bad.Logs[0].CreatedAt = ""
	res = ingest(t, db, false, bad)
	assert.Equal(t, 1, res.Changed)
}

// TestIngest_Concurrent: workers ingest overlapping pages at once, so the
// group commit drops logs another request wrote first. Every log is one
// event, and the results' Types add up to the stored events by type: a
// dropped log is never counted.
func TestIngest_Concurrent(t *testing.T) {
	db := mustOpen(t)
	const workers, rounds, tasks = 4, 15, 8
	var (
		wg      sync.WaitGroup
		typesMu sync.Mutex
		types   = map[string]int{}
		events  int
	)
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				// Every worker polls the same tasks, which grow a log a
				// round; workers run at different paces.
				var batch []diff.Task
				for id := int64(1); id <= tasks; id++ {
					var logs []int64
					for l := range int64(r + w%2 + 1) {
						logs = append(logs, id*1000+l)
					}
					batch = append(batch, task(id, logs...))
				}
				res, err := db.Ingest(context.Background(), batch, shanghai, true)
				assert.NoError(t, err)
				n := 0
				typesMu.Lock()
				for typ, c := range res.Types {
					types[typ] += c
					n += c
				}
				events += res.Events
				typesMu.Unlock()
				assert.Equal(t, res.Events, n, "Types counts every event appended")
			}
		})
	}
	wg.Wait()

	evs := readAll(t, db)
	require.Len(t, evs, tasks*(rounds+1))
	assert.Equal(t, len(evs), events)
	stored := map[string]int{}
	for _, ev := range evs {
		stored[ev.Type]++
	}
	assert.Equal(t, stored, types, "the results' Types are the stored events by type")
	assert.Len(t, types, 4)
	seen := make(map[string]bool)
	last := make(map[int64]string)
	for i, ev := range evs {
		assert.Equal(t, uint64(i+1), ev.Offset)
		assert.False(t, seen[ev.ID], "duplicate %s", ev.ID)
		seen[ev.ID] = true
		if prev, ok := last[ev.Data.TaskID]; ok {
			assert.Less(t, logIDOf(t, prev), logIDOf(t, ev.ID), "task %d out of log order", ev.Data.TaskID)
		}
		last[ev.Data.TaskID] = ev.ID
	}
}

func logIDOf(t *testing.T, id string) int64 {
	var n int64
	for _, c := range id[len("log-"):] {
		n = n*10 + int64(c-'0')
	}
	return n
}

func TestIngest_Notify(t *testing.T) {
	db := mustOpen(t)
	ch := db.Notify(context.Background())
	sub, unsubscribe := db.Subscribe()

	ingest(t, db, true, task(1, 1))
	assertSignal(t, ch)
	assertSignal(t, sub)

	// Unchanged tasks and snapshots append nothing: no signal.
	ingest(t, db, true, task(1, 1))
	ingest(t, db, false, task(2, 2))
	assertNoSignal(t, ch)

	unsubscribe()
	unsubscribe()
	ingest(t, db, true, task(1, 1, 3))
	assertSignal(t, ch)
	assertNoSignal(t, sub)
}

func assertSignal(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case _, ok := <-ch:
		assert.True(t, ok)
	case <-time.After(5 * time.Second):
		t.Fatal("no signal")
	}
}

func assertNoSignal(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
		t.Fatal("unexpected signal")
	default:
	}
}

func TestIngest_Canceled(t *testing.T) {
	db := mustOpen(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := db.Ingest(ctx, []diff.Task{task(1, 1)}, shanghai, true)
	require.ErrorIs(t, err, context.Canceled)
	_, err = db.Ingest(context.Background(), []diff.Task{task(1, 1)}, nil, true)
	require.Error(t, err)

	head, err := db.Head()
	require.NoError(t, err)
	assert.Zero(t, head)
	res := ingest(t, db, true, task(1, 1))
	assert.Equal(t, 1, res.Events)
}

// TestIngest_StoredAtMonotonic: commit times never go backwards in offset
// order, even when the clock does, so OffsetSince can binary-search.
func TestIngest_StoredAtMonotonic(t *testing.T) {
	clock := newClock()
	db := mustOpen(t, withClock(clock))
	ingest(t, db, true, task(1, 1))
	clock.Add(-time.Hour)
	ingest(t, db, true, task(1, 1, 2))
	evs := readAll(t, db)
	require.Len(t, evs, 2)
	assert.False(t, evs[1].StoredAt.Before(evs[0].StoredAt))
}
