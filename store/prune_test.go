package store

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

// relayWithRetention relays total events in rounds of perRound: it ingests
// new tasks of 4 logs created at the clock's time, moves the only sink's
// cursor to the head, advances the clock by 6h and prunes with a 1h
// retention and a 1h lookback. It returns the file size after each round.
func relayWithRetention(tb testing.TB, db *DB, clock *testClock, total, perRound int) []int64 {
	tb.Helper()
	ctx := context.Background()
	var (
		sizes  []int64
		nextID int64 = 1
		tasks  []diff.Task
	)
	for done := 0; done < total; done += perRound {
		created := clock.Now().In(shanghai).Format(diff.TimeLayout)
		for n := 0; n < perRound; n += 400 {
			tasks = tasks[:0]
			for range min(100, (perRound-n+3)/4) {
				t := task(nextID, nextID*4, nextID*4+1, nextID*4+2, nextID*4+3)
				t.CreatedAt = created
				tasks = append(tasks, t)
				nextID++
			}
			_, err := db.Ingest(ctx, tasks, shanghai, true)
			require.NoError(tb, err)
		}
		head, err := db.Head()
		require.NoError(tb, err)
		require.NoError(tb, db.SetCursor("bus", head))
		clock.Add(6 * time.Hour)
		_, err = db.Prune(ctx, PruneOptions{Retention: time.Hour, Lookback: time.Hour, Sinks: []string{"bus"}})
		require.NoError(tb, err)
		sizes = append(sizes, fileSize(tb, db.Path()))
	}
	return sizes
}

func TestPrune(t *testing.T) {
	clock := newClock()
	db := mustOpen(t, withClock(clock))
	ctx := context.Background()
	created := func(ago time.Duration) string {
		return clock.Now().Add(-ago).In(shanghai).Format(diff.TimeLayout)
	}
	old := task(1, 1, 2, 3, 4) // offsets 1-4
	old.CreatedAt = created(40 * 24 * time.Hour)
	recent := task(2, 5, 6) // offsets 5-6
	recent.CreatedAt = created(time.Hour)
	unknown := task(3, 7) // offset 7
	unknown.CreatedAt = "?"
	ingest(t, db, true, old, recent, unknown)
	clock.Add(2 * time.Hour)
	fresh := task(4, 8) // offset 8, within retention
	fresh.CreatedAt = created(0)
	ingest(t, db, true, fresh)

	require.NoError(t, db.SetCursor("bus", 8))
	require.NoError(t, db.SetCursor("hooks", 6)) // 7 and 8 undelivered
	require.NoError(t, db.DeadLetter("hooks", 2, 3, "HTTP 400"))
	require.NoError(t, db.DeadLetter("bus", 5, 3, "HTTP 400"))

	res, err := db.Prune(ctx, PruneOptions{Retention: time.Hour, Lookback: 30 * 24 * time.Hour, Sinks: []string{"bus", "hooks"}})
	require.NoError(t, err)
	assert.Equal(t, PruneResult{Events: 4, Tasks: 1}, res)

	var stored []uint64
	for _, ev := range readAll(t, db) {
		stored = append(stored, ev.Offset)
	}
	// 2 and 5 are dead letters, 7 is undelivered to hooks, 8 is recent.
	assert.Equal(t, []uint64{2, 5, 7, 8}, stored)

	s, err := db.Stats()
	require.NoError(t, err)
	assert.Equal(t, 4, s.Events)
	assert.Equal(t, 3, s.Tasks, "the old task's seen record is gone")
	assert.Equal(t, uint64(8), s.Head)

	// Pruning again finds nothing; a rewound sink keeps its events.
	require.NoError(t, db.Rewind("bus", 1))
	res, err = db.Prune(ctx, PruneOptions{Retention: time.Hour, Lookback: 30 * 24 * time.Hour, Sinks: []string{"bus", "hooks"}})
	require.NoError(t, err)
	assert.Equal(t, PruneResult{}, res)

	// Disabled parts prune nothing.
	res, err = db.Prune(ctx, PruneOptions{Sinks: []string{}})
	require.NoError(t, err)
	assert.Equal(t, PruneResult{}, res)
}

func TestPrune_Batches(t *testing.T) {
	old := pruneBatch
	pruneBatch = 7
	t.Cleanup(func() { pruneBatch = old })

	clock := newClock()
	db := mustOpen(t, withClock(clock))
	var tasks []diff.Task
	for id := int64(1); id <= 25; id++ {
		tk := task(id, id*10, id*10+1)
		tk.CreatedAt = clock.Now().Add(-60 * 24 * time.Hour).In(shanghai).Format(diff.TimeLayout)
		tasks = append(tasks, tk)
	}
	ingest(t, db, true, tasks...)
	require.NoError(t, db.SetCursor("bus", 50))
	require.NoError(t, db.DeadLetter("bus", 20, 1, "x"))
	clock.Add(2 * time.Hour)

	res, err := db.Prune(context.Background(), PruneOptions{Retention: time.Hour, Lookback: 24 * time.Hour, Sinks: []string{"bus"}})
	require.NoError(t, err)
	assert.Equal(t, PruneResult{Events: 49, Tasks: 25}, res)

	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = db.Prune(canceled, PruneOptions{Retention: time.Hour})
	assert.ErrorIs(t, err, context.Canceled)
}

// TestPrune_BoundedFile relays 50,000 events with retention pruning after
// every 2,500: once pruning runs, the file stops growing. (Without pruning
// the same events take about 50 MiB.)
func TestPrune_BoundedFile(t *testing.T) {
	clock := newClock()
	db := mustOpen(t, withClock(clock), noSync)
	sizes := relayWithRetention(t, db, clock, 50_000, 2_500)
	t.Logf("file sizes: %v", sizes)
	s, err := db.Stats()
	require.NoError(t, err)
	assert.Equal(t, uint64(50_000), s.Head)
	assert.Zero(t, s.Events)
	assert.LessOrEqual(t, s.Tasks, 5*625, "seen records of old tasks are pruned")
	// The second half of the run does not grow the file, which stays a
	// fraction of what the events would take.
	assert.Equal(t, sizes[len(sizes)/2], sizes[len(sizes)-1])
	assert.Less(t, sizes[len(sizes)-1], int64(10<<20))
}
