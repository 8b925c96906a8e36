// Fenced handoff of a partition's delivery: each (sink, partition) cursor
// record in the state bucket carries its owner and an owner generation,
// and every write of it is a compare-and-set on its revision. A replica
// takes a partition (Claim) only when its record is released, or its
// owner's membership lapsed; it writes its cursor (SetCursorAs) only while
// the record still names it at its generation, and gives the partition up
// (Release) after its dispatcher stopped and wrote its last cursor. An
// operator's cursor write (SetCursor, Rewind) keeps the owner and bumps
// the generation, which the owner tells from being fenced by the owner
// name. sink/partition drives these through its Assignment interface.

package jsstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// cursorRec is a sink's cursor record in one partition, the value of
// cur.<sink>.<partition>. A record written before owners existed is a
// bare offset: released, generation 0.
type cursorRec struct {
	Off   uint64 `json:"off"`             // every event of the partition at or below it is done
	Owner string `json:"owner,omitempty"` // the replica delivering the partition, "" when released
	Gen   uint64 `json:"gen"`             // bumped by every Claim and every operator's write
	// Done lists the offsets above Off the owner already delivered or
	// dead-lettered (they wait on an earlier event of another task), so
	// that the next owner skips them.
	Done []uint64 `json:"done,omitempty"`
}

func parseCursorRec(v []byte) cursorRec {
	var r cursorRec
	if len(v) > 0 && v[0] == '{' {
		_ = json.Unmarshal(v, &r)
		return r
	}
	r.Off, _ = strconv.ParseUint(string(v), 10, 64)
	return r
}

// cursorRecord returns the record of key as this replica knows it, its
// revision, and whether the key holds a value (else it is created).
func (s *Store) cursorRecord(key string) (rec cursorRec, rev uint64, live bool) {
	s.state.mu.RLock()
	e, ok := s.state.keys[key]
	s.state.mu.RUnlock()
	if !ok || e.deleted {
		return cursorRec{}, 0, false
	}
	return parseCursorRec(e.val), e.rev, true
}

// casAttempts bounds casState's rounds when the record keeps changing
// under it.
const casAttempts = 5

// updateCursor writes fn's record over the sink's record in partition p,
// compare-and-set on the record's revision (casState): fn sees the
// record as last known and returns the record to write, or false to
// write nothing. It returns the record now stored and whether fn's was
// written.
func (s *Store) updateCursor(sink string, p int, fn func(cur cursorRec) (cursorRec, bool)) (cursorRec, bool, error) {
	var rec cursorRec
	written, err := s.casState(cursorKey(sink, p), func(v []byte, _ bool) ([]byte, bool) {
		cur := parseCursorRec(v)
		next, write := fn(cur)
		if !write {
			rec = cur
			return nil, false
		}
		rec = next
		val, _ := json.Marshal(next)
		return val, true
	})
	return rec, written, err
}

// casState writes fn's value over key in the state bucket,
// compare-and-set on the key's revision: fn sees the value as this
// replica last knew it (live false: none, or deleted) and returns the
// value to write, or false to write nothing. When the key changed
// meanwhile it is read again from the server and fn asked again, up to
// casAttempts times. It reports whether fn's value was written.
func (s *Store) casState(key string, fn func(cur []byte, live bool) ([]byte, bool)) (bool, error) {
	s.state.mu.RLock()
	e, ok := s.state.keys[key]
	s.state.mu.RUnlock()
	cur, rev, live := e.val, e.rev, ok && !e.deleted
	if !live {
		cur, rev = nil, 0
	}
	for attempt := 1; ; attempt++ {
		val, write := fn(cur, live)
		if !write {
			return false, nil
		}
		ctx, cancel := s.opCtx()
		var nrev uint64
		var err error
		if live {
			nrev, err = s.stateKV.Update(ctx, key, val, rev)
		} else {
			nrev, err = s.stateKV.Create(ctx, key, val)
		}
		cancel()
		if err == nil {
			s.state.set(key, val, nrev, false)
			return true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) || attempt == casAttempts {
			return false, err
		}
		// This replica's copy is behind the key: read it.
		ctx, cancel = s.opCtx()
		got, err := s.stateKV.Get(ctx, key)
		cancel()
		switch {
		case err == nil:
			s.state.set(key, got.Value(), got.Revision(), false)
			cur, rev, live = got.Value(), got.Revision(), true
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
			cur, rev, live = nil, 0, false
		default:
			return false, err
		}
	}
}

