package store

// The ingest pipeline exported for other backends: diff against a seen
// record and encode events as the outbox stores them.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/incs-relay/incs-relay/diff"
)

// This file exports the store's ingest pipeline (diff against a seen
// record, encode the events exactly as the outbox stores them) for other
// backends that commit the result themselves, e.g. store/jsstore.

// collectPending groups tasks by id, reading each task's seen record once
// with get. Tasks whose logs are all seen are only counted; the others are
// returned in order of first appearance, with their repeats. The whole
// records of those whose record get returned without its values
// (RecordApart) come from whole, asked once for all of them; a nil whole
// refuses such records.
func collectPending(tasks []diff.Task, get func(taskID int64) []byte, whole func(ids []int64) (map[int64][]byte, error)) (pending []*pendingTask, skipped int, err error) {
	var (
		scratch seenRecord
		ids     []int64
		byID    map[int64]*pendingTask
		apart   []int64 // pending tasks whose record came without its values
	)
	for i := range tasks {
		t := &tasks[i]
		if p := byID[t.ID]; p != nil {
			p.occ = append(p.occ, t)
			continue
		}
		ids = logIDs(t, ids[:0])
		v := get(t.ID)
		if v != nil {
			if err := decodeRecord(v, &scratch); err != nil {
				return nil, 0, fmt.Errorf("seen record of task %d: %w", t.ID, err)
			}
		} else {
			scratch.IDs, scratch.V2 = scratch.IDs[:0], false
		}
		if v != nil && unchanged(t, ids, &scratch) {
			skipped++
			continue
		}
		p := &pendingTask{id: t.ID, occ: []*diff.Task{t}}
		switch {
		case v != nil && scratch.Apart && whole == nil:
			return nil, 0, fmt.Errorf("task %d: %w", t.ID, errApart)
		case v != nil && scratch.Apart:
			apart = append(apart, t.ID)
		case v != nil:
			p.setBase(v, &scratch)
		}
		if byID == nil {
			byID = make(map[int64]*pendingTask)
		}
		byID[t.ID] = p
		pending = append(pending, p)
	}
	if len(apart) == 0 {
		return pending, skipped, nil
	}
	full, err := whole(apart)
	if err != nil {
		return nil, 0, err
	}
	for _, id := range apart {
		v := full[id]
		if v == nil {
			return nil, 0, fmt.Errorf("task %d: %w", id, errApart)
		}
		if err := decodeRecord(v, &scratch); err != nil {
			return nil, 0, fmt.Errorf("seen record of task %d: %w", id, err)
		}
		if scratch.Apart {
			return nil, 0, fmt.Errorf("task %d: %w", id, errApart)
		}
		byID[id].setBase(v, &scratch)
	}
	return pending, skipped, nil
}

// setBase makes seen record v, decoded in r, what p is diffed against.
func (p *pendingTask) setBase(v []byte, r *seenRecord) {
	p.snap = bytes.Clone(v)
	p.base = seenRecord{CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, IDs: slices.Clone(r.IDs),
		V2: r.V2, LogsAt: r.LogsAt, Hot: r.Hot, Rest: slices.Clone(r.Rest)}
}

// unchanged reports whether t, whose distinct log ids are ids, is as its
// (version 2) seen record last saw it: every log seen, the same
// updated_at, and the same newest log updated_at (a comment edit moves
// its log's; whether it moves the task's is not documented). A version-1
// record is never unchanged: its values are recorded on the first read;
// nor is a hot one (read within seconds of its last change, which may
// have changed again within the same second).
func unchanged(t *diff.Task, ids []int64, r *seenRecord) bool {
	return r.V2 && !r.Hot && t.UpdatedAt == r.UpdatedAt && newestLogAt(t) == r.LogsAt && allSeen(ids, r.IDs)
}

// newestLogAt returns the newest updated_at among t's logs (the API's
// layout sorts as text), or "".
func newestLogAt(t *diff.Task) string {
	var at string
	for i := range t.Logs {
		at = max(at, t.Logs[i].UpdatedAt)
	}
	return at
}

// Prepared is one task's share of an ingest: its new seen record and its
// new logs' events, encoded but for their offsets and commit time.
type Prepared struct {
	p *pendingTask
}

// TaskID returns the task's id.
func (p Prepared) TaskID() int64 { return p.p.id }

