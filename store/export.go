package store

import (
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// This file gives read access to what the Store interface does not list
// (the seen-set, the rule tasks, the sink names, the small values), for
// carrying a bbolt store over to another backend (jsstore.Migrate).

// ForEachSeen calls fn with every seen record, in task id order, in one
// read transaction. rec is only valid during the call.
func (db *DB) ForEachSeen(fn func(taskID int64, rec []byte) error) error {
	return db.wrap("seen records", db.forEachID(bucketSeen, fn))
}

// ForEachRuleTask calls fn with every task kept with a rule state (the task
// as last read, without logs), in task id order. task is only valid during
// the call.
func (db *DB) ForEachRuleTask(fn func(taskID int64, task []byte) error) error {
	return db.wrap("rule tasks", db.forEachID(bucketRuleTsk, fn))
}

func (db *DB) forEachID(bucket []byte, fn func(id int64, v []byte) error) error {
	return db.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return corrupt(db.path, fmt.Errorf("%s key %x", bucket, k))
			}
			return fn(int64(be64(k)), v)
		})
	})
}

// SinkNames returns the names of the sinks with a cursor, dead letters or
// a state, sorted (registered or not: Sinks lists the registry).
func (db *DB) SinkNames() ([]string, error) {
	var out []string
	err := db.view(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketCursors, bucketDead, bucketSinks} {
			if err := tx.Bucket(b).ForEach(func(k, _ []byte) error {
				out = append(out, string(k))
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	slices.Sort(out)
	return slices.Compact(out), db.wrap("sinks", err)
}

// ForEachMeta calls fn with every value SetMeta stored, in key order. value
// is only valid during the call.
func (db *DB) ForEachMeta(fn func(key string, value []byte) error) error {
	return db.wrap("meta", db.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKV).ForEach(func(k, v []byte) error { return fn(string(k), v) })
	}))
}
