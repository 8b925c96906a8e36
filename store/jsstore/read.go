// Reads of the outbox from this replica's view (Head, First, Read,
// Events, Event, OffsetSince, RuleStates, Stats) and Prune.

package jsstore

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

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
	s.v.mu.RLock()
	defer s.v.mu.RUnlock()
	if len(s.v.events) == 0 {
		return 0, nil
	}
	return s.v.events[0].off, nil
}

// decode turns a tailed entry into an event; its body must be loaded.
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

// Events returns the events matching q, in offset order.
func (s *Store) Events(ctx context.Context, q store.EventQuery) ([]diff.Event, error) {
	if err := s.checkOpen("events"); err != nil {
		return nil, err
	}
	if q.Limit <= 0 {
		q.Limit = store.DefaultLimit
	}
	var picked []entry
	s.v.mu.RLock()
	for i := s.v.find(q.From); i < len(s.v.events) && len(picked) < q.Limit; i++ {
		e := s.v.events[i]
		if q.Type != "" && e.typ != q.Type || q.TaskID != 0 && e.task != q.TaskID {
			continue
		}
		picked = append(picked, e)
	}
	s.v.mu.RUnlock()
	return s.decodeAll(ctx, picked)
}

// loadBodies fills in the bodies the view no longer caches (see
// maxCachedBodies) from the stream, a few requests at a time.
func (s *Store) loadBodies(ctx context.Context, es []entry) error {
	var (
		wg    sync.WaitGroup
		slots = make(chan struct{}, 8)
		errMu sync.Mutex
		first error
	)
	for i := range es {
		if es[i].body != nil {
			continue
		}
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			m, err := s.stream.GetMsg(ctx, es[i].seq)
			if err == nil {
				err = parseFrames(m.Data, func(off uint64, _, _ int64, _ string, body []byte) {
					if off == es[i].off {
						es[i].body = body
					}
				})
			}
			if err == nil && es[i].body == nil {
				err = store.ErrNotFound
			}
			if err != nil {
				errMu.Lock()
				first = cmp.Or(first, fmt.Errorf("jsstore: event %d: %w", es[i].off, err))
				errMu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

func (s *Store) decodeAll(ctx context.Context, es []entry) ([]diff.Event, error) {
	if err := s.loadBodies(ctx, es); err != nil {
		return nil, err
	}
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
	s.v.mu.RLock()
	e, ok := s.v.get(off)
	s.v.mu.RUnlock()
	if !ok {
		return diff.Event{}, fmt.Errorf("jsstore: event %d: %w", off, store.ErrNotFound)
	}
	ctx, cancel := s.opCtx()
	defer cancel()
	evs, err := s.decodeAll(ctx, []entry{e})
	if err != nil {
		return diff.Event{}, err
	}
	return evs[0], nil
}

// OffsetSince returns the lowest offset stored at or after t, or Head+1 if
// there is none.
func (s *Store) OffsetSince(t time.Time) (uint64, error) {
	if err := s.checkOpen("offset since"); err != nil {
		return 0, err
	}
	want := t.UnixNano()
	s.v.mu.RLock()
	defer s.v.mu.RUnlock()
	i, _ := slices.BinarySearchFunc(s.v.events, want, func(e entry, w int64) int {
		if e.at < w {
			return -1
		}
		return 1
	})
	if i < len(s.v.events) {
		return s.v.events[i].off, nil
	}
	return s.v.head + 1, nil
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

// Stats returns the store's figures; FileSize is the stream's bytes.
func (s *Store) Stats() (store.Stats, error) {
	if err := s.checkOpen("stats"); err != nil {
		return store.Stats{}, err
	}
	var st store.Stats
	s.v.mu.RLock()
	st.Head = s.v.head
	if len(s.v.events) > 0 {
		st.First = s.v.events[0].off
	}
	st.Events = len(s.v.events)
	st.Tasks = len(s.v.seen)
	s.v.mu.RUnlock()
	ctx, cancel := s.opCtx()
	defer cancel()
	if info, err := s.stream.Info(ctx); err == nil {
		st.FileSize = int64(info.State.Bytes)
	}
	return st, nil
}

// Prune deletes events every sink in p.Sinks has passed, that are no
// sink's dead letter and that are older than p.Retention, and (on the
// leader only, as an append) seen records of tasks created more than
// p.Lookback+24h ago. Every replica drops the deleted events from its view
// when it reads the prune note that follows the deletions.
func (s *Store) Prune(ctx context.Context, p store.PruneOptions) (store.PruneResult, error) {
	var res store.PruneResult
	if err := s.checkOpen("prune"); err != nil {
		return res, err
	}
	now := p.Now
	if now.IsZero() {
		now = s.o.Now()
	}
	if p.Retention > 0 {
		n, err := s.pruneEvents(ctx, p.Sinks, now.Add(-p.Retention).UnixNano())
		res.Events = n
		if err != nil {
			return res, err
		}
	}
	if p.Lookback > 0 && s.IsLeader() {
		n, err := s.pruneSeen(ctx, now.Add(-p.Lookback-24*time.Hour).Unix())
		res.Tasks = n
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

func (s *Store) pruneEvents(ctx context.Context, sinks []string, cutoff int64) (int, error) {
	upto := uint64(0)
	s.v.mu.RLock()
	upto = s.v.head
	s.v.mu.RUnlock()
	for _, sink := range sinks {
		c, err := s.Cursor(sink)
		if err != nil {
			return 0, err
		}
		upto = min(upto, c)
	}
	dead := map[uint64]bool{}
	s.state.prefixed(keyDead, func(key string, _ []byte) {
		if i := strings.LastIndexByte(key, '.'); i >= 0 {
			if off, err := strconv.ParseUint(key[i+1:], 10, 64); err == nil {
				dead[off] = true
			}
		}
	})
	var victims []entry
	left := map[uint64]int{} // event message -> its events still in the view
	s.v.mu.RLock()
	for _, e := range s.v.events {
		left[e.seq]++
	}
	for _, e := range s.v.events {
		if e.off > upto || e.at >= cutoff {
			break
		}
		if !dead[e.off] {
			victims = append(victims, e)
			left[e.seq]--
		}
	}
	s.v.mu.RUnlock()
	if len(victims) == 0 {
		return 0, nil
	}
	// An event message goes once none of its events is left; the prune
	// note drops the others from every view, also when a replica reads
	// the stream again from the start.
	var note pruneNote
	n := 0
	for i, e := range victims {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				break
			}
		}
		if left[e.seq] == 0 {
			left[e.seq] = -1 // deleted
			if err := s.stream.DeleteMsg(ctx, e.seq); err != nil {
				s.log.Debug().Err(err).Uint64("offset", e.off).Msg("jsstore: prune")
			}
		}
		if k := len(note.Ranges); k > 0 && note.Ranges[k-1][1]+1 == e.off {
			note.Ranges[k-1][1] = e.off
		} else {
			note.Ranges = append(note.Ranges, [2]uint64{e.off, e.off})
		}
		n++
	}
	body, _ := json.Marshal(note)
	ack, err := s.js.Publish(ctx, s.subj+"pruned", body)
	if err != nil {
		return 0, fmt.Errorf("jsstore: prune: %w", err)
	}
	if err := s.v.waitApplied(ctx, ack.Sequence); err != nil {
		return n, err
	}
	return n, ctx.Err()
}

// pruneSeen deletes, in fenced batches, the seen records of tasks created
// before cutoff (unix seconds).
func (s *Store) pruneSeen(ctx context.Context, cutoff int64) (int, error) {
	var ids []int64
	s.v.mu.RLock()
	for id, rec := range s.v.seen {
		if at, err := store.SeenCreatedAt(rec); err == nil && at != 0 && at < cutoff {
			ids = append(ids, id)
		}
	}
	s.v.mu.RUnlock()
	if len(ids) == 0 {
		return 0, nil
	}
	slices.Sort(ids)
	s.appendMu.Lock()
	defer s.appendMu.Unlock()
	s.drain()
	lead := s.leading()
	if lead == nil {
		return 0, nil
	}
	b := s.newBatcher(lead)
	n := 0
	for _, id := range ids {
		if err := b.add(ctx, nil, []outMsg{b.rollupMsg("seen", id, nil)}, func() { n++ }); err != nil {
			return n, err
		}
	}
	err := b.flush(ctx)
	return n, err
}
