package jsstore

// Deletions: a task.deleted event for each task a look-up confirmed gone,
// with its seen record removed in the same atomic batch.

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/incs-relay/incs-relay/store"
)

// Delete appends a task.deleted event for each task of ids with a seen
// record and removes the record, each task's event and removal in one
// atomic batch (see store.Ingester). Only the leader deletes; others get
// ErrNotLeader.
func (s *Store) Delete(ctx context.Context, ids []int64, confirmed time.Time) (store.IngestResult, error) {
	res := store.IngestResult{Tasks: len(ids)}
	s.appendMu.Lock()
	defer s.appendMu.Unlock()
	s.drain()
	lead := s.leading()
	if lead == nil {
		return res, fmt.Errorf("jsstore: delete: %w", ErrNotLeader)
	}
	recs := make(map[int64][]byte, len(ids))
	seqs := map[int64]uint64{}
	var apart []int64
	for _, id := range ids {
		e := s.v.seenRecord(id)
		recs[id] = e.rec
		if e.apart {
			apart, seqs[id] = append(apart, id), e.seq
		}
	}
	if len(apart) > 0 {
		full, err := s.fullRecords(ctx, apart, seqs)
		if err != nil {
			return res, fmt.Errorf("jsstore: delete: %w", err)
		}
		maps.Copy(recs, full)
	}
	b := s.newBatcher(lead)
	for _, id := range ids {
		rec := recs[id]
		if rec == nil {
			res.Skipped++
			continue
		}
		off := b.next()
		body, typ, err := store.PrepareDelete(id, rec, confirmed, off)
		if err != nil {
			return res, fmt.Errorf("jsstore: delete: %w", err)
		}
		ev := b.event(id, off, typ, body, b.at)
		if err := b.add(ctx, []evOut{ev}, []outMsg{b.rollupMsg("seen", id, nil)}, func() {
			res.Events++
			res.Changed++
			res.Types = countTypes(res.Types, []evOut{ev})
			if res.FirstOffset == 0 {
				res.FirstOffset = off
			}
			res.LastOffset = off
		}); err != nil {
			return res, err
		}
	}
	if err := b.flush(ctx); err != nil {
		return res, err
	}
	return res, nil
}

// Tracked calls fn with every task with a seen record created at or
// after since (see store.Ingester), from this replica's view.
func (s *Store) Tracked(since int64, fn func(taskID, created int64) bool) error {
	type task struct {
		id int64
		at int64
	}
	var tasks []task
	s.v.mu.RLock()
	for id, e := range s.v.seen {
		at, err := store.SeenCreatedAt(e.rec)
		if err != nil {
			s.v.mu.RUnlock()
			return fmt.Errorf("jsstore: tracked tasks: seen record of task %d: %w", id, err)
		}
		tasks = append(tasks, task{id, at})
	}
	s.v.mu.RUnlock()
	for _, t := range tasks {
		if t.at != 0 && t.at < since {
			continue
		}
		if !fn(t.id, t.at) {
			return nil
		}
	}
	return nil
}
