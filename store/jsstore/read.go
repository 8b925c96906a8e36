// Reads of the outbox (Head, First, Read, Events, Event, OffsetSince,
// RuleStates, Stats): the head and records from this replica's view, the
// events from the stream (outbox.go).

package jsstore

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store"
)

// Head returns the highest offset ever assigned; 0 if none.
func (s *Store) Head() (uint64, error) {
	if err := s.checkOpen("head"); err != nil {
		return 0, err
	}
	s.v.mu.RLock()
	defer s.v.mu.RUnlock()
	return s.v.head, nil
}

// First returns the lowest offset stored; 0 if none.
func (s *Store) First() (uint64, error) {
	if err := s.checkOpen("first"); err != nil {
		return 0, err
	}
	ctx, cancel := s.opCtx()
	defer cancel()
	return s.first(ctx)
}

// first is the lowest offset above the prune floor: the first event
// message starts the lowest (outbox.go), and offsets above the floor are
// dense.
func (s *Store) first(ctx context.Context) (uint64, error) {
	floor, head := s.floorHead()
	m, err := s.fetch(ctx, -1, 1)
	if err != nil || m == nil {
		return 0, err
	}
	if f := max(m.first(), floor+1); f <= head {
		return f, nil
	}
	return 0, nil
}

// decode turns an entry into an event.
func decode(e entry) (diff.Event, error) {
	ev, err := store.DecodeBody(e.body)
	if err != nil {
		return diff.Event{}, fmt.Errorf("jsstore: event %d: %w", e.off, err)
	}
	ev.Offset = e.off
	ev.StoredAt = time.Unix(0, e.at)
	return ev, nil
}

// Read returns up to limit events with offset >= from, in offset order
// (store.DefaultLimit if limit <= 0).
func (s *Store) Read(ctx context.Context, from uint64, limit int) ([]diff.Event, error) {
	return s.Events(ctx, store.EventQuery{From: from, Limit: limit})
}

// Events returns the events matching q, in offset order. A task's events
// are read from its partition's messages only.
func (s *Store) Events(ctx context.Context, q store.EventQuery) ([]diff.Event, error) {
	if err := s.checkOpen("events"); err != nil {
		return nil, err
	}
	if q.Limit <= 0 {
		q.Limit = store.DefaultLimit
	}
	p := -1
	if q.TaskID != 0 {
		p = s.partition(q.TaskID)
	}
	picked, err := s.collect(ctx, p, q.From, q.Limit, func(e *entry) bool {
		return (q.Type == "" || e.typ == q.Type) && (q.TaskID == 0 || e.task == q.TaskID)
	})
	if err != nil {
		return nil, err
	}
	return decodeAll(ctx, picked)
}

func decodeAll(ctx context.Context, es []entry) ([]diff.Event, error) {
	out := make([]diff.Event, 0, len(es))
	for i, e := range es {
		if i%1024 == 1023 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		ev, err := decode(e)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

// Event returns the event at off, or an error wrapping store.ErrNotFound.
func (s *Store) Event(off uint64) (diff.Event, error) {
	if err := s.checkOpen("event"); err != nil {
		return diff.Event{}, err
	}
	ctx, cancel := s.opCtx()
	defer cancel()
	e, ok, err := s.find(ctx, off)
	if err != nil {
		return diff.Event{}, err
	}
	if !ok {
		return diff.Event{}, fmt.Errorf("jsstore: event %d: %w", off, store.ErrNotFound)
	}
	return decode(e)
}

// OffsetSince returns the lowest offset stored at or after t, or Head+1 if
// there is none. Commit times ascend with offsets, so a binary search over
// the event messages finds it.
func (s *Store) OffsetSince(t time.Time) (uint64, error) {
	if err := s.checkOpen("offset since"); err != nil {
		return 0, err
	}
	ctx, cancel := s.opCtx()
	defer cancel()
	return s.offsetSince(ctx, t.UnixNano())
}

func (s *Store) offsetSince(ctx context.Context, want int64) (uint64, error) {
	floor, head := s.floorHead()
	hi := s.lastHeadSeq()
	// The first event message whose last event is at or after want.
	lo, found := uint64(1), (*evMsg)(nil)
	for lo <= hi {
		mid := lo + (hi-lo)/2
		m, err := s.fetch(ctx, -1, mid)
		if err != nil {
			return 0, err
		}
		if m == nil || m.seq > hi {
			hi = mid - 1
			continue
		}
		if m.lastAt() >= want {
			found, hi = m, mid-1
		} else {
			lo = m.seq + 1
		}
	}
	if found == nil {
		return head + 1, nil
	}
	for _, e := range found.evs {
		if e.at >= want {
			return max(e.off, floor+1), nil
		}
	}
	return head + 1, nil
}

// RuleStates calls fn with every stored rule state, in task id order.
func (s *Store) RuleStates(fn func(taskID int64, rec []byte) error) error {
	if err := s.checkOpen("rule states"); err != nil {
		return err
	}
	s.v.mu.RLock()
	ids := make([]int64, 0, len(s.v.rules))
	for id := range s.v.rules {
		ids = append(ids, id)
	}
	recs := make(map[int64][]byte, len(ids))
	for _, id := range ids {
		recs[id] = s.v.rules[id]
	}
	s.v.mu.RUnlock()
	slices.Sort(ids)
	for _, id := range ids {
		if err := fn(id, recs[id]); err != nil {
			return err
		}
	}
	return nil
}

// Stats returns the store's figures; FileSize is the stream's bytes, and
// Events the offsets from First to Head (dense but for events a store
// migrated from bbolt had pruned). Tasks is 0 for a Reader.
func (s *Store) Stats() (store.Stats, error) {
	if err := s.checkOpen("stats"); err != nil {
		return store.Stats{}, err
	}
	ctx, cancel := s.opCtx()
	defer cancel()
	var st store.Stats
	first, err := s.first(ctx)
	if err != nil {
		return st, err
	}
	s.v.mu.RLock()
	st.Head = s.v.head
	st.Tasks = len(s.v.seen)
	s.v.mu.RUnlock()
	if first > 0 {
		st.First = first
		st.Events = int(st.Head - first + 1)
	}
	var info *jetstream.StreamInfo
	if info, err = s.stream.Info(ctx); err == nil {
		st.FileSize = int64(info.State.Bytes)
	}
	return st, nil
}
