package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

func TestEvents_Query(t *testing.T) {
	db := mustOpen(t)
	// Task 1: created, assigned, status changed, commented; task 2: created, assigned.
	ingest(t, db, true, task(1, 1, 2, 3, 4), task(2, 5, 6))
	ctx := context.Background()

	tests := []struct {
		name string
		q    EventQuery
		want []uint64
	}{
		{name: "all", q: EventQuery{}, want: []uint64{1, 2, 3, 4, 5, 6}},
		{name: "from", q: EventQuery{From: 4}, want: []uint64{4, 5, 6}},
		{name: "limit", q: EventQuery{From: 2, Limit: 2}, want: []uint64{2, 3}},
		{name: "type", q: EventQuery{Type: diff.TypeTaskAssigned}, want: []uint64{2, 6}},
		{name: "task", q: EventQuery{TaskID: 2}, want: []uint64{5, 6}},
		{name: "type and task", q: EventQuery{Type: diff.TypeTaskCreated, TaskID: 2}, want: []uint64{5}},
		{name: "beyond head", q: EventQuery{From: 7}, want: nil},
		{name: "no match", q: EventQuery{Type: "task.nope"}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := db.Events(ctx, tt.q)
			require.NoError(t, err)
			var got []uint64
			for _, ev := range evs {
				got = append(got, ev.Offset)
				assert.NotEmpty(t, ev.Body)
				assert.False(t, ev.StoredAt.IsZero())
			}
			assert.Equal(t, tt.want, got)
		})
	}

	ev, err := db.Event(3)
	require.NoError(t, err)
	assert.Equal(t, "log-3", ev.ID)
	assert.Equal(t, diff.TypeTaskStatusChanged, ev.Type)
	assert.Equal(t, "in_progress", ev.Data.StatusName)
	_, err = db.Event(99)
	assert.ErrorIs(t, err, ErrNotFound)

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = db.Read(canceled, 0, 10)
	assert.ErrorIs(t, err, context.Canceled)
}

func TestHead_NeverReused(t *testing.T) {
	clock := newClock()
	path := filepath.Join(t.TempDir(), "relay.db")
	db := mustOpenPath(t, path, withClock(clock))
	ingest(t, db, true, task(1, 1, 2, 3))
	require.NoError(t, db.SetCursor("bus", 3))
	clock.Add(2 * time.Hour)
	res, err := db.Prune(context.Background(), PruneOptions{Retention: time.Hour, Sinks: []string{"bus"}})
	require.NoError(t, err)
	require.Equal(t, 3, res.Events)

	first, err := db.First()
	require.NoError(t, err)
	assert.Zero(t, first, "empty outbox")
	head, err := db.Head()
	require.NoError(t, err)
	assert.Equal(t, uint64(3), head)

	require.NoError(t, db.Close())
	db = mustOpenPath(t, path, withClock(clock))
	res2 := ingest(t, db, true, task(1, 1, 2, 3, 4))
	assert.Equal(t, uint64(4), res2.FirstOffset)
	first, err = db.First()
	require.NoError(t, err)
	assert.Equal(t, uint64(4), first)
	s, err := db.Stats()
	require.NoError(t, err)
	assert.Equal(t, Stats{Head: 4, First: 4, Events: 1, Tasks: 1, FileSize: s.FileSize}, s)
	assert.Positive(t, s.FileSize)
}

func TestOffsetSince(t *testing.T) {
	clock := newClock()
	db := mustOpen(t, withClock(clock))
	t0 := clock.Now()
	ingest(t, db, true, task(1, 1, 2)) // offsets 1, 2 at t0
	clock.Add(time.Minute)
	ingest(t, db, true, task(2, 3)) // 3 at t0+1m
	clock.Add(time.Minute)
	ingest(t, db, true, task(3, 4, 5, 6)) // 4..6 at t0+2m
	clock.Add(time.Minute)
	ingest(t, db, true, task(4, 7)) // 7 at t0+3m

	tests := []struct {
		name string
		at   time.Time
		want uint64
	}{
		{name: "before everything", at: t0.Add(-time.Hour), want: 1},
		{name: "exactly first", at: t0, want: 1},
		{name: "between", at: t0.Add(30 * time.Second), want: 3},
		{name: "exactly a commit", at: t0.Add(2 * time.Minute), want: 4},
		{name: "last", at: t0.Add(3 * time.Minute), want: 7},
		{name: "after everything", at: t0.Add(time.Hour), want: 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := db.OffsetSince(tt.at)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}

	// With gaps: offsets 1-3 and 5-6 pruned, 4 kept as a dead letter.
	require.NoError(t, db.SetCursor("bus", 6))
	require.NoError(t, db.DeadLetter("bus", 4, 3, "HTTP 400"))
	clock.Add(time.Minute)
	_, err := db.Prune(context.Background(), PruneOptions{Retention: 90 * time.Second, Sinks: []string{"bus"}})
	require.NoError(t, err)
	var stored []uint64
	for _, ev := range readAll(t, db) {
		stored = append(stored, ev.Offset)
	}
	require.Equal(t, []uint64{4, 7}, stored)
	for _, tt := range []struct {
		at   time.Time
		want uint64
	}{
		{t0, 4}, {t0.Add(2 * time.Minute), 4}, {t0.Add(150 * time.Second), 7}, {t0.Add(3 * time.Minute), 7}, {t0.Add(4 * time.Minute), 8},
	} {
		got, err := db.OffsetSince(tt.at)
		require.NoError(t, err)
		assert.Equal(t, tt.want, got, "since %s", tt.at.Sub(t0))
	}

	empty := mustOpen(t)
	got, err := empty.OffsetSince(t0)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), got)
}
