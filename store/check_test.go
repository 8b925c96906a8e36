package store

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// boundedOpen makes Open use the bounded check for every file.
func boundedOpen(t *testing.T) {
	old := fullCheckMaxSize
	fullCheckMaxSize = 0
	t.Cleanup(func() { fullCheckMaxSize = old })
}

// closedStore writes a store of pages pages of 50 tasks with 4 events
// each, a cursor and a dead letter, closes it and returns its path.
func closedStore(t *testing.T, pages int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "relay.db")
	db, err := Open(path, Options{NoSync: true})
	require.NoError(t, err)
	for p := range pages {
		_, err := db.Ingest(context.Background(), decodePage(t, pageJSON(int64(1+p*50), 50, 4, int64(1+p*200))), shanghai, true)
		require.NoError(t, err)
	}
	require.NoError(t, db.SetCursor("bus", 500))
	require.NoError(t, db.DeadLetter("bus", 3, 1, "gone"))
	require.NoError(t, db.Close())
	return path
}

// rootPage returns the root page of a top-level bucket of a closed store.
func rootPage(t *testing.T, path string, bucket []byte) int64 {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	require.NoError(t, err)
	defer bdb.Close()
	var id int64
	require.NoError(t, bdb.View(func(tx *bolt.Tx) error {
		id = int64(tx.Bucket(bucket).RootPage())
		return nil
	}))
	require.NotZero(t, id, "bucket %s is inline", bucket)
	return id
}

// TestOpen_BoundedCheckSeesMetaAndRoots damages what the bounded check
// covers: each gives ErrCorrupt at Open, and the file is left as it was.
func TestOpen_BoundedCheckSeesMetaAndRoots(t *testing.T) {
	garbage := bytes.Repeat([]byte{0xA5}, pageSize)
	tests := []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"both meta pages", func(t *testing.T, path string) {
			overwrite(t, path, 0, bytes.Repeat([]byte{0xFF}, 2*pageSize))
		}},
		{"outbox root page", func(t *testing.T, path string) {
			overwrite(t, path, rootPage(t, path, bucketEvents)*int64(pageSize), garbage)
		}},
		{"seen-set root page", func(t *testing.T, path string) {
			overwrite(t, path, rootPage(t, path, bucketSeen)*int64(pageSize), garbage)
		}},
		{"truncated", func(t *testing.T, path string) {
			require.NoError(t, os.Truncate(path, usedSize(t, path)-int64(pageSize)))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := closedStore(t, 10)
			boundedOpen(t)
			tt.damage(t, path)
			before, err := os.ReadFile(path)
			require.NoError(t, err)
			_, err = Open(path, Options{})
			require.ErrorIs(t, err, ErrCorrupt)
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(before, after), "the file was modified")
		})
	}
}

// TestCheckAll_DeepCorruption damages an outbox leaf page between the
// paths the bounded check samples: Open and the status reads do not see
// it, CheckAll does, and a full Open check does too.
func TestCheckAll_DeepCorruption(t *testing.T) {
	path := closedStore(t, 10) // 2,000 events, about 170 outbox pages
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	// The samples seek to offsets 1+1999/16*i; 1060 lies between two.
	i := bytes.Index(raw, []byte(`"offset":1060,"data"`))
	require.Positive(t, i)
	page := int64(i / pageSize)
	require.NotEqual(t, page, rootPage(t, path, bucketEvents))
	overwrite(t, path, page*int64(pageSize)+16, bytes.Repeat([]byte{0xA5}, pageSize-16))

	boundedOpen(t)
	db, err := Open(path, Options{})
	require.NoError(t, err, "the bounded check does not read the page")
	t.Cleanup(func() { _ = db.Close() })
	s, err := db.Stats()
	require.NoError(t, err)
	assert.Equal(t, uint64(2000), s.Head)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, db.CheckAll(ctx), context.Canceled)

	err = db.CheckAll(context.Background())
	require.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, err.Error(), path)
	require.ErrorIs(t, db.Check(), ErrCorrupt)
	require.NoError(t, db.Close())
	assert.ErrorIs(t, db.CheckAll(context.Background()), ErrClosed)

	fullCheckMaxSize = 1 << 30
	_, err = Open(path, Options{})
	require.ErrorIs(t, err, ErrCorrupt, "a full check at open sees it")
}

// TestCheckAll_BadValue stores a value without an outbox header through
// bbolt, pages intact: only CheckAll's walk can tell.
func TestCheckAll_BadValue(t *testing.T) {
	db := mustOpen(t)
	ingest(t, db, true, task(1, 10, 11, 12))
	require.NoError(t, db.CheckAll(context.Background()))
	require.NoError(t, db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEvents).Put(u64(2), []byte("junk"))
	}))
	err := db.CheckAll(context.Background())
	require.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, err.Error(), "event 2")
}

// TestCheckAll_WithWriters runs CheckAll while events are ingested: no
// false corruption, no race.
func TestCheckAll_WithWriters(t *testing.T) {
	db := mustOpen(t, noSync)
	for p := range 5 {
		ingest(t, db, true, decodePage(t, pageJSON(int64(1+p*50), 50, 4, int64(1+p*200)))...)
	}
	done := make(chan error)
	go func() {
		for p := 5; p < 25; p++ {
			if _, err := db.Ingest(context.Background(), decodePage(t, pageJSON(int64(1+p*50), 50, 4, int64(1+p*200))), shanghai, true); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for range 3 {
		require.NoError(t, db.CheckAll(context.Background()))
	}
	require.NoError(t, <-done)
	require.NoError(t, db.CheckAll(context.Background()))
}
