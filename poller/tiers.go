package poller

// The Tiered strategy: its type, sizes and stats, its life through a cycle
// (Cycle, Observe, End) and the calls that are safe for concurrent use.
// Planning a cycle is tiers_plan.go; the follow-ups after each round,
// tiers_followup.go; the budget, tiers_budget.go; the head scan,
// tiers_headscan.go; the task records and the bands they are placed in,
// tiers_bands.go; saving and loading the state, tiers_state.go; changing
// the settings while it runs, tiers_reconfigure.go.

import (
	"math"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Tiered is the Strategy that scales with the API. The API cannot filter by
// update time, so a relay must read a task to see whether it changed;
// Tiered reads each task only as often as it can change, and, being a
// Skipper, has the sweeps skip the decoding of tasks it handled before.
//
// Its first cycle sweeps the whole lookback window. Then it splits the
// window by creation time into bands of about 500 tasks (the README's
// slices: fixed ranges of WallTime, which tile the API's wall clock without
// gaps across daylight-saving changes) and each cycle reads:
//
//   - the newest window: every task created since the newest creation time
//     seen (or, after a fall-back, since what the wall clock showed at the
//     last cycle), with no status filter. A new task shows up here at the
//     next cycle, also one created and finished between two cycles. Once
//     the window holds 50 tasks older than a minute they become a band.
//   - the open tier: the tasks with status 0 and 1, through the status
//     filter, of the next bands of a ring, as many as it takes for each
//     band to be read at least every Config.OpenSweep (default 2
//     intervals: half of the open tasks per cycle; with OpenSweep equal to
//     the interval, all of them every cycle).
//   - the finished tier: every task of the bands read least recently,
//     with no status filter, as many as it takes for each to be read at
//     least every Config.FullSweep; a band that would be late at the next
//     cycle is read at once. A band is a fixed range of creation times, so
//     unlike a status list its members never change and in an id order its
//     pages cannot shift; at 10 % open tasks it costs as much as the status
//     filters 2 and 3, in one query instead of two, and reads its open
//     tasks as well.
//   - follow-ups: every task known to be in a range read this cycle (for
//     the open tier: known to be open) that was not listed is fetched by
//     task_id in the same cycle, or, when one band misses more tasks than
//     it has pages, that band is read in full. This finds the tasks that
//     left the open tier (completed or terminated) and those a page shift
//     hid. A task whose fetch lists nothing is gone: the Poller reports
//     it to a Handler that is a Deleter, within its mass-deletion guard
//     (Gone, Settle), and it is forgotten; a fetch that fails is sent
//     again next cycle. At most 100 fetches a cycle; the rest wait for
//     the next. A task that ages out of the lookback window is forgotten
//     without a deletion.
//
// Page shifts (a changed total, a task listed twice) hide a task for at
// most one extra cycle: a hidden task the range was known to hold is
// fetched in the same cycle; one new to it can only hide in a band not yet
// read in full without a shift, and such a band is read again the next
// cycle. If the first full sweep shifted in a list sorted by updated_at,
// its head is read again, page by page, until a page lists no task updated
// since the sweep began: the tasks passed over moved there.
//
// Tiered keeps about 100 bytes per task in memory. With a StateStore it
// saves its bands, schedule and open tasks at most once a minute (about 20
// bytes per open task) and resumes from them after a restart without a
// full sweep; finished tasks are learnt again as their bands are read. A
// Tiered is driven by one Poller; Unchanged, Forget and Stats are safe for
// concurrent use.
type Tiered struct {
	cfg       Config
	state     StateStore
	log       zerolog.Logger
	openEvery uint64 // cycles between two reads of an open task

	mu      sync.RWMutex
	recs    map[int64]*rec
	bands   []*band // closed, contiguous, oldest first
	newest  band    // open-ended: from newest.from on
	ready   bool    // the initial full sweep succeeded, or state was loaded
	pending map[int64]struct{}
	gone    []int64 // tasks whose look-up in this cycle listed nothing (Gone)

	// The cycle under way.
	cycle      uint64
	start      time.Time
	lbFrom     WallTime // lookback start of this cycle
	plan       []planned
	pos        int // queries of plan swept
	round      int // 0: main queries, 1: follow-ups, 2: last follow-ups
	roundStart int // plan[roundStart:roundEnd] is the current round
	roundEnd   int
	prevStart  time.Time
	lastDur    time.Duration
	schedule            // the tiers' credits and the open ring's place, as planned
	undo       schedule // the schedule before this cycle, restored if it fails
	stats      TierStats
	cur        TierStats // counts of the cycle under way

	lastSave time.Time
	saveSeq  uint64 // snapshots of the state taken for saving, under mu
	unplaced int    // tasks without a usable created_at, logged once

	// saveMu orders the writes of the state, which happen without mu held:
	// savedSeq is the newest snapshot written (or tried), and an older one
	// is dropped instead of overwriting it.
	saveMu   sync.Mutex
	savedSeq uint64

	// later holds the log lines made with mu held; unlock writes them once
	// it has released mu, so that a slow log writer blocks no caller.
	later []func(zerolog.Logger)

	// The initial sweep's order: pairs of tasks listed one after the other,
	// and how many of them were not in updated_at descending order.
	pairs, inversions int
	prevUpdated       WallTime
	headFrom          WallTime // a head page listing a task updated since is not the last

	scan     headScan // the head scan of the cycle under way
	scanTop  WallTime // newest updated_at the last complete head scan listed
	ordered  bool     // the last cycle's head scan showed updated_at order
	orderLog bool     // whether the order was last logged as holding

	budget budgetAccount // what the ceilings cost, and whether Config.Budget covers it

	// Reconfigure: the settings waiting for the next cycle's plan, and
	// whether a shorter ceiling is being caught up with (until a cycle
	// planned by it succeeded).
	next    *Config
	catchUp bool
}

// Tiered's sizes.
const (
	bandTarget   = 5 * MaxPageSize // tasks per band
	newestMax    = MaxPageSize / 2 // tasks in the newest window before it is closed
	maxFetches   = 100             // task_id fetches per cycle; more wait for the next
	saveInterval = time.Minute     // least time between two saves of the state
	// closeLag keeps the tasks created in the last minute, by this
	// process's clock, in the newest window.
	closeLag = time.Minute
)

var _ Strategy = (*Tiered)(nil)
var _ Skipper = (*Tiered)(nil)
var _ DeletionFinder = (*Tiered)(nil)

// TierStats describes a Tiered strategy after its last cycle.
type TierStats struct {
	// Ready is set once the first full sweep is done; before, every cycle
	// sweeps the whole lookback window.
	Ready  bool
	Slices int // bands of the lookback window (the README calls them slices)
	Tasks  int // tasks known
	Open   int // known tasks with status 0 or 1
	// Requests of the last successful cycle by tier: the newest window,
	// the open tier, full reads of bands (the finished tier, the first
	// full sweep and bands swept as a follow-up) and task_id fetches.
	NewestRequests, OpenRequests, SweepRequests, FetchRequests int
	Fetches                                                    int // task_id fetches in the last cycle
	Pending                                                    int // tasks that left a range, left to fetch in a later cycle
	PageShifts                                                 int // sweeps of the last cycle that saw tasks move between pages
	// ScanRequests read the head of the unfiltered list; BudgetRequests
	// read finished bands beyond the ceilings, paid for by the budget.
	ScanRequests, BudgetRequests int
	// Requests is every request of the last cycle, retries included.
	Requests int
	// Budget is the requests per cycle the strategy aims to spend (0: no
	// budget, only the ceilings are read).
	Budget int
	// CeilingNeed is what the ceilings (the newest window, the head scan,
	// the open tier at Config.OpenSweep, the finished tier at
	// Config.FullSweep and the follow-ups) cost per cycle, averaged over
	// the last cycles. Above Budget, BudgetShort is set: the ceilings are
	// kept, and nothing is left to read finished tasks more often.
	CeilingNeed float64
	BudgetShort bool
	// FullSweepLimit is Config.FullSweep plus an interval: a task read
	// longer ago than this missed the full-sweep ceiling.
	FullSweepLimit time.Duration
	// Ordered is set when the last cycle's head scan showed that the API
	// lists tasks by updated_at, newest first, and read down to where
	// nothing changed: every change was then found by it, and the budget
	// was not spent on finished bands.
	Ordered bool
	// OpenSeenThrough and FinishedSeenThrough: every open task was read
	// after the first, every task after the second (zero before the
	// first full sweep).
	OpenSeenThrough, FinishedSeenThrough time.Time
}

// SeenThrough returns the earlier of the two seen-through times.
func (s TierStats) SeenThrough() time.Time {
	if s.OpenSeenThrough.IsZero() || s.FinishedSeenThrough.IsZero() {
		return time.Time{}
	}
	if s.OpenSeenThrough.Before(s.FinishedSeenThrough) {
		return s.OpenSeenThrough
	}
	return s.FinishedSeenThrough
}

// StateStore keeps small values across restarts; every store.Store
// satisfies it.
// Meta returns an error when key has no value.
type StateStore interface {
	Meta(key string) ([]byte, error)
	SetMeta(key string, value []byte) error
}

// NewTiered returns a Tiered strategy for cfg's Interval, Lookback,
// FullSweep, OpenSweep, Location and PageSize, defaults filled in. With a
// non-nil state it loads the state saved by an earlier run, if any and if
// it was made for the same zone; a state it cannot read is logged and
// ignored, and the first cycle sweeps in full. It does I/O on state only.
func NewTiered(cfg Config, state StateStore, log zerolog.Logger) *Tiered {
	cfg = cfg.withDefaults()
	t := &Tiered{
		cfg:       cfg,
		state:     state,
		log:       log,
		openEvery: openEveryOf(cfg),
		recs:      make(map[int64]*rec),
		pending:   make(map[int64]struct{}),
	}
	if state != nil {
		t.load()
		t.mu.Lock()
		t.unlock() // the lines load queued
	}
	return t
}

// logLater queues a log line made with mu held; unlock writes it.
func (t *Tiered) logLater(f func(zerolog.Logger)) {
	t.later = append(t.later, f)
}

// unlock releases mu and then writes the log lines queued while it was
// held.
func (t *Tiered) unlock() {
	later := t.later
	t.later = nil
	t.mu.Unlock()
	for _, f := range later {
		f(t.log)
	}
}

// Unchanged reports whether the task h describes is the version last
// handed to the handler. It is safe for concurrent use.
func (t *Tiered) Unchanged(h *TaskHead) bool {
	t.mu.RLock()
	r := t.recs[h.ID]
	ok := r != nil && r.unchanged(h) && !r.hot
	t.mu.RUnlock()
	return ok
}

// Forget makes the next read of each task hand it to the handler again,
// even if unchanged: for a handler that could not process a task it
// accepted, e.g. because its logs did not parse. It is safe for concurrent
// use, also from Handler.HandlePage.
func (t *Tiered) Forget(ids ...int64) {
	t.mu.Lock()
	for _, id := range ids {
		if r := t.recs[id]; r != nil {
			r.handled = false
		}
	}
	t.mu.Unlock()
}

// Fetch asks for a task_id read of each known task in the next cycle's
// follow-ups, unless a main query of that cycle lists it; like the tasks
// that left a range, they share the follow-up cap and wait in Pending
// beyond it. Unknown tasks are ignored. It is safe for concurrent use.
func (t *Tiered) Fetch(ids ...int64) {
	t.mu.Lock()
	for _, id := range ids {
		if t.recs[id] != nil {
			t.pending[id] = struct{}{}
		}
	}
	t.mu.Unlock()
}

// Gone returns the tasks whose task_id look-up in this cycle listed
// nothing, the tasks still waiting for a look-up, and the tasks known
// (DeletionFinder).
func (t *Tiered) Gone() (ids []int64, waiting, tracked int) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return slices.Clone(t.gone), len(t.pending), len(t.recs)
}

