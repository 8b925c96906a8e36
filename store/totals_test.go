package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/incs-relay/incs-relay/diff"
)

// requireTotals checks Stats' totals against a count of the buckets.
func requireTotals(t *testing.T, db *DB) Stats {
	t.Helper()
	s, err := db.Stats()
	require.NoError(t, err)
	var events, tasks int
	require.NoError(t, db.bolt.View(func(tx *bolt.Tx) error {
		events = tx.Bucket(bucketEvents).Stats().KeyN
		tasks = tx.Bucket(bucketSeen).Stats().KeyN
		return nil
	}))
	assert.Equal(t, events, s.Events, "events")
	assert.Equal(t, tasks, s.Tasks, "tasks")
	return s
}

// hasSeenTotal reports whether the store keeps its seen total.
func hasSeenTotal(t *testing.T, db *DB) bool {
	t.Helper()
	var ok bool
	require.NoError(t, db.bolt.View(func(tx *bolt.Tx) error {
		_, ok = seenCount(tx)
		return nil
	}))
	return ok
}

func TestTotals(t *testing.T) {
	clock := newClock()
	path := filepath.Join(t.TempDir(), "relay.db")
	db := mustOpenPath(t, path, withClock(clock))
	require.True(t, hasSeenTotal(t, db), "a new store keeps the total")
	ctx := context.Background()
	old := func(tk diff.Task) diff.Task {
		tk.CreatedAt = clock.Now().Add(-60 * 24 * time.Hour).In(shanghai).Format(diff.TimeLayout)
		return tk
	}
	ingest(t, db, true, old(task(1, 10, 11)), old(task(2, 20)), task(3, 30))
	// Repeats and new logs of known tasks add no task.
	ingest(t, db, true, old(task(1, 10, 11, 12)), task(3, 30), task(4, 40))
	// Seen without events (emit false, IngestAfter) counts too.
	ingest(t, db, false, task(5, 50))
	_, err := db.IngestAfter(ctx, []diff.Task{task(6, 60)}, shanghai, clock.Now().Add(time.Hour))
	require.NoError(t, err)
	s := requireTotals(t, db)
	assert.Equal(t, 6, s.Tasks)
	assert.Equal(t, 6, s.Events)

	require.NoError(t, db.SetCursor("bus", 6))
	require.NoError(t, db.DeadLetter("bus", 2, 3, "HTTP 500"))
	clock.Add(2 * time.Hour)
	res, err := db.Prune(ctx, PruneOptions{Retention: time.Hour, Lookback: 30 * 24 * time.Hour, Sinks: []string{"bus"}})
	require.NoError(t, err)
	assert.Equal(t, PruneResult{Events: 5, Tasks: 2}, res)
	s = requireTotals(t, db)
	assert.Equal(t, 4, s.Tasks)
	assert.Equal(t, 1, s.Events, "the dead letter stays")

	require.NoError(t, db.Close())
	db = mustOpenPath(t, path, withClock(clock))
	requireTotals(t, db)
	ingest(t, db, true, task(7, 70))
	s = requireTotals(t, db)
	assert.Equal(t, 5, s.Tasks)
}

// TestTotals_OldStore opens a store written before the seen total: Open
// does not count, Stats is right at once, and the total is there after the
// background count, kept from then on.
func TestTotals_OldStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.db")
	db := mustOpenPath(t, path)
	for p := range 3 {
		ingest(t, db, true, decodePage(t, pageJSON(int64(1+p*50), 50, 2, int64(1+p*100)))...)
	}
	require.NoError(t, db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Delete(keySeenCount)
	}))
	require.NoError(t, db.Close())

	db = mustOpenPath(t, path)
	s := requireTotals(t, db)
	assert.Equal(t, 150, s.Tasks)
	db.bg.Wait()
	require.True(t, hasSeenTotal(t, db), "counted in the background")
	ingest(t, db, true, decodePage(t, pageJSON(151, 50, 2, 1001))...)
	s = requireTotals(t, db)
	assert.Equal(t, 200, s.Tasks)
}
