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

// seenRecord returns a task's seen record as the view keeps it (see
// seenEnt).
func (v *view) seenRecord(taskID int64) seenEnt {
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
	// Each task's seen record as the next batch must see it (seenFor);
	// the view keeps records without their values, so those of the tasks
	// that changed are fetched whole, at the sequence seen here.
	seqs := map[int64]uint64{}
	get := func(id int64) []byte {
		e := s.seenFor(id)
		if e.apart {
			seqs[id] = e.seq
		}
		return e.rec
	}
	whole := func(ids []int64) (map[int64][]byte, error) { return s.fullRecords(ctx, ids, seqs) }
	var prepared []store.Prepared
	var perr error
	store.LabelDiff(ctx, func() {
		prepared, res, perr = store.PrepareIngest(tasks, loc, emit, boundary, get, whole)
	})
	var de *store.DiffError
	if perr != nil && !errors.As(perr, &de) {
		return res, perr
	}
	b := s.newBatcher(lead)
	for i, p := range prepared {
		if err := b.addTask(ctx, p, &res); err != nil {
			return res, err
		}
		prepared[i] = store.Prepared{} // its events are the batch's now; once packed, free to go
	}
	if err := b.compact(ctx); err != nil {
		return res, err
	}
	locked = false
	if err := b.flushPipelined(ctx, unlock); err != nil {
		return res, err
	}
	return res, perr
}

// addTask adds one prepared task whole: its events and its seen record go
// in one atomic batch, however many new logs it has (add packs its events
// into as few messages as fit and closes batches only between tasks), so
// a crash between an Ingest's batches leaves each task stored entirely or
// not at all, and the next leader emits its logs once, at fresh offsets.
func (b *batcher) addTask(ctx context.Context, p store.Prepared, res *store.IngestResult) error {
	n := p.Len()
	evs := make([]evOut, n)
	for i := range n {
		off := b.next()
		body, typ := p.Event(i, off)
		evs[i] = b.event(p.TaskID(), off, typ, body, b.at)
	}
	return b.add(ctx, evs, []outMsg{b.rollupMsg("seen", p.TaskID(), p.Record())}, func() {
		res.Events += n
		res.Types = countTypes(res.Types, evs)
		res.Changed++
		if n > 0 {
			if res.FirstOffset == 0 {
				res.FirstOffset = evs[0].off
			}
			res.LastOffset = evs[n-1].off
		}
	})
}
