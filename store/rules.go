package store

// Rule states: storing what the rules engine changed on a read of a
// task, with its derived events, in one transaction.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/incs-relay/incs-relay/diff"
)

// RuleWrite is what evaluating the rules on one read of a task changed:
// its rule state record, the task as read and the derived events.
type RuleWrite struct {
	TaskID int64
	// Record is the task's new rule state; nil deletes it (and the task
	// kept with it).
	Record []byte
	// Task is the task as read, without logs; nil keeps the stored one.
	Task json.RawMessage
	// Events are appended in order. One whose Data.Task is empty gets the
	// stored task (the read that fired it did not decode the task).
	Events []diff.Event
}

// RuleResult summarizes one ApplyRules call.
type RuleResult struct {
	Events int // events appended
	// FirstOffset and LastOffset are the offsets of the first and last
	// event appended; both 0 if none was.
	FirstOffset, LastOffset uint64
	// Types counts the events appended by type; nil if none was.
	Types map[string]int
}

// ApplyRules writes the rule states and appends the derived events of
// writes in one transaction, so what has fired is recorded exactly when
// its events are: a crash, a restart or a replay never fires a step twice
// or loses one. Offsets continue the outbox's; events of one task follow
// the order given. It wakes Notify subscribers when events were appended.
// ctx is checked before the transaction starts.
func (db *DB) ApplyRules(ctx context.Context, writes []RuleWrite) (RuleResult, error) {
	var res RuleResult
	if len(writes) == 0 {
		return res, nil
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	written := 0
	defer func() { db.touch(written) }()
	err := db.update(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		states, tasks := tx.Bucket(bucketRules), tx.Bucket(bucketRuleTsk)
		seq := events.Sequence()
		storedAt := db.now().UnixNano()
		if _, v := events.Cursor().Last(); v != nil {
			if h, err := decodeHeader(v); err == nil && h.storedAt > storedAt {
				storedAt = h.storedAt
			}
		}
		var enc eventEncoder
		res = RuleResult{}
		for _, w := range writes {
			key := u64(uint64(w.TaskID))
			task := w.Task
			if len(task) == 0 {
				task = bytes.Clone(tasks.Get(key))
			}
			if len(task) == 0 {
				task = json.RawMessage(fmt.Sprintf(`{"id":%d}`, w.TaskID))
			}
			for i := range w.Events {
				ev := w.Events[i]
				if len(ev.Type) > 255 {
					return fmt.Errorf("task %d: event %s: type too long", w.TaskID, ev.ID)
				}
				if len(ev.Data.Task) == 0 {
					ev.Data.Task = task
				}
				v := appendHeader(nil, header{taskID: w.TaskID, typ: ev.Type})
				v, at, err := enc.encode(v, &ev)
				if err != nil {
					return fmt.Errorf("task %d: encode %s: %w", w.TaskID, ev.ID, err)
				}
				seq++
				pe := preparedEvent{value: v, at: at}
				v = pe.finish(seq, storedAt)
				written += len(v)
				if err := events.Put(u64(seq), v); err != nil {
					return err
				}
				if res.FirstOffset == 0 {
					res.FirstOffset = seq
					res.Types = make(map[string]int, 2)
				}
				res.LastOffset = seq
				res.Events++
				res.Types[ev.Type]++
			}
			if w.Record == nil {
				if err := states.Delete(key); err != nil {
					return err
				}
				if err := tasks.Delete(key); err != nil {
					return err
				}
				continue
			}
			written += len(w.Record)
			if err := states.Put(key, w.Record); err != nil {
				return err
			}
			if len(w.Task) > 0 {
				written += len(w.Task)
				if err := tasks.Put(key, w.Task); err != nil {
					return err
				}
			}
		}
		if res.Events == 0 {
			return nil
		}
		if err := events.SetSequence(seq); err != nil {
			return err
		}
		return addEventCount(tx, int64(res.Events))
	})
	if err != nil {
		return RuleResult{}, db.wrap("apply rules", err)
	}
	if res.Events > 0 {
		db.wake()
	}
	return res, nil
}

// RuleStates calls fn with every stored rule state record, in task id
// order, in one read transaction. rec is only valid during the call.
func (db *DB) RuleStates(fn func(taskID int64, rec []byte) error) error {
	err := db.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRules).ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return corrupt(db.path, fmt.Errorf("rule state key %x", k))
			}
			return fn(int64(be64(k)), v)
		})
	})
	return db.wrap("rule states", err)
}