// Settle forgets the reported tasks and queues the others for a look-up
// in the next cycle (DeletionFinder). A task that ages out of the
// lookback window meanwhile is forgotten without a deletion.
func (t *Tiered) Settle(reported, again []int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, id := range reported {
		if r := t.recs[id]; r != nil {
			if r.band != nil {
				r.band.remove(r)
			}
			t.forget(r)
		}
	}
	for _, id := range again {
		if t.recs[id] != nil {
			t.pending[id] = struct{}{}
		}
	}
	t.gone = t.gone[:0]
}

// Stats returns the state after the last cycle. It is safe for concurrent
// use.
func (t *Tiered) Stats() TierStats {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.stats
}

// Cycle plans the main queries of a cycle starting at now.
func (t *Tiered) Cycle(now time.Time) []Query {
	t.mu.Lock()
	defer t.unlock()
	t.applyNext()
	t.cycle++
	t.start = now
	t.plan, t.pos, t.round, t.roundStart = t.plan[:0], 0, 0, 0
	t.pairs, t.inversions = 0, 0
	t.scan = headScan{}
	t.undo = t.schedule
	t.cur = TierStats{}
	t.gone = t.gone[:0]
	t.lbFrom = WallTimeOf(now.Add(-t.cfg.Lookback), t.cfg.Location)
	if !t.ready {
		t.plan = append(t.plan, planned{kind: kindInitial, q: Query{CreatedFrom: t.lbFrom}})
	} else {
		t.trim()
		t.planMain(now)
	}
	t.prevStart = now
	t.roundEnd = len(t.plan)
	return t.queries(0)
}

