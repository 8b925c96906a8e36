package store

// Per-sink records: cursors, dead letters and the saved sink state.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DeadLetter is an event a sink gave up on. It stays in the outbox (Prune
// keeps it while the sink is among PruneOptions.Sinks) until a Rewind to
// its offset or below redelivers it.
type DeadLetter struct {
	Offset   uint64    `json:"offset"`
	EventID  string    `json:"event_id"`
	Type     string    `json:"type"`
	TaskID   int64     `json:"task_id"`
	Attempts int       `json:"attempts"`
	Error    string    `json:"error"`
	At       time.Time `json:"at"`
}

// SinkState is what the store keeps about a sink besides its cursor.
type SinkState struct {
	Paused         bool      `json:"paused,omitempty"`
	PauseReason    string    `json:"pause_reason,omitempty"`
	LastError      string    `json:"last_error,omitempty"`
	LastErrorAt    time.Time `json:"last_error_at,omitzero"`
	LastDeliveryAt time.Time `json:"last_delivery_at,omitzero"`
}

func checkSink(sink string) error {
	if sink == "" {
		return errors.New("empty sink name")
	}
	return nil
}

// Cursor returns the offset a sink has delivered or dead-lettered through:
// every event at or below it is done. 0 means nothing yet, also for a sink
// the store has never seen.
func (db *DB) Cursor(sink string) (uint64, error) {
	var off uint64
	err := db.view(func(tx *bolt.Tx) error {
		off = cursor(tx, sink)
		return nil
	})
	return off, db.wrap("cursor", err)
}

func cursor(tx *bolt.Tx, sink string) uint64 {
	if v := tx.Bucket(bucketCursors).Get([]byte(sink)); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// SetCursor sets a sink's cursor. It may move backwards (Rewind does so with
// the dead letters too) but not beyond Head. It blocks for one commit.
func (db *DB) SetCursor(sink string, offset uint64) error {
	if err := checkSink(sink); err != nil {
		return db.wrap("set cursor", err)
	}
	err := db.update(func(tx *bolt.Tx) error {
		if head := tx.Bucket(bucketEvents).Sequence(); offset > head {
			return fmt.Errorf("sink %s: offset %d is beyond head %d", sink, offset, head)
		}
		return tx.Bucket(bucketCursors).Put([]byte(sink), u64(offset))
	})
	return db.wrap("set cursor", err)
}

// DeadLetter records that sink gave up on the event at offset after
// attempts tries, failing with lastErr. It does not move the cursor. The
// event must still be stored, else the error wraps ErrNotFound. Recording
// the same offset again replaces the entry.
func (db *DB) DeadLetter(sink string, offset uint64, attempts int, lastErr string) error {
	if err := checkSink(sink); err != nil {
		return db.wrap("dead letter", err)
	}
	err := db.update(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketEvents).Get(u64(offset))
		if v == nil {
			return fmt.Errorf("sink %s: event %d: %w", sink, offset, ErrNotFound)
		}
		h, err := decodeHeader(v)
		if err != nil {
			return corrupt(db.path, fmt.Errorf("event %d: %w", offset, err))
		}
		var ev struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(h.body, &ev); err != nil {
			return corrupt(db.path, fmt.Errorf("event %d: %w", offset, err))
		}
		b, err := tx.Bucket(bucketDead).CreateBucketIfNotExists([]byte(sink))
		if err != nil {
			return err
		}
		dl, err := json.Marshal(DeadLetter{
			Offset:   offset,
			EventID:  ev.ID,
			Type:     string(h.typ),
			TaskID:   h.taskID,
			Attempts: attempts,
			Error:    lastErr,
			At:       db.now().UTC(),
		})
		if err != nil {
			return err
		}
		return b.Put(u64(offset), dl)
	})
	return db.wrap("dead letter", err)
}

// DeadLetters returns a sink's dead letters in offset order.
func (db *DB) DeadLetters(sink string) ([]DeadLetter, error) {
	var out []DeadLetter
	err := db.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDead).Bucket([]byte(sink))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var dl DeadLetter
			if err := json.Unmarshal(v, &dl); err != nil || len(k) != 8 {
				return corrupt(db.path, fmt.Errorf("dead letter of %s: bad entry", sink))
			}
			dl.Offset = binary.BigEndian.Uint64(k)
			out = append(out, dl)
			return nil
		})
	})
	return out, db.wrap("dead letters", err)
}

// SetSinkState replaces a sink's state.
func (db *DB) SetSinkState(sink string, st SinkState) error {
	if err := checkSink(sink); err != nil {
		return db.wrap("set sink state", err)
	}
	b, err := json.Marshal(st)
	if err != nil {
		return db.wrap("set sink state", err)
	}
	return db.wrap("set sink state", db.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSinks).Put([]byte(sink), b)
	}))
}

// SinkState returns a sink's state; the zero SinkState for a sink never set.
func (db *DB) SinkState(sink string) (SinkState, error) {
	var st SinkState
	err := db.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSinks).Get([]byte(sink))
		if v == nil {
			return nil
		}
		if err := json.Unmarshal(v, &st); err != nil {
			return corrupt(db.path, fmt.Errorf("state of sink %s: %w", sink, err))
		}
		return nil
	})
	return st, db.wrap("sink state", err)
}

// Rewind makes a sink deliver again every stored event from offset from on,
// with its original id and offset: in one transaction the cursor becomes
// from-1, the sink's dead letters at or above from are removed (they will
// be delivered again) and Paused is cleared. A from below First (or 0) is
// clamped to First; a from beyond Head+1 to Head+1. A running delivery loop
// must reread its cursor to notice.
func (db *DB) Rewind(sink string, from uint64) error {
	if err := checkSink(sink); err != nil {
		return db.wrap("rewind", err)
	}
	err := db.update(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		head := events.Sequence()
		first := head + 1
		if k, _ := events.Cursor().First(); k != nil {
			first = binary.BigEndian.Uint64(k)
		}
		from = min(max(from, first), head+1)
		if err := tx.Bucket(bucketCursors).Put([]byte(sink), u64(from-1)); err != nil {
			return err
		}
		if dead := tx.Bucket(bucketDead).Bucket([]byte(sink)); dead != nil {
			var drop [][]byte
			c := dead.Cursor()
			for k, _ := c.Seek(u64(from)); k != nil; k, _ = c.Next() {
				drop = append(drop, bytes.Clone(k))
			}
			for _, k := range drop {
				if err := dead.Delete(k); err != nil {
					return err
				}
			}
		}
		sinks := tx.Bucket(bucketSinks)
		var st SinkState
		if v := sinks.Get([]byte(sink)); v != nil {
			if err := json.Unmarshal(v, &st); err != nil {
				return corrupt(db.path, fmt.Errorf("state of sink %s: %w", sink, err))
			}
		}
		st.Paused, st.PauseReason = false, ""
		b, err := json.Marshal(st)
		if err != nil {
			return err
		}
		return sinks.Put([]byte(sink), b)
	})
	return db.wrap("rewind", err)
}