// Record returns the task's seen record to store: the one it was prepared
// against plus the logs it marks seen.
func (p Prepared) Record() []byte { return p.p.rec }

// Len returns the number of events, in the order they are to be stored:
// the new logs' events, then the changes that left no log.
func (p Prepared) Len() int { return len(p.p.events) + len(p.p.edits) }

// Event returns the i-th event's body with offset off (the JSON exactly as
// the bbolt outbox stores it) and its type. Call it once per event: it
// completes the encoding in place.
func (p Prepared) Event(i int, off uint64) (body []byte, typ string) {
	e := p.p.event(i)
	v := e.finish(off, 0)
	h, err := decodeHeader(v)
	if err != nil {
		panic("store: prepared event without header") // appendHeader wrote it
	}
	return h.body, string(h.typ)
}

// PrepareIngest does an Ingest's work short of the commit: it diffs tasks
// against the seen records get returns (nil for a task never seen) and
// encodes the new logs' events, as Ingest (emit) and IngestAfter
// (boundary) would. The result has Tasks, Skipped and Failed set; the
// caller commits each Prepared whole and fills in the rest. The error is a
// *DiffError naming tasks left out (the others are still returned), or a
// decode error of a seen record. A backend whose get returns records
// without their values (RecordApart) passes whole, which returns the
// whole records of the tasks that changed, asked once a call; others pass
// nil.
func PrepareIngest(tasks []diff.Task, loc *time.Location, emit bool, boundary time.Time, get func(taskID int64) []byte, whole func(ids []int64) (map[int64][]byte, error)) ([]Prepared, IngestResult, error) {
	res := IngestResult{Tasks: len(tasks)}
	if loc == nil {
		return nil, res, errors.New("store: ingest: nil location")
	}
	pending, skipped, err := collectPending(tasks, get, whole)
	if err != nil {
		return nil, res, fmt.Errorf("store: ingest: %w", err)
	}
	res.Skipped = skipped
	forEach(len(pending), func(i int) { pending[i].prepare(loc, emit, boundary) })
	kept, diffErr := keepPrepared(pending, &res)
	out := make([]Prepared, len(kept))
	for i, p := range kept {
		out[i] = Prepared{p}
	}
	return out, res, diffErr
}

// keepPrepared returns the prepared tasks with logs to mark seen, counts
// skipped and failed ones in res, and reports the failed ones as a
// *DiffError.
func keepPrepared(pending []*pendingTask, res *IngestResult) ([]*pendingTask, error) {
	var failedIDs []int64
	var failErrs []error
	kept := pending[:0]
	for _, p := range pending {
		res.Skipped += p.skipped
		if len(p.errs) > 0 {
			failedIDs = append(failedIDs, p.id)
			failErrs = append(failErrs, p.errs...)
		}
		if p.rec != nil {
			kept = append(kept, p)
		}
	}
	if len(failedIDs) > 0 {
		// A task that failed in one repeat but diffed in another is still
		// reported: the failed repeat's logs stay unseen.
		res.Failed = len(failedIDs)
		return kept, &DiffError{TaskIDs: failedIDs, Err: errors.Join(failErrs...)}
	}
	return kept, nil
}

// EncodeEvent returns ev's JSON with offset off, byte for byte as the
// outbox stores it (json.Marshal's encoding).
func EncodeEvent(ev *diff.Event, off uint64) ([]byte, error) {
	var enc eventEncoder
	b, at, err := enc.encode(nil, ev)
	if err != nil {
		return nil, err
	}
	return patchOffset(b, at, off), nil
}

// SeenCreatedAt returns the task creation time (unix seconds, 0 if
// unknown) kept in a seen record, which Prune's lookback compares.
func SeenCreatedAt(rec []byte) (int64, error) {
	var r seenRecord
	return recordCreatedAt(rec, &r)
}

// DecodeBody decodes an event body as the outbox stores it. The event
// keeps body as its Body, and its strings share body's memory: body must
// not be modified afterwards. StoredAt is left for the caller.
func DecodeBody(body []byte) (diff.Event, error) {
	var ev diff.Event
	if !decodeEventFast(&ev, body) {
		ev = diff.Event{}
		if err := json.Unmarshal(body, &ev); err != nil {
			return diff.Event{}, err
		}
	}
	ev.Body = body
	return ev, nil
}