// queries returns the queries of plan[from:].
func (t *Tiered) queries(from int) []Query {
	out := make([]Query, 0, len(t.plan)-from)
	for i := from; i < len(t.plan); i++ {
		out = append(out, t.plan[i].q)
	}
	return out
}

// Observe records what a page says about each task. It ends a read of the
// head of the list at the first page without news.
func (t *Tiered) Observe(_ Query, p *Page) bool {
	t.mu.Lock()
	defer t.unlock()
	kind := kindNewest
	if t.pos < len(t.plan) {
		kind = t.plan[t.pos].kind
	}
	more := kind != kindHead
	if kind == kindScan {
		t.scan.more = t.observeScan(p)
	}
	startWall := WallTimeOf(t.start, t.cfg.Location)
	for i := range p.Heads {
		h := &p.Heads[i]
		if kind == kindInitial {
			if t.pairs++; t.pairs > 1 && h.Updated > t.prevUpdated {
				t.inversions++
			}
			t.prevUpdated = h.Updated
		}
		r := t.recs[h.ID]
		if kind == kindHead && (r == nil || r.seen != t.cycle || h.Updated >= t.headFrom) {
			more = true
		}
		if r == nil {
			if h.Created != 0 && h.Created < t.lbFrom {
				continue // outside the window, e.g. fetched by id
			}
			r = &rec{id: h.ID, created: h.Created, status: status8(h.Status)}
			t.recs[h.ID] = r
			t.place(r)
		} else if st := status8(h.Status); r.status != st && r.band != nil {
			if isOpen(r.status) {
				r.band.open[r.status]--
			}
			if isOpen(st) {
				r.band.open[st]++
			}
		}
		r.status = status8(h.Status)
		r.seen = t.cycle
		if !h.Skipped {
			// A task changed in the seconds around this cycle's start may
			// change again within the same second, which its updated_at
			// cannot show: it is not called unchanged until a read made
			// well after its last change (hot).
			hot := max(h.Updated, h.LogUpdated)+hotSeconds > startWall
			r.updated, r.lastLog, r.logs, r.handled, r.hot = h.Updated, h.LastLog, int32(min(h.Logs, 1<<31-1)), true, hot
			r.logUpd = h.LogUpdated
		}
	}
	return more
}

