package store

// Retention: pruning delivered events and old seen records in bounded
// transactions.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"
)

// errNoop rolls back a write transaction that found nothing to change.
var errNoop = errors.New("nothing to do")

// pruneBatch bounds the entries one prune transaction looks at, so a big
// prune never holds the write lock for long.
var pruneBatch = 5000

// PruneOptions say what Prune may delete.
type PruneOptions struct {
	// Retention: events committed longer ago than this may be deleted,
	// once delivered. <= 0 keeps every event.
	Retention time.Duration
	// Lookback: seen records of tasks created more than Lookback+24h ago
	// are deleted, as such tasks are no longer polled. <= 0 keeps them all.
	Lookback time.Duration
	// Sinks whose cursors must have passed an event before it is
	// deleted, and whose dead letters keep their events (where a backend
	// keeps a dead letter's event in the outbox): normally the registry's
	// sinks not removed (SinkRegistry.Sinks). The cursors and dead
	// letters of other sinks, removed ones too, hold nothing back.
	Sinks []string
	// Now is the reference time; zero means the store's clock.
	Now time.Time
}

// PruneResult counts what Prune deleted.
type PruneResult struct {
	Events int // events deleted
	Tasks  int // seen records deleted
}

// Prune deletes events committed more than Retention ago that every sink in
// p.Sinks has passed (cursor >= offset) and that are no dead letter of a
// sink in p.Sinks (a removed sink's dead letters keep nothing),
// and seen records of tasks created more than Lookback+24h before Now. Head
// and offsets are not affected: pruned offsets are never reused. It works
// in transactions of bounded size and returns ctx.Err() between them, with
// what it deleted so far. The file does not shrink; bbolt reuses the pages.
func (db *DB) Prune(ctx context.Context, p PruneOptions) (PruneResult, error) {
	var res PruneResult
	now := p.Now
	if now.IsZero() {
		now = db.now()
	}
	start := time.Now()
	if p.Retention > 0 {
		cutoff := now.Add(-p.Retention).UnixNano()
		var from uint64
		for {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			n, next, err := db.pruneEvents(p.Sinks, cutoff, from)
			res.Events += n
			if err != nil {
				return res, db.wrap("prune", err)
			}
			if next == 0 {
				break
			}
			from = next
		}
	}
	if p.Lookback > 0 {
		cutoff := now.Add(-p.Lookback - 24*time.Hour).Unix()
		var from []byte
		for {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			n, next, err := db.pruneSeen(cutoff, from)
			res.Tasks += n
			if err != nil {
				return res, db.wrap("prune", err)
			}
			if next == nil {
				break
			}
			from = next
		}
	}
	if res.Events > 0 || res.Tasks > 0 {
		db.log.Debug().Int("events", res.Events).Int("tasks", res.Tasks).
			Dur("took", time.Since(start)).Msg("store pruned")
	}
	return res, nil
}

// pruneEvents deletes prunable events among at most pruneBatch events from
// offset from on. It returns the offset to continue at, 0 when done.
func (db *DB) pruneEvents(sinks []string, cutoff int64, from uint64) (n int, next uint64, err error) {
	err = db.update(func(tx *bolt.Tx) error {
		n, next = 0, 0
		limit := uint64(math.MaxUint64)
		for _, s := range sinks {
			limit = min(limit, cursor(tx, s))
		}
		dead := deadOffsets(tx, sinks, limit)
		events := tx.Bucket(bucketEvents)
		c := events.Cursor()
		var drop [][]byte
		seen := 0
		for k, v := c.Seek(u64(from)); k != nil; k, v = c.Next() {
			off := binary.BigEndian.Uint64(k)
			if off > limit {
				return deleteKeys(tx, events, drop, &n)
			}
			h, err := decodeHeader(v)
			if err != nil {
				return corrupt(db.path, fmt.Errorf("event %d: %w", off, err))
			}
			if h.storedAt >= cutoff {
				return deleteKeys(tx, events, drop, &n)
			}
			if seen++; seen > pruneBatch {
				next = off
				return deleteKeys(tx, events, drop, &n)
			}
			if _, ok := dead[off]; !ok {
				drop = append(drop, bytes.Clone(k))
			}
		}
		return deleteKeys(tx, events, drop, &n)
	})
	if err == errNoop {
		err = nil
	}
	return n, next, err
}

func deleteKeys(tx *bolt.Tx, events *bolt.Bucket, keys [][]byte, n *int) error {
	for _, k := range keys {
		if err := events.Delete(k); err != nil {
			return err
		}
	}
	*n = len(keys)
	if len(keys) == 0 {
		return errNoop
	}
	return addEventCount(tx, -int64(len(keys)))
}

// deadOffsets returns the offsets up to limit that are a dead letter of
// one of sinks.
func deadOffsets(tx *bolt.Tx, sinks []string, limit uint64) map[uint64]struct{} {
	out := make(map[uint64]struct{})
	dead := tx.Bucket(bucketDead)
	for _, sink := range sinks {
		b := dead.Bucket([]byte(sink))
		if b == nil {
			continue
		}
		c := b.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			off := binary.BigEndian.Uint64(k)
			if off > limit {
				break
			}
			out[off] = struct{}{}
		}
	}
	return out
}

// pruneSeen deletes the seen records of tasks created before cutoff (unix
// seconds) among at most pruneBatch records from key from on. It returns
// the key to continue at, nil when done.
func (db *DB) pruneSeen(cutoff int64, from []byte) (n int, next []byte, err error) {
	err = db.update(func(tx *bolt.Tx) error {
		n, next = 0, nil
		seen := tx.Bucket(bucketSeen)
		c := seen.Cursor()
		var (
			drop [][]byte
			rec  seenRecord
			i    int
		)
		for k, v := c.Seek(from); k != nil; k, v = c.Next() {
			if i++; i > pruneBatch {
				next = bytes.Clone(k)
				break
			}
			created, err := recordCreatedAt(v, &rec)
			if err != nil {
				return corrupt(db.path, fmt.Errorf("seen record of task %d: %w", int64(binary.BigEndian.Uint64(k)), err))
			}
			if created != 0 && created < cutoff {
				drop = append(drop, bytes.Clone(k))
			}
		}
		rules, ruleTasks := tx.Bucket(bucketRules), tx.Bucket(bucketRuleTsk)
		for _, k := range drop {
			if err := seen.Delete(k); err != nil {
				return err
			}
			if err := rules.Delete(k); err != nil {
				return err
			}
			if err := ruleTasks.Delete(k); err != nil {
				return err
			}
		}
		n = len(drop)
		if n == 0 {
			return errNoop
		}
		return addSeenCount(tx, -int64(n))
	})
	if err == errNoop {
		err = nil
	}
	return n, next, err
}

// recordCreatedAt returns the created_at of an encoded seen record.
func recordCreatedAt(v []byte, scratch *seenRecord) (int64, error) {
	if len(v) > 1 && (v[0] == recordVersion || v[0] == recordVersion1) {
		if c, n := binary.Varint(v[1:]); n > 0 {
			return c, nil
		}
	}
	if err := decodeRecord(v, scratch); err != nil {
		return 0, err
	}
	return scratch.CreatedAt, nil
}
