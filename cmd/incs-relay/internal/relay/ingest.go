package relay

// The Ingester: the poller's Handler, which stores each page and keeps
// the snapshot boundary of the first start.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/diff/rules"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/store"
)

// Ingester is the poller's Handler: it diffs and stores each page, and
// ends the first-start snapshot once a sweep completed.
type Ingester struct {
	db      store.Store
	loc     *time.Location
	log     zerolog.Logger
	metrics *metrics
	// boundary is the snapshot boundary (poll.initial: snapshot): a log
	// created before it never becomes an event. Zero with initial: replay
	// and on stores initialized before the boundary was kept.
	boundary time.Time
	future   atomic.Bool   // a created_at in the future was logged
	sweeps   atomic.Int64  // cycles that completed
	tiers    forgetter     // told to re-read tasks left unseen; nil without tiers
	rules    *rules.Engine // evaluates every read; nil without rules

	// pending receives the outcome of the page whose commit is under way;
	// nil when none is. Only the poller's goroutine (or Run, once the
	// poller stopped) touches it, and the fields below.
	pending chan ingestOutcome
	// pendDone is set once pending's Ingest returned.
	pendDone *atomic.Bool
	// buf gathers the pages handed over while a commit is under way
	// (bufPages of them, bufLogs logs), to be stored in one Ingest
	// once it ended; deferred holds their rule observations, made once
	// that Ingest is under way (observeRules).
	buf      []diff.Task
	bufPages int
	bufLogs  int
	deferred []deferredRules

	// parts holds a token for each part being prepared or committed, over
	// every Ingest under way (partsInFlight at most).
	partsOnce sync.Once
	parts     chan struct{}
}

// deferredRules is a page's rule observation waiting for the page's
// Ingest to start.
type deferredRules struct {
	p  *poller.Page
	at time.Time
}

// groupPages and groupLogs bound the pages gathered into one Ingest
// while a commit is under way: a jetstream store pays a fixed cost per
// atomic batch (nats-server stages each in a synced store of its own), and
// gathering pages of few logs stored more events a second (bench,
// 2026-12-07: 1.2 times as many; with the seen records packed, up to
// 2,000 logs rather than 500 stored 45,100-48,700 events/s against
// 37,600-44,900, four interleaved rounds, bbolt mode unchanged); the logs
// bound what an Ingest holds (each new log's event carries its task), so
// pages of long histories are stored one by one, as before.
const (
	groupPages = 4
	groupLogs  = 2000
)

// chunkLogs bounds the logs of one Ingest: pages of tasks with long
// histories (100 tasks of 100 new logs each make 10,000 events of about
// 1.6 KiB, each carrying its task) are stored in parts of whole tasks, at
// most partsInFlight at a time, so the events prepared at once stay a few
// MiB whatever a page holds (bench --scale 1000000 --store bbolt,
// 2026-12-07: RssAnon delivering 116-126 MB with whole pages, 69-73 MB in
// parts).
const chunkLogs = 2000

// partsInFlight bounds the parts being prepared or committed at once over
// every Ingest under way: one commits while the next is prepared. Two
// Ingests run at once (the page handed over while the one before
// commits), and each used to keep two parts going, so four parts' events
// were held on pages of long histories (bench --scale 100000,1000000
// --store bbolt, 2026-12-08, two runs each: RssAnon delivering at
// 1,000,000 events 77.0-77.1 MB, bounded 65.3-66.7 MB).
const partsInFlight = 2

// NewIngester returns an Ingester of its own, outside a relay: it stores
// each page in db with no snapshot boundary, tiers or rules (as a
// relay's does with poll.initial: replay and poll.strategy: full).
func NewIngester(db store.Store, loc *time.Location, log zerolog.Logger) *Ingester {
	return &Ingester{db: db, loc: loc, log: log}
}

// forgetter is the part of poller.Tiered the Ingester uses.
type forgetter interface{ Forget(ids ...int64) }

// ingestOutcome is what one page's Ingest did.
type ingestOutcome struct {
	tasks []diff.Task
	res   store.IngestResult
	err   error
}

// HandlePage hands one page to the store and returns the outcome of the
// previous page's commit, without waiting for this one: the poller fetches
// and decodes the next page while the store syncs the file, and a commit
// whose fsync takes long (100-300 ms happen on a busy disk) no longer
// stalls polling; pages handed over meanwhile commit together. A failed
// commit is reported by the next HandlePage, SweepDone or flush, which all
// come after the poller observed the page: its tasks are then forgotten by
// the tiers, so the next read hands them over again. A task whose logs do
// not diff is logged and left unseen the same way; it does not fail the
// sweep.
//
// Pages handed over while a commit is under way are gathered (up to
// groupPages pages or groupLogs logs) and stored in one Ingest once it
// ended, whose failure forgets all their tasks.
func (h *Ingester) HandlePage(ctx context.Context, tasks []diff.Task) error {
	h.checkClock(tasks)
	h.buf = append(h.buf, tasks...)
	h.bufPages++
	for i := range tasks {
		h.bufLogs += len(tasks[i].Logs)
	}
	if h.pending != nil && !h.pendDone.Load() && h.bufPages < groupPages && h.bufLogs < groupLogs {
		return nil // stored with the next pages, once the commit under way ended
	}
	return h.start(ctx)
}

