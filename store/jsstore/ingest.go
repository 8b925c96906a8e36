// Ingest and IngestAfter: the leader diffs a page of tasks against the
// seen-set and appends each task's new events with its seen record.

package jsstore

import (
	"context"
	"errors"
	"time"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store"
)

// Ingest appends an event for every unseen log of tasks (none when emit is
// false) and marks them seen: each task's events and seen record in one
// atomic batch, fenced by the leader's epoch. Only the leader ingests;
// others get ErrNotLeader.
func (s *Store) Ingest(ctx context.Context, tasks []diff.Task, loc *time.Location, emit bool) (store.IngestResult, error) {
	return s.ingest(ctx, tasks, loc, emit, time.Time{})
}

// IngestAfter is Ingest with emit set, except that logs created before
// boundary are marked seen without an event.
func (s *Store) IngestAfter(ctx context.Context, tasks []diff.Task, loc *time.Location, boundary time.Time) (store.IngestResult, error) {
	return s.ingest(ctx, tasks, loc, true, boundary)
}

// seenRecord returns a task's seen record from the view.
func (v *view) seenRecord(taskID int64) []byte {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.seen[taskID]
}

func (s *Store) ingest(ctx context.Context, tasks []diff.Task, loc *time.Location, emit bool, boundary time.Time) (store.IngestResult, error) {
	res := store.IngestResult{Tasks: len(tasks)}
	lead, unlock, err := s.beginAppendPipelined(ctx, "ingest")
	if err != nil {
		return res, err
	}
	locked := true
	defer func() {
		if locked {
			unlock()
		}
	}()
	prepared, res, perr := store.PrepareIngest(tasks, loc, emit, boundary, s.seenFor)
	var de *store.DiffError
	if perr != nil && !errors.As(perr, &de) {
		return res, perr
	}
	b := s.newBatcher(lead)
	for _, p := range prepared {
		if err := b.addTask(ctx, p, &res); err != nil {
			return res, err
		}
	}
	locked = false
	if err := b.flushPipelined(ctx, unlock); err != nil {
		return res, err
	}
	return res, perr
}

// addTask adds one prepared task: its events and its seen record in one
// batch. A task with more new logs than a batch holds is split; only its
// last batch carries the seen record, so a crash between its batches
// could repeat the first batches' events under new offsets.
func (b *batcher) addTask(ctx context.Context, p store.Prepared, res *store.IngestResult) error {
	seenMsg := b.rollupMsg("seen", p.TaskID(), p.Record())
	var evs []evOut
	first, last := uint64(0), uint64(0)
	unit := func(evs []evOut, msgs []outMsg, first, last uint64, changed bool) error {
		n := len(evs)
		return b.add(ctx, evs, msgs, func() {
			res.Events += n
			res.Types = countTypes(res.Types, evs)
			if changed {
				res.Changed++
			}
			if first > 0 && res.FirstOffset == 0 {
				res.FirstOffset = first
			}
			if last > 0 {
				res.LastOffset = last
			}
		})
	}
	for i := range p.Len() {
		if len(evs)+2 > MaxBatch-1 {
			// A giant task: commit what fits without its seen record.
			if err := unit(evs, nil, first, last, false); err != nil {
				return err
			}
			if err := b.flush(ctx); err != nil {
				return err
			}
			evs, first = nil, 0
		}
		off := b.next()
		body, typ := p.Event(i, off)
		evs = append(evs, b.event(p.TaskID(), off, typ, body, b.at))
		if first == 0 {
			first = off
		}
		last = off
	}
	return unit(evs, []outMsg{seenMsg}, first, last, true)
}
