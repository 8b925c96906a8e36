package store_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/store"
	"github.com/incs-relay/incs-relay/store/storetest"
)

// TestConformance runs the store conformance suite on the bbolt store.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
		path := filepath.Join(t.TempDir(), "relay.db")
		open := func() store.Store {
			db, err := store.Open(path, store.Options{})
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			return db
		}
		return open(), open
	})
}
