package store

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

func TestCursor(t *testing.T) {
	db := mustOpen(t)
	off, err := db.Cursor("bus")
	require.NoError(t, err)
	assert.Zero(t, off)

	ingest(t, db, true, task(1, 1, 2, 3))
	require.NoError(t, db.SetCursor("bus", 2))
	require.NoError(t, db.SetCursor("hooks", 3))
	off, err = db.Cursor("bus")
	require.NoError(t, err)
	assert.Equal(t, uint64(2), off)

	assert.Error(t, db.SetCursor("bus", 4), "beyond head")
	assert.Error(t, db.SetCursor("", 1))
	off, err = db.Cursor("bus")
	require.NoError(t, err)
	assert.Equal(t, uint64(2), off)
}

func TestDeadLetter(t *testing.T) {
	clock := newClock()
	db := mustOpen(t, withClock(clock))
	ingest(t, db, true, task(7, 1, 2, 3))

	require.NoError(t, db.DeadLetter("hooks", 2, 5, "webhook hooks: post example.com: HTTP 400"))
	require.NoError(t, db.DeadLetter("hooks", 1, 1, "HTTP 410"))
	require.NoError(t, db.DeadLetter("bus", 3, 9, "timeout"))
	assert.ErrorIs(t, db.DeadLetter("hooks", 42, 1, "x"), ErrNotFound)

	dls, err := db.DeadLetters("hooks")
	require.NoError(t, err)
	assert.Equal(t, []DeadLetter{
		{Offset: 1, EventID: "log-1", Type: diff.TypeTaskCreated, TaskID: 7, Attempts: 1, Error: "HTTP 410", At: clock.Now()},
		{Offset: 2, EventID: "log-2", Type: diff.TypeTaskAssigned, TaskID: 7, Attempts: 5, Error: "webhook hooks: post example.com: HTTP 400", At: clock.Now()},
	}, dls)

	dls, err = db.DeadLetters("nobody")
	require.NoError(t, err)
	assert.Empty(t, dls)
}

func TestSinkState(t *testing.T) {
	db := mustOpen(t)
	st, err := db.SinkState("hooks")
	require.NoError(t, err)
	assert.Equal(t, SinkState{}, st)

	now := time.Date(2026, 4, 8, 10, 0, 0, 0, time.UTC)
	want := SinkState{Paused: true, PauseReason: "HTTP 410 Gone", LastError: "HTTP 410", LastErrorAt: now, LastDeliveryAt: now.Add(-time.Minute)}
	require.NoError(t, db.SetSinkState("hooks", want))
	st, err = db.SinkState("hooks")
	require.NoError(t, err)
	assert.Equal(t, want, st)
}

func TestRewind(t *testing.T) {
	db := mustOpen(t)
	ingest(t, db, true, task(1, 1, 2, 3, 4, 5, 6))
	require.NoError(t, db.SetCursor("hooks", 6))
	require.NoError(t, db.SetCursor("bus", 6))
	for _, off := range []uint64{2, 4, 5} {
		require.NoError(t, db.DeadLetter("hooks", off, 3, "HTTP 400"))
	}
	require.NoError(t, db.DeadLetter("bus", 5, 3, "HTTP 400"))
	require.NoError(t, db.SetSinkState("hooks", SinkState{Paused: true, PauseReason: "410", LastError: "HTTP 410"}))

	require.NoError(t, db.Rewind("hooks", 4))

	off, err := db.Cursor("hooks")
	require.NoError(t, err)
	assert.Equal(t, uint64(3), off)
	dls, err := db.DeadLetters("hooks")
	require.NoError(t, err)
	require.Len(t, dls, 1)
	assert.Equal(t, uint64(2), dls[0].Offset)
	st, err := db.SinkState("hooks")
	require.NoError(t, err)
	assert.Equal(t, SinkState{LastError: "HTTP 410"}, st)

	// Other sinks are untouched.
	off, err = db.Cursor("bus")
	require.NoError(t, err)
	assert.Equal(t, uint64(6), off)
	dls, err = db.DeadLetters("bus")
	require.NoError(t, err)
	assert.Len(t, dls, 1)

	tests := []struct {
		name string
		from uint64
		want uint64
	}{
		{name: "zero clamps to first", from: 0, want: 0},
		{name: "beyond head clamps to head+1", from: 100, want: 6},
		{name: "head", from: 6, want: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, db.Rewind("hooks", tt.from))
			off, err := db.Cursor("hooks")
			require.NoError(t, err)
			assert.Equal(t, tt.want, off)
		})
	}
}
