package store

// Ingest: diffing a page of tasks against the seen-set and appending
// their events and seen marks in one transaction.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/incs-relay/incs-relay/diff"
)

// IngestResult summarizes one Ingest call.
type IngestResult struct {
	Events  int // events appended
	Tasks   int // tasks in the batch, repeats included
	Changed int // distinct tasks that had unseen logs; their seen record was written
	Skipped int // tasks (repeats included) without unseen logs: no seen-set work
	Failed  int // distinct tasks left out because their logs did not diff

	// FirstOffset and LastOffset are the offsets of the first and last
	// event appended; both 0 if none was.
	FirstOffset, LastOffset uint64
	// Types counts the events appended by type; nil if none was.
	Types map[string]int
}

// DiffError is returned by Ingest when some tasks' logs could not be turned
// into events (e.g. a created_at that does not parse). The rest of the batch
// was committed; these tasks' logs stay unseen, so a later poll retries them.
type DiffError struct {
	TaskIDs []int64 // tasks left out, in batch order
	Err     error   // the joined diff errors, one per task
}

// Error names the tasks and their diff errors.
func (e *DiffError) Error() string {
	ids := make([]string, len(e.TaskIDs))
	for i, id := range e.TaskIDs {
		ids[i] = strconv.FormatInt(id, 10)
	}
	return fmt.Sprintf("store: ingest: tasks %s left unseen: %v", strings.Join(ids, ","), e.Err)
}

// Unwrap returns the joined diff errors.
func (e *DiffError) Unwrap() error { return e.Err }

// Ingest diffs tasks against the seen-set and, in one write transaction,
// appends an event for every unseen log and marks those logs seen, so each
// log becomes exactly one event. Offsets are assigned from 1, strictly
// increasing and never reused; within one task they follow log id order.
// Times are read in loc, which must not be nil.
//
// With emit false (the first, "snapshot", sweep) unseen logs are only marked
// seen and no events are appended.
//
// Ingest is idempotent: a log already seen, also one repeated in the batch
// or ingested by a concurrent call, never gets a second event. A task whose
// logs fail to diff is left out with its logs unseen; the rest is committed
// and the error is a *DiffError naming the tasks. Tasks whose logs are all
// seen cost one lookup and no write.
//
// The diff and JSON encoding run outside the write lock; concurrent calls are
// committed together (group commit), one fsync for all. Ingest blocks until
// the commit is durable and then wakes every Notify channel. It returns
// ctx.Err() without committing if ctx ends before the batch is queued for
// commit; a queued commit is not interrupted.
func (db *DB) Ingest(ctx context.Context, tasks []diff.Task, loc *time.Location, emit bool) (IngestResult, error) {
	return db.ingest(ctx, tasks, loc, emit, time.Time{})
}

// IngestAfter is Ingest with emit set, but a log created before boundary
// (its created_at read in loc) is marked seen without an event: the
// snapshot boundary of a relay's first start (poll.initial: snapshot),
// which holds for a log found in any later sweep too. A log whose
// created_at does not parse gets its event. A zero boundary is Ingest with
// emit set.
func (db *DB) IngestAfter(ctx context.Context, tasks []diff.Task, loc *time.Location, boundary time.Time) (IngestResult, error) {
	return db.ingest(ctx, tasks, loc, true, boundary)
}

