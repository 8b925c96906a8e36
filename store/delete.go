package store

// Deletions: a task.deleted event for each task a look-up confirmed gone,
// and its seen record forgotten, in one transaction; and the tracked
// tasks a full sweep checks for deletions.

import (
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/incs-relay/incs-relay/diff"
)

// errNothing ends a transaction that had nothing to write.
var errNothing = errors.New("nothing to write")

// DeletedEvent returns the prepared task.deleted event of a task whose
// seen record is rec, confirmed gone at confirmed: its data holds the
// values the record kept (none for a record of version 1).
func deletedEvent(taskID int64, rec []byte, confirmed time.Time) (preparedEvent, error) {
	var r seenRecord
	if err := decodeRecord(rec, &r); err != nil {
		return preparedEvent{}, fmt.Errorf("seen record of task %d: %w", taskID, err)
	}
	if r.Apart {
		return preparedEvent{}, fmt.Errorf("seen record of task %d: %w", taskID, errApart)
	}
	var last diff.Before
	if r.V2 {
		b, err := decodeBefore(r.Rest)
		if err != nil {
			return preparedEvent{}, fmt.Errorf("seen record of task %d: %w", taskID, err)
		}
		last = b
		last.UpdatedAt = r.UpdatedAt
	}
	evs, err := encodeEvents(taskID, []diff.Event{diff.Deleted(taskID, &last, confirmed)})
	if err != nil {
		return preparedEvent{}, err
	}
	return evs[0], nil
}

// PrepareDelete returns, for a backend that commits it itself (jsstore),
// the task.deleted event of a task with seen record rec: its body with
// offset off and commit time left for the caller, as the outbox stores
// it.
func PrepareDelete(taskID int64, rec []byte, confirmed time.Time, off uint64) (body []byte, typ string, err error) {
	e, err := deletedEvent(taskID, rec, confirmed)
	if err != nil {
		return nil, "", err
	}
	v := e.finish(off, 0)
	h, err := decodeHeader(v)
	if err != nil {
		return nil, "", err
	}
	return h.body, string(h.typ), nil
}

// Delete appends a task.deleted event for each task of ids with a seen
// record and removes the record, in one transaction (see Ingester).
func (db *DB) Delete(ctx context.Context, ids []int64, confirmed time.Time) (IngestResult, error) {
	res := IngestResult{Tasks: len(ids)}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	written := 0
	defer func() { db.touch(written) }()
	err := db.update(func(tx *bolt.Tx) error {
		res = IngestResult{Tasks: len(ids)}
		events := tx.Bucket(bucketEvents)
		events.FillPercent = 1 // keys only ever grow
		seen := tx.Bucket(bucketSeen)
		seq := events.Sequence()
		storedAt := db.commitTime(events)
		for _, id := range ids {
			key := u64(uint64(id))
			rec := seen.Get(key)
			if rec == nil {
				res.Skipped++
				continue
			}
			e, err := deletedEvent(id, rec, confirmed)
			if err != nil {
				return corrupt(db.path, err)
			}
			seq++
			v := e.finish(seq, storedAt)
			written += len(v)
			if err := events.Put(u64(seq), v); err != nil {
				return err
			}
			if err := seen.Delete(key); err != nil {
				return err
			}
			if res.FirstOffset == 0 {
				res.FirstOffset, res.Types = seq, map[string]int{}
			}
			res.LastOffset = seq
			res.Types[e.typ]++
			res.Events++
			res.Changed++
		}
		if res.Events == 0 {
			return errNothing
		}
		if err := events.SetSequence(seq); err != nil {
			return err
		}
		if err := addSeenCount(tx, -int64(res.Changed)); err != nil {
			return err
		}
		return addEventCount(tx, int64(res.Events))
	})
	if errors.Is(err, errNothing) {
		return res, nil
	}
	if err != nil {
		return IngestResult{Tasks: len(ids)}, db.wrap("delete", err)
	}
	db.wake()
	return res, nil
}

// Tracked calls fn with every task with a seen record created at or
// after since (see Ingester).
func (db *DB) Tracked(since int64, fn func(taskID, created int64) bool) error {
	stop := errors.New("stop")
	var scratch seenRecord
	err := db.forEachID(bucketSeen, func(id int64, v []byte) error {
		at, err := recordCreatedAt(v, &scratch)
		if err != nil {
			return corrupt(db.path, fmt.Errorf("seen record of task %d: %w", id, err))
		}
		if at != 0 && at < since {
			return nil
		}
		if !fn(id, at) {
			return stop
		}
		return nil
	})
	if errors.Is(err, stop) {
		err = nil
	}
	return db.wrap("tracked tasks", err)
}
