package store

// This file owns the running totals kept in the meta bucket so that Stats
// reads them instead of counting: the number of tasks in the seen-set
// (the number of events is kept by addEventCount in outbox.go). A store
// written before the seen total existed gets it once, in the background,
// after Open.

import (
	"errors"

	bolt "go.etcd.io/bbolt"
)

// keySeenCount holds the number of seen records, 8 bytes BE.
var keySeenCount = []byte("seen_count")

// seenCount returns the stored number of seen records; ok is false for a
// store that does not have it yet.
func seenCount(tx *bolt.Tx) (n int, ok bool) {
	v := tx.Bucket(bucketMeta).Get(keySeenCount)
	if len(v) != 8 {
		return 0, false
	}
	return int(be64(v)), true
}

// addSeenCount adds d to the stored number of seen records. A store
// without the total is left without it: countSeen sets it whole.
func addSeenCount(tx *bolt.Tx, d int64) error {
	n, ok := seenCount(tx)
	if !ok || d == 0 {
		return nil
	}
	return tx.Bucket(bucketMeta).Put(keySeenCount, u64(uint64(max(int64(n)+d, 0))))
}

// countSeen sets the seen total of a store that lacks it, counting the
// seen-set in one write transaction (writers wait for it: 8 ms for
// 250,000 tasks in the page cache) and drops the pages it read from the mapping. Open starts
// it in the background; Close waits for it.
func (db *DB) countSeen() {
	err := db.update(func(tx *bolt.Tx) error {
		if _, ok := seenCount(tx); ok {
			return nil
		}
		return tx.Bucket(bucketMeta).Put(keySeenCount, u64(uint64(tx.Bucket(bucketSeen).Stats().KeyN)))
	})
	if err == nil {
		db.releaseMapped()
	}
	if err != nil && !errors.Is(err, ErrClosed) {
		db.log.Warn().Err(err).Msg("store: counting the seen-set failed; Stats counts it on every call")
	}
}