// start stores the gathered pages in one Ingest, without waiting for it,
// and returns the outcome of the commit before it.
func (h *Ingester) start(ctx context.Context) error {
	tasks := h.buf
	h.buf, h.bufPages, h.bufLogs = nil, 0, 0
	ch := make(chan ingestOutcome, 1)
	done := new(atomic.Bool)
	go withStage(ctx, stageStore, func(ctx context.Context) {
		res, err := h.ingest(ctx, tasks)
		done.Store(true)
		ch <- ingestOutcome{tasks: tasks, res: res, err: err}
	})
	prev := h.pending
	h.pending, h.pendDone = ch, done
	for _, d := range h.deferred {
		h.observeRules(d.p, d.at) // after this Ingest, as for a page stored alone
	}
	h.deferred = nil
	if prev == nil {
		return nil
	}
	return h.finish(<-prev)
}

// ingest stores tasks in parts of whole tasks of at most chunkLogs logs
// (a task of more is a part of its own), one Ingest each, the next one
// prepared while the one before commits, and returns their results
// summed once every part it started returned. Parts whose tasks did not
// all diff are committed like any other and reported together
// (store.DiffError); any other failure stops there.
func (h *Ingester) ingest(ctx context.Context, tasks []diff.Task) (store.IngestResult, error) {
	var (
		sum  store.IngestResult
		left []int64 // tasks left unseen, in order
		errs []error
		hard error
		prev chan ingestOutcome
	)
	take := func(ch chan ingestOutcome) {
		o := <-ch
		sum = addResults(sum, o.res)
		var de *store.DiffError
		switch {
		case errors.As(o.err, &de):
			left = append(left, de.TaskIDs...)
			errs = append(errs, de.Err)
		case o.err != nil && hard == nil:
			hard = o.err
		}
	}
	for len(tasks) > 0 && hard == nil {
		n, logs := 0, 0
		for n < len(tasks) && (n == 0 || logs+len(tasks[n].Logs) <= chunkLogs) {
			logs += len(tasks[n].Logs)
			n++
		}
		part := tasks[:n]
		tasks = tasks[n:]
		if prev == nil && len(tasks) == 0 {
			// A page of one part: no goroutine.
			release, err := h.takeSlot(ctx)
			if err != nil {
				return store.IngestResult{}, err
			}
			defer release()
			return h.db.IngestAfter(ctx, part, h.loc, h.boundary)
		}
		ch := make(chan ingestOutcome, 1)
		go func() {
			release, err := h.takeSlot(ctx)
			if err != nil {
				ch <- ingestOutcome{tasks: part, err: err}
				return
			}
			res, err := h.db.IngestAfter(ctx, part, h.loc, h.boundary)
			release()
			ch <- ingestOutcome{tasks: part, res: res, err: err}
		}()
		if prev != nil {
			take(prev)
		}
		prev = ch
	}
	if prev != nil {
		take(prev)
	}
	if hard != nil {
		return sum, hard
	}
	if len(left) > 0 {
		return sum, &store.DiffError{TaskIDs: left, Err: errors.Join(errs...)}
	}
	return sum, nil
}

