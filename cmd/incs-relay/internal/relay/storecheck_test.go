package relay

// Tests of the background check of a bbolt store.

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store"
	"github.com/incs-relay/incs-relay/store/storetest"
)

// TestCheckStore: a sound store is checked whole and says so; a ctx that
// ends during the wait checks nothing; a closed store is no finding.
func TestCheckStore(t *testing.T) {
	db, err := store.Open(t.TempDir()+"/relay.db", store.Options{NoSync: true})
	require.NoError(t, err)
	_, err = db.Ingest(context.Background(), []diff.Task{storetest.Task(1, 100, 101)}, time.UTC, true)
	require.NoError(t, err)

	var buf bytes.Buffer
	require.NoError(t, checkStore(context.Background(), db, zerolog.New(&buf), 0))
	assert.Contains(t, buf.String(), "the whole file is sound")

	buf.Reset()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, checkStore(ctx, db, zerolog.New(&buf), time.Hour))
	assert.Empty(t, buf.String(), "nothing checked once ctx ended")

	require.NoError(t, db.Close())
	buf.Reset()
	require.NoError(t, checkStore(context.Background(), db, zerolog.New(&buf), 0))
	assert.Empty(t, buf.String(), "a closed store is not reported as damaged")
}