// CursorOf returns the sink's cursor record in partition p as this replica
// knows it: the cursor, the offsets above it already done, the replica
// delivering it ("" when released) and its owner generation.
func (s *Store) CursorOf(sink string, p int) (offset uint64, done []uint64, owner string, gen uint64, err error) {
	if err := s.checkOpen("cursor"); err != nil {
		return 0, nil, "", 0, err
	}
	rec, _, _ := s.cursorRecord(cursorKey(sink, p))
	return rec.Off, rec.Done, rec.Owner, rec.Gen, nil
}

// Claim makes this replica the owner of the sink's partition p if nobody
// else delivers it: its record is released (or new), names this replica,
// or names a replica whose membership lapsed (killed, cut off). It bumps
// the generation and returns it; ok is false, and nothing written, while
// another live replica holds the partition. The cursor to start from is
// the record's (CursorOf), as the last owner left it.
func (s *Store) Claim(sink string, p int) (gen uint64, ok bool, err error) {
	if err := s.checkOpen("claim"); err != nil {
		return 0, false, err
	}
	if err := checkSink(sink); err != nil {
		return 0, false, fmt.Errorf("jsstore: claim: %w", err)
	}
	self := s.o.ReplicaID
	members := s.Role().Members
	lapsed := map[string]bool{}
	rec, ok, err := s.updateCursor(sink, p, func(cur cursorRec) (cursorRec, bool) {
		if cur.Owner != "" && cur.Owner != self {
			if slices.Contains(members, cur.Owner) {
				return cur, false // live as of the last refresh
			}
			gone, known := lapsed[cur.Owner]
			if !known {
				gone = s.memberLapsed(cur.Owner)
				lapsed[cur.Owner] = gone
			}
			if !gone {
				return cur, false
			}
		}
		return cursorRec{Off: cur.Off, Owner: self, Gen: cur.Gen + 1, Done: cur.Done}, true
	})
	if err != nil {
		return 0, false, fmt.Errorf("jsstore: claim: sink %s partition %d: %w", sink, p, err)
	}
	if ok {
		s.log.Debug().Str("sink", sink).Int("partition", p).Uint64("gen", rec.Gen).Uint64("cursor", rec.Off).Msg("jsstore: partition claimed")
	}
	return rec.Gen, ok, nil
}

// memberLapsed reports whether the replica's membership key is gone, read
// from the server (an error counts as not lapsed).
func (s *Store) memberLapsed(id string) bool {
	ctx, cancel := s.opCtx()
	defer cancel()
	_, err := s.members.Get(ctx, id)
	return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted)
}

// SetCursorAs stores offset as the sink's cursor in partition p, with the
// offsets above it already done, but only while the record names this
// replica at generation gen. Otherwise it
// stores nothing and returns ok false with the record's owner and
// generation now: this replica at a later generation after an operator's
// rewind (read the cursor again), or another owner, or released (fenced:
// deliver nothing more).
func (s *Store) SetCursorAs(sink string, p int, gen, offset uint64, done []uint64) (ok bool, owner string, now uint64, err error) {
	if err := s.checkOpen("set cursor"); err != nil {
		return false, "", 0, err
	}
	self := s.o.ReplicaID
	rec, ok, err := s.updateCursor(sink, p, func(cur cursorRec) (cursorRec, bool) {
		if cur.Owner != self || cur.Gen != gen {
			return cur, false
		}
		return cursorRec{Off: offset, Owner: self, Gen: gen, Done: done}, cur.Off != offset || !slices.Equal(cur.Done, done)
	})
	if err != nil {
		return false, "", 0, fmt.Errorf("jsstore: set cursor: sink %s partition %d: %w", sink, p, err)
	}
	if !ok && rec.Owner == self && rec.Gen == gen {
		ok = true // already there
	}
	return ok, rec.Owner, rec.Gen, nil
}

// Release gives up this replica's hold of the sink's partition p, taken
// at generation gen (or moved on since by an operator's rewind), keeping
// its cursor: call it after the partition's dispatcher stopped and wrote
// its last cursor. It does nothing when another replica holds the
// partition.
func (s *Store) Release(sink string, p int, gen uint64) error {
	if err := s.checkOpen("release"); err != nil {
		return err
	}
	self := s.o.ReplicaID
	_, _, err := s.updateCursor(sink, p, func(cur cursorRec) (cursorRec, bool) {
		if cur.Owner != self || cur.Gen < gen {
			return cur, false
		}
		return cursorRec{Off: cur.Off, Gen: cur.Gen, Done: cur.Done}, true
	})
	if err != nil {
		return fmt.Errorf("jsstore: release: sink %s partition %d: %w", sink, p, err)
	}
	return nil
}
