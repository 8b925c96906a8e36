package store

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

// TestRead_FastDecodeMatchesJSON: events read back with the fast decode are
// exactly what decoding their whole body with encoding/json gives.
func TestRead_FastDecodeMatchesJSON(t *testing.T) {
	db := mustOpen(t)
	_, err := db.Ingest(context.Background(), decodePage(t, pageJSON(1, 20, 5, 1)), shanghai, true)
	require.NoError(t, err)
	evs, err := db.Read(context.Background(), 1, 1000)
	require.NoError(t, err)
	require.Len(t, evs, 100)
	for _, ev := range evs {
		var want diff.Event
		require.NoError(t, json.Unmarshal(ev.Body, &want))
		got := ev
		got.Body, got.StoredAt = nil, want.StoredAt
		assert.JSONEq(t, string(want.Data.Task), string(got.Data.Task))
		assert.JSONEq(t, string(want.Data.Log), string(got.Data.Log))
		got.Data.Task, got.Data.Log, want.Data.Task, want.Data.Log = nil, nil, nil, nil
		assert.True(t, want.Time.Equal(got.Time))
		got.Time = want.Time
		assert.Equal(t, want, got)
	}
	ok := decodeEventFast(new(diff.Event), []byte(`{"id":"log-1","data":{"task_id":1}}`))
	assert.False(t, ok, "a body without task and log falls back to a whole decode")
}