func (db *DB) ingest(ctx context.Context, tasks []diff.Task, loc *time.Location, emit bool, boundary time.Time) (IngestResult, error) {
	res := IngestResult{Tasks: len(tasks)}
	if loc == nil {
		return res, errors.New("store: ingest: nil location")
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	pending, skipped, err := db.snapshotSeen(tasks)
	if err != nil {
		return res, err
	}
	res.Skipped = skipped

	LabelDiff(ctx, func() {
		forEach(len(pending), func(i int) { pending[i].prepare(loc, emit, boundary) })
	})

	kept, diffErr := keepPrepared(pending, &res)
	if len(kept) == 0 {
		return res, diffErr
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	req := &ingestReq{tasks: kept, wake: make(chan bool, 1)}
	if err := db.groupCommit(req); err != nil {
		return res, err
	}
	res.Events, res.Changed = req.events, req.changed
	res.FirstOffset, res.LastOffset, res.Types = req.first, req.last, req.types
	return res, diffErr
}

// diffLabel is the pprof label of diffing a page against the seen-set
// and encoding its events: the stage "diff" of a CPU profile.
var diffLabel = pprof.Labels("stage", "diff")

// LabelDiff runs fn, a page's diffing, labelled as the stage "diff" of a
// CPU profile (incs-relay bench's stage shares); the labels of ctx come
// back after. Both stores' ingests use it.
func LabelDiff(ctx context.Context, fn func()) {
	pprof.Do(ctx, diffLabel, func(context.Context) { fn() })
}

// pendingTask is a task of the batch that changed since the snapshot:
// new logs, new values, or a record of version 1.
type pendingTask struct {
	id   int64
	snap []byte     // its seen record when the snapshot was taken; nil if none
	base seenRecord // snap decoded
	occ  []*diff.Task

	// Set by prepare.
	createdAt int64
	updatedAt string
	logsAt    string  // newest log updated_at
	hot       bool    // read within hotSeconds of its last change
	newIDs    []int64 // log ids to mark seen, strictly increasing
	events    []preparedEvent
	edits     []preparedEvent // changes that left no log, after events
	before    []byte          // the record's rest: the diff.Before to keep
	rec       []byte          // the record to write: base plus newIDs; nil if nothing changed
	skipped   int             // occurrences without changes
	errs      []error         // diff errors of occurrences left out
}

// event returns the i-th event to store: events, then edits.
func (p *pendingTask) event(i int) *preparedEvent {
	if i < len(p.events) {
		return &p.events[i]
	}
	return &p.edits[i-len(p.events)]
}

// prepare diffs and encodes p's occurrences: the work done outside the
// write lock. Logs of an occurrence that fails to diff stay unseen.
func (p *pendingTask) prepare(loc *time.Location, emit bool, boundary time.Time) {
	var (
		ids, quiet []int64
		before     *diff.Before
	)
	if p.base.V2 {
		b, err := decodeBefore(p.base.Rest)
		if err != nil {
			p.errs = append(p.errs, fmt.Errorf("task %d: seen record: %w", p.id, err))
			p.occ = nil
			return
		}
		b.UpdatedAt = p.base.UpdatedAt
		before = &b
	}
	contributed := 0
	for _, t := range p.occ {
		ids = unseenLogIDs(t, &p.base, p.newIDs, ids[:0])
		if len(ids) == 0 && before != nil && !p.base.Hot && t.UpdatedAt == before.UpdatedAt && newestLogAt(t) == p.logsAtOr() {
			p.skipped++
			continue
		}
		var evs []preparedEvent
		if emit && len(ids) > 0 {
			quiet = quietLogIDs(t, ids, loc, boundary, quiet[:0])
			var err error
			if evs, err = prepareEvents(t, &p.base, p.newIDs, quiet, loc, len(ids)-len(quiet)); err != nil {
				p.errs = append(p.errs, err)
				continue
			}
		}
		isNew := func(id int64) bool { _, ok := slices.BinarySearch(ids, id); return ok }
		seen := func(id int64) bool {
			if p.base.has(id) || isNew(id) {
				return true
			}
			_, ok := slices.BinarySearch(p.newIDs, id)
			return ok
		}
		edits, after, err := diff.Edits(t, before, seen, isNew, loc)
		if err != nil {
			p.errs = append(p.errs, err)
			continue
		}
		var encoded []preparedEvent
		if emit && len(edits) > 0 {
			if encoded, err = encodeEvents(t.ID, edits); err != nil {
				p.errs = append(p.errs, err)
				continue
			}
		}
		if len(ids) == 0 && len(edits) == 0 && p.base.V2 {
			// A hot task read again, unchanged: nothing is written. Its
			// record stays hot, so its reads are compared in full until
			// it changes again.
			p.skipped++
			continue
		}
		contributed++
		before = &after
		p.newIDs = mergeIDs(p.newIDs, ids)
		p.events = append(p.events, evs...)
		p.edits = append(p.edits, encoded...)
		p.createdAt = createdUnix(t, loc)
		p.updatedAt = t.UpdatedAt
		p.logsAt = newestLogAt(t)
		p.hot = isHot(t, p.logsAt, loc, time.Now())
	}
	p.occ = nil
	if contributed == 0 {
		return
	}
	if contributed > 1 {
		slices.SortStableFunc(p.events, func(a, b preparedEvent) int { return cmp.Compare(a.logID, b.logID) })
	}
	p.before = appendBefore(nil, before)
	p.rec = p.record(p.base.IDs, p.newIDs)
}

// logsAtOr is the newest log updated_at the task was last seen with: this
// batch's, else the record's.
func (p *pendingTask) logsAtOr() string {
	if p.logsAt != "" {
		return p.logsAt
	}
	return p.base.LogsAt
}

// record encodes the seen record to write: seen plus ids, with the values
// prepare found.
func (p *pendingTask) record(seen, ids []int64) []byte {
	return appendRecord(nil, &seenRecord{CreatedAt: p.createdAt, UpdatedAt: p.updatedAt, IDs: mergeIDs(seen, ids),
		V2: true, LogsAt: p.logsAt, Hot: p.hot, Rest: p.before})
}

// hotSeconds is how long after its last change a task read is not trusted
// to show its last version: updated_at has whole seconds (a second change
// in the same second does not move it), and the API's clock may be a
// second off the relay's.
const hotSeconds = 3

// isHot reports whether t, whose newest log updated_at is logsAt, changed
// within hotSeconds of now (its updated_at or a log's, read in loc).
func isHot(t *diff.Task, logsAt string, loc *time.Location, now time.Time) bool {
	for _, s := range []string{t.UpdatedAt, logsAt} {
		if at, err := diff.ParseTime(s, loc); err == nil && at.Unix()+hotSeconds > now.Unix() {
			return true
		}
	}
	return false
}

// forEach calls fn(0..n-1), spread over up to GOMAXPROCS goroutines when n
// is large enough to be worth it. It returns when every call returned.
//
// It is hand-written rather than an errgroup.Group with SetLimit (one
// goroutine per chunk, each waiting for a slot) because that measured
// slower on the relay's hot path: BenchmarkIngest/page, three interleaved
// runs of 300 pages, 89,000/94,000/69,000 events/s here against
// 76,000/86,000/67,000 with errgroup, and batch8 95,000/111,000/99,000
// against 76,000/91,000/97,000.
func forEach(n int, fn func(i int)) {
	const minChunk = 16
	workers := min(runtime.GOMAXPROCS(0), n/minChunk)
	if workers <= 1 {
		for i := range n {
			fn(i)
		}
		return
	}
	var (
		wg   sync.WaitGroup
		next atomic.Int64
	)
	for range workers {
		wg.Go(func() {
			for {
				start := int(next.Add(minChunk)) - minChunk
				if start >= n {
					return
				}
				for i := start; i < min(start+minChunk, n); i++ {
					fn(i)
				}
			}
		})
	}
	wg.Wait()
}

// preparedEvent is an outbox value but for its commit time and offset,
// which the commit fills in.
type preparedEvent struct {
	logID int64
	typ   string // the event type
	value []byte // see appendHeader and eventEncoder.encode
	at    int    // where the offset goes
}

// snapshotSeen reads the seen records of the batch's tasks in one read
// transaction. Tasks whose logs are all seen are only counted; the others
// are returned in order of first appearance, with their repeats.
func (db *DB) snapshotSeen(tasks []diff.Task) (pending []*pendingTask, skipped int, err error) {
	err = db.view(func(tx *bolt.Tx) error {
		seen := tx.Bucket(bucketSeen)
		var key [8]byte
		var perr error
		pending, skipped, perr = collectPending(tasks, func(id int64) []byte {
			binary.BigEndian.PutUint64(key[:], uint64(id))
			return seen.Get(key[:])
		}, nil)
		if perr != nil {
			return corrupt(db.path, perr)
		}
		return nil
	})
	return pending, skipped, db.wrap("ingest", err)
}

// prepareEvents diffs t against base plus newIDs and encodes the events
// with offset 0. want is the number of unseen logs the diff must produce.
func prepareEvents(t *diff.Task, base *seenRecord, newIDs, quiet []int64, loc *time.Location, want int) ([]preparedEvent, error) {
	seen := diff.SeenFunc(func(_, logID int64) bool {
		if base.has(logID) {
			return true
		}
		if _, ok := slices.BinarySearch(quiet, logID); ok {
			return true
		}
		_, ok := slices.BinarySearch(newIDs, logID)
		return ok
	})
	evs, err := diff.Diff(t, seen, loc)
	if err != nil {
		return nil, err
	}
	if len(evs) != want {
		return nil, fmt.Errorf("task %d: diff made %d events for %d unseen logs", t.ID, len(evs), want)
	}
	out := make([]preparedEvent, len(evs))
	var enc eventEncoder
	for i := range evs {
		ev := &evs[i]
		if len(ev.Type) > 255 {
			return nil, fmt.Errorf("task %d: event %s: type too long", t.ID, ev.ID)
		}
		logID, err := strconv.ParseInt(strings.TrimPrefix(ev.ID, "log-"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("task %d: event id %q: %w", t.ID, ev.ID, err)
		}
		// The outbox value: header (commit time filled in at commit), then
		// the body with room for the offset.
		v := appendHeader(nil, header{taskID: t.ID, typ: ev.Type})
		v, at, err := enc.encode(v, ev)
		if err != nil {
			return nil, fmt.Errorf("task %d: encode %s: %w", t.ID, ev.ID, err)
		}
		out[i] = preparedEvent{logID: logID, typ: ev.Type, value: v, at: at}
	}
	return out, nil
}

// encodeEvents encodes events of task taskID without a log of their own
// (the changes that left no log) as prepared outbox values.
func encodeEvents(taskID int64, evs []diff.Event) ([]preparedEvent, error) {
	out := make([]preparedEvent, len(evs))
	var enc eventEncoder
	for i := range evs {
		ev := &evs[i]
		v := appendHeader(nil, header{taskID: taskID, typ: ev.Type})
		v, at, err := enc.encode(v, ev)
		if err != nil {
			return nil, fmt.Errorf("task %d: encode %s: %w", taskID, ev.ID, err)
		}
		out[i] = preparedEvent{typ: ev.Type, value: v, at: at}
	}
	return out, nil
}

// ingestReq is one Ingest call waiting for the group commit.
type ingestReq struct {
	tasks []*pendingTask
	wake  chan bool // true: lead the next commit; false: done, see err

	err             error
	events, changed int
	first, last     uint64
	types           map[string]int // events appended by type
}

// groupCommit commits req, together with whatever other requests queue up
// while a commit is under way. The first caller leads: it commits the queue
// in one transaction, then hands the lead to the oldest waiting request.
//
// bbolt's DB.Batch cannot do this job: it may call a function more than
// once (when one function of a batch fails, the rest run again in a new
// transaction), which clashes with offset assignment: applyIngest takes
// offsets from the events bucket's sequence in request order and reports
// each request's first and last offset, so a rerun in another batch would
// give other offsets than a run the caller may already have seen, and a
// failing request would cost every other one its transaction. DB.Batch
// also holds the first call back for MaxBatchDelay; this commit starts at
// once and batches only what queued up behind a running commit.
func (db *DB) groupCommit(req *ingestReq) error {
	db.gcMu.Lock()
	db.gcQueue = append(db.gcQueue, req)
	if db.gcBusy {
		db.gcMu.Unlock()
		if lead := <-req.wake; !lead {
			return req.err
		}
		db.gcMu.Lock()
	}
	db.gcBusy = true
	batch := db.gcQueue
	db.gcQueue = nil
	db.gcMu.Unlock()

	err := db.applyIngest(batch)

	db.gcMu.Lock()
	if len(db.gcQueue) > 0 {
		db.gcQueue[0].wake <- true
	} else {
		db.gcBusy = false
	}
	db.gcMu.Unlock()
	appended := false
	for _, r := range batch {
		if err != nil {
			r.err = err
		}
		appended = appended || err == nil && r.events > 0
		if r != req {
			r.wake <- false
		}
	}
	if appended {
		db.wake()
	}
	return req.err
}

// applyIngest writes the requests in one transaction, in order. A task's
// seen record that changed since its snapshot (a concurrent Ingest, or an
// earlier request of the batch) is re-read and its already seen logs dropped.
func (db *DB) applyIngest(batch []*ingestReq) error {
	written := 0
	defer func() { db.touch(written) }()
	err := db.update(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		events.FillPercent = 1 // keys only ever grow
		seen := tx.Bucket(bucketSeen)
		seq := events.Sequence()
		storedAt := db.commitTime(events)
		var cur seenRecord
		total, newTasks := 0, 0
		for _, r := range batch {
			r.events, r.changed, r.first, r.last, r.types = 0, 0, 0, 0, nil
			for _, p := range r.tasks {
				key := u64(uint64(p.id))
				rec, ids, evs := p.rec, p.newIDs, p.events
				v := seen.Get(key)
				if !bytes.Equal(v, p.snap) {
					// Another commit wrote the task since the snapshot: its
					// logs seen since are dropped, and so are this read's
					// edits (they were found against the older values).
					cur.IDs = cur.IDs[:0]
					if v != nil {
						if err := decodeRecord(v, &cur); err != nil {
							return corrupt(db.path, fmt.Errorf("seen record of task %d: %w", p.id, err))
						}
					}
					ids, evs = dropSeen(&cur, ids, evs)
					if len(ids) == 0 {
						continue
					}
					rec = p.record(cur.IDs, ids)
				} else {
					evs = append(evs[:len(evs):len(evs)], p.edits...)
				}
				written += len(rec)
				for i := range evs {
					seq++
					v := evs[i].finish(seq, storedAt)
					written += len(v)
					if err := events.Put(u64(seq), v); err != nil {
						return err
					}
					if r.first == 0 {
						r.first = seq
						r.types = make(map[string]int, 4)
					}
					r.last = seq
					r.types[evs[i].typ]++
				}
				if err := seen.Put(key, rec); err != nil {
					return err
				}
				if v == nil {
					newTasks++
				}
				r.events += len(evs)
				r.changed++
				total += len(evs)
			}
		}
		if err := addSeenCount(tx, int64(newTasks)); err != nil {
			return err
		}
		if total == 0 {
			return nil
		}
		if err := events.SetSequence(seq); err != nil {
			return err
		}
		return addEventCount(tx, int64(total))
	})
	return db.wrap("ingest: commit", err)
}

// commitTime returns the commit time of a transaction appending to
// events: now, or the last event's if the clock stepped back, so commit
// times keep offset order.
func (db *DB) commitTime(events *bolt.Bucket) int64 {
	at := db.now().UnixNano()
	if _, v := events.Cursor().Last(); v != nil {
		if h, err := decodeHeader(v); err == nil && h.storedAt > at {
			at = h.storedAt
		}
	}
	return at
}

// dropSeen returns ids and evs without the logs rec has seen. evs is either
// empty (snapshot mode) or parallel to ids.
func dropSeen(rec *seenRecord, ids []int64, evs []preparedEvent) ([]int64, []preparedEvent) {
	var (
		outIDs []int64
		outEvs []preparedEvent
	)
	for i, id := range ids {
		if rec.has(id) {
			continue
		}
		outIDs = append(outIDs, id)
		if len(evs) > 0 {
			outEvs = append(outEvs, evs[i])
		}
	}
	return outIDs, outEvs
}

// finish returns the outbox value of e committed at storedAt with offset
// off. It completes e.value in place, so it is called once per event.
func (e *preparedEvent) finish(off uint64, storedAt int64) []byte {
	setStoredAt(e.value, storedAt)
	return patchOffset(e.value, e.at, off)
}

// logIDs returns the distinct log ids of t in increasing order, in buf.
func logIDs(t *diff.Task, buf []int64) []int64 {
	for i := range t.Logs {
		buf = append(buf, t.Logs[i].ID)
	}
	if !slices.IsSorted(buf) {
		slices.Sort(buf)
	}
	return slices.Compact(buf)
}

// quietLogIDs returns, in buf, the ids among the sorted unseen ids of the
// logs of t created before boundary: they are marked seen without an
// event. Nil for a zero boundary.
func quietLogIDs(t *diff.Task, unseen []int64, loc *time.Location, boundary time.Time, buf []int64) []int64 {
	if boundary.IsZero() {
		return buf
	}
	for i := range t.Logs {
		l := &t.Logs[i]
		if _, ok := slices.BinarySearch(unseen, l.ID); !ok {
			continue
		}
		if at, err := diff.ParseTime(l.CreatedAt, loc); err == nil && at.Before(boundary) {
			buf = append(buf, l.ID)
		}
	}
	slices.Sort(buf)
	return slices.Compact(buf)
}

// unseenLogIDs returns t's distinct log ids that are in neither base nor
// extra, in increasing order, in buf.
func unseenLogIDs(t *diff.Task, base *seenRecord, extra []int64, buf []int64) []int64 {
	buf = logIDs(t, buf)
	out := buf[:0]
	for _, id := range buf {
		if base.has(id) {
			continue
		}
		if _, ok := slices.BinarySearch(extra, id); ok {
			continue
		}
		out = append(out, id)
	}
	return out
}

// allSeen reports whether every id of the sorted ids is in the sorted seen.
func allSeen(ids, seen []int64) bool {
	if len(ids) > len(seen) {
		return false
	}
	j := 0
	for _, id := range ids {
		for j < len(seen) && seen[j] < id {
			j++
		}
		if j == len(seen) || seen[j] != id {
			return false
		}
	}
	return true
}

// createdUnix returns t's created_at in unix seconds, or 0 if it does not
// parse (such a task's seen record is never pruned).
func createdUnix(t *diff.Task, loc *time.Location) int64 {
	ts, err := diff.ParseTime(t.CreatedAt, loc)
	if err != nil || ts.Unix() == 0 {
		return 0
	}
	return ts.Unix()
}