// hotSeconds is how long after its last change a task read is not
// trusted to show the task's last version: updated_at has whole seconds,
// and the API's clock may be a second off the relay's.
const hotSeconds = 3

// End commits the cycle's reads to the schedule, or, after a failure,
// leaves the schedule as it was: what was not read in full is read again.
// The state is saved, and the cycle's log lines written, after mu is
// released: a slow StateStore or log writer delays only End's caller, not
// Stats, Unchanged, Forget or Fetch.
func (t *Tiered) End(err error) {
	snap, seq := t.end(err)
	if snap != nil {
		t.writeState(seq, snap)
	}
}

// end does End's work under mu and returns the snapshot of the state to
// save, if one is due, with its sequence number.
func (t *Tiered) end(err error) (snap []byte, seq uint64) {
	t.mu.Lock()
	defer t.unlock()
	end := t.cfg.Now()
	t.lastDur = max(end.Sub(t.start), 0)
	if err != nil {
		t.schedule = t.undo
		// Look-ups that failed or were not sent, and tasks found gone but
		// not reported, are looked up again next cycle: a failed look-up
		// is never taken for a deletion.
		for i := range t.plan {
			if p := &t.plan[i]; p.kind == kindFetch && !p.done && t.recs[p.id] != nil {
				t.pending[p.id] = struct{}{}
			}
		}
		for _, id := range t.gone {
			if t.recs[id] != nil {
				t.pending[id] = struct{}{}
			}
		}
		t.gone = t.gone[:0]
		return nil, 0
	}
	if !t.ready {
		t.build()
	} else {
		t.commit()
		t.account()
	}
	t.catchUp = false
	t.updateStats()
	if t.state != nil && (t.lastSave.IsZero() || end.Sub(t.lastSave) >= saveInterval) {
		t.lastSave = end
		t.saveSeq++
		return t.encodeState(), t.saveSeq
	}
	return nil, 0
}

// updateStats fills t.stats after a successful cycle.
func (t *Tiered) updateStats() {
	st := t.cur
	st.Ready = t.ready
	st.Slices = len(t.bands)
	st.Tasks = len(t.recs)
	st.Pending = len(t.pending)
	st.Budget = t.cfg.Budget
	st.CeilingNeed = math.Round(t.budget.need*10) / 10
	st.BudgetShort = t.budget.short
	st.FullSweepLimit = t.cfg.FullSweep + t.cfg.Interval
	st.Ordered = t.ordered
	st.OpenSeenThrough, st.FinishedSeenThrough = t.newest.lastOpenAt, t.newest.lastFull
	for _, s := range t.bands {
		st.Open += s.opens()
		if s.opens() > 0 {
			st.OpenSeenThrough = earliest(st.OpenSeenThrough, s.lastOpenAt)
		}
		st.FinishedSeenThrough = earliest(st.FinishedSeenThrough, s.lastFull)
	}
	st.Open += t.newest.opens()
	t.stats = st
}
