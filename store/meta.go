package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
)

// Meta returns the value other packages stored under key with SetMeta, or an
// error wrapping ErrNotFound. The returned slice is the caller's.
func (db *DB) Meta(key string) ([]byte, error) {
	var out []byte
	err := db.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketKV).Get([]byte(key))
		if v == nil {
			return fmt.Errorf("meta %q: %w", key, ErrNotFound)
		}
		out = bytes.Clone(v)
		return nil
	})
	return out, db.wrap("meta", err)
}

// SetMeta stores a small value under key for other packages (e.g. the
// poller's tier state); a nil value deletes the key. It blocks for one
// commit.
func (db *DB) SetMeta(key string, value []byte) error {
	if key == "" {
		return db.wrap("set meta", errors.New("empty key"))
	}
	err := db.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKV)
		if value == nil {
			return b.Delete([]byte(key))
		}
		return b.Put([]byte(key), bytes.Clone(value))
	})
	return db.wrap("set meta", err)
}

// Initialized reports whether SetInitialized was called: a first full sweep
// completed on this store.
func (db *DB) Initialized() (bool, error) {
	var ok bool
	err := db.view(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bucketMeta).Get(keyInitialized) != nil
		return nil
	})
	return ok, db.wrap("initialized", err)
}

// SetInitialized records that a first full sweep completed. It is
// idempotent and keeps the time of the first call.
func (db *DB) SetInitialized() error {
	err := db.update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta.Get(keyInitialized) != nil {
			return nil
		}
		return meta.Put(keyInitialized, u64(uint64(db.now().UnixNano())))
	})
	return db.wrap("set initialized", err)
}

// Stats describes the store.
type Stats struct {
	Head     uint64 // highest offset ever assigned
	First    uint64 // lowest offset stored; 0 if none
	Events   int    // events stored
	Tasks    int    // tasks in the seen-set
	FileSize int64  // bytes of the store file
}

// Stats returns the store's figures. It reads a few pages whatever the
// store's size: the totals are kept as events and seen records are added
// and pruned. Only a store written by an older version, until the count
// Open started in the background is done, has its seen-set counted here.
func (db *DB) Stats() (Stats, error) {
	var s Stats
	err := db.view(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		s.Head = events.Sequence()
		if k, _ := events.Cursor().First(); k != nil {
			s.First = be64(k)
		}
		if v := tx.Bucket(bucketMeta).Get(keyEventCount); len(v) == 8 {
			s.Events = int(be64(v))
		}
		var ok bool
		if s.Tasks, ok = seenCount(tx); !ok {
			s.Tasks = tx.Bucket(bucketSeen).Stats().KeyN
		}
		s.FileSize = tx.Size()
		return nil
	})
	if err == nil {
		if fi, serr := os.Stat(db.path); serr == nil {
			s.FileSize = fi.Size()
		}
	}
	return s, db.wrap("stats", err)
}