// takeSlot waits for one of the partsInFlight slots of the parts being
// prepared or committed and returns its release, or ctx's error.
func (h *Ingester) takeSlot(ctx context.Context) (release func(), err error) {
	h.partsOnce.Do(func() { h.parts = make(chan struct{}, partsInFlight) })
	select {
	case h.parts <- struct{}{}:
		return func() { <-h.parts }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// addResults returns a and b summed: counts added, offsets spanning
// both. Distinct counts (Changed, Failed) add up per part.
func addResults(a, b store.IngestResult) store.IngestResult {
	if b.FirstOffset != 0 && (a.FirstOffset == 0 || b.FirstOffset < a.FirstOffset) {
		a.FirstOffset = b.FirstOffset
	}
	a.LastOffset = max(a.LastOffset, b.LastOffset)
	a.Events += b.Events
	a.Tasks += b.Tasks
	a.Changed += b.Changed
	a.Skipped += b.Skipped
	a.Failed += b.Failed
	if len(b.Types) > 0 && a.Types == nil {
		a.Types = make(map[string]int, len(b.Types))
	}
	for t, n := range b.Types {
		a.Types[t] += n
	}
	return a
}

// flush stores the gathered pages, waits for the commit under way, if
// any, and returns its outcome.
func (h *Ingester) flush() error {
	if h.bufPages > 0 {
		if err := h.start(context.Background()); err != nil {
			h.flushPending()
			return err
		}
	}
	return h.flushPending()
}

// flushPending waits for the commit under way, if any, and returns its
// outcome.
func (h *Ingester) flushPending() error {
	if h.pending == nil {
		return nil
	}
	ch := h.pending
	h.pending = nil
	return h.finish(<-ch)
}

func (h *Ingester) finish(o ingestOutcome) error {
	h.metrics.ingested(o.res)
	var de *store.DiffError
	if errors.As(o.err, &de) {
		if h.tiers != nil {
			h.tiers.Forget(de.TaskIDs...)
		}
		h.log.Warn().Ints64("task_ids", de.TaskIDs).Err(de.Err).Msg("tasks left unseen: their logs do not parse")
		return nil
	}
	if o.err != nil && h.tiers != nil {
		ids := make([]int64, len(o.tasks))
		for i := range o.tasks {
			ids[i] = o.tasks[i].ID
		}
		h.tiers.Forget(ids...)
	}
	return o.err
}

// SweepDone records that a first sweep completed.
func (h *Ingester) SweepDone(ctx context.Context, s poller.SweepStats) error {
	if err := h.flush(); err != nil {
		return err
	}
	if h.sweeps.Add(1) > 1 {
		return nil
	}
	ok, err := h.db.Initialized()
	if err != nil || ok {
		return err
	}
	if err := h.db.SetInitialized(); err != nil {
		return err
	}
	if !h.boundary.IsZero() {
		h.log.Info().Int("tasks", s.Tasks).Time("boundary", h.boundary).
			Msg("first sweep done: logs created before the boundary are marked seen without events (poll.initial: snapshot); every later log becomes an event")
	}
	return nil
}

// HandleDeleted stores a task.deleted event for each task a look-up
// confirmed gone and forgets its seen record (store.Ingester.Delete), once
// the pages before are committed. It is poller.Deleter: on error the
// poller looks the tasks up again next cycle. Like Ingest, only a leading
// jetstream replica's store accepts it; a replica that lost the lease
// refuses, and the next leader confirms the deletions again.
func (h *Ingester) HandleDeleted(ctx context.Context, ids []int64, confirmed time.Time) error {
	if err := h.flush(); err != nil {
		return err
	}
	// In the API's zone, as every other event's time, to the second.
	res, err := h.db.Delete(ctx, ids, confirmed.In(h.loc).Truncate(time.Second))
	if err != nil {
		return err
	}
	h.metrics.deleted(res, len(ids))
	return nil
}

// Tracked calls fn with the tasks the store has seen created at or after
// since (Unix seconds): poller.Tracker, for the deletions of poll.strategy:
// full, and for what tiered polling did not keep across a restart.
func (h *Ingester) Tracked(since int64, fn func(taskID, created int64) bool) error {
	return h.db.Tracked(since, fn)
}

var (
	_ poller.Deleter = (*Ingester)(nil)
	_ poller.Tracker = (*Ingester)(nil)
)

// snapshotKey is the store meta key of the snapshot boundary.
const snapshotKey = "snapshot/boundary"

// snapshotBoundary returns the snapshot boundary of the store, deciding
// it as now, to the second, on a store that has none and whose first sweep
// has not completed. It is kept before the first request, so a restart
// during the first sweep keeps it. A store initialized before boundaries
// were kept has none (zero): every new log becomes an event, as before.
func snapshotBoundary(db store.Store, initialized bool, now time.Time) (time.Time, error) {
	if b, err := db.Meta(snapshotKey); err == nil {
		t, perr := time.Parse(time.RFC3339, string(b))
		if perr != nil {
			return time.Time{}, fmt.Errorf("store: snapshot boundary %q: %w", b, perr)
		}
		return t, nil
	}
	if initialized {
		return time.Time{}, nil
	}
	b := now.Truncate(time.Second)
	if err := db.SetMeta(snapshotKey, []byte(b.UTC().Format(time.RFC3339))); err != nil {
		return time.Time{}, err
	}
	return b, nil
}

// futureSlack is how far a task's updated_at may lie ahead of this host's
// clock before the relay warns that upstream.timezone is likely wrong.
const futureSlack = 2 * time.Minute

// checkClock warns once when a task was updated in the future, read in
// upstream.timezone: the zone is wrong or the clocks differ, and the
// snapshot boundary and every event time with it are off.
func (h *Ingester) checkClock(tasks []diff.Task) {
	if h.future.Load() {
		return
	}
	limit := time.Now().Add(futureSlack)
	for i := range tasks {
		at, err := diff.ParseTime(tasks[i].UpdatedAt, h.loc)
		if err == nil && at.After(limit) && h.future.CompareAndSwap(false, true) {
			h.log.Warn().Int64("task_id", tasks[i].ID).Str("updated_at", tasks[i].UpdatedAt).Str("timezone", h.loc.String()).
				Msg("a task was updated in the future by this host's clock: check upstream.timezone and the clocks; the snapshot boundary and event times depend on them")
			return
		}
	}
}
