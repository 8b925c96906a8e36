package poller

import (
	"cmp"
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
// window by creation time into bands of about 500 tasks (fixed ranges of
// WallTime, which tile the API's wall clock without gaps across
// daylight-saving changes) and each cycle reads:
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
//     hid; a task the API no longer returns is forgotten. At most 100
//     fetches a cycle; the rest wait for the next.
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
	fullCredit float64
	openCredit float64
	openCursor WallTime // the open tier's ring goes on at the band starting here
	undo       schedule // the schedule before this cycle, restored if it fails
	stats      TierStats
	cur        TierStats // counts of the cycle under way

	lastSave time.Time
	unplaced int // tasks without a usable created_at, logged once

	// The initial sweep's order: pairs of tasks listed one after the other,
	// and how many of them were not in updated_at descending order.
	pairs, inversions int
	prevUpdated       WallTime
	headFrom          WallTime // a head page listing a task updated since is not the last

	scan     headScan // the head scan of the cycle under way
	scanTop  WallTime // newest updated_at the last complete head scan listed
	need     float64  // requests the ceilings need per cycle, averaged
	short    bool     // the budget was below what the ceilings need, last logged
	ordered  bool     // the last cycle's head scan showed updated_at order
	orderLog bool     // whether the order was last logged as holding
}

// headScan is what the head scan of one cycle saw: the unfiltered list,
// read from its first page while each page shows news, to learn whether
// the API lists tasks by updated_at, newest first, and, when it does, to
// find every change since the last cycle in a page or two.
type headScan struct {
	pages       int
	prevUpdated WallTime // updated_at of the task listed last
	minChanged  int64    // lowest id of a task listed with a new log; 0 if none
	top         WallTime // newest updated_at listed
	positive    bool     // a task with a new log was listed ahead of a task with a higher id
	negative    bool     // updated_at rose from one task to the next
	complete    bool     // the scan ended at a page without news
	more        bool     // the page just read asks for the next one
	served      int      // tasks on the first page: the page size the API serves
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

// schedule is what planning a cycle changes before the cycle succeeded.
type schedule struct {
	fullCredit, openCredit float64
	openCursor             WallTime
}

// rec is what Tiered knows of one task: where it is, and which version of
// it the handler accepted last (when handled), told apart as
// TaskHead.Unchanged does.
type rec struct {
	id      int64
	created WallTime
	updated WallTime
	lastLog int64
	seen    uint64 // cycle in which it was last listed
	band    *band  // nil when not placed
	logs    int32
	status  int8
	handled bool
}

// unchanged reports whether h is the version handled last.
func (r *rec) unchanged(h *TaskHead) bool {
	return r.handled && h.Updated != 0 && h.Updated == r.updated && h.LastLog == r.lastLog &&
		h.Logs == int(r.logs) && h.Status == int(r.status)
}

func isOpen(status int8) bool { return status == 0 || status == 1 }

// status8 keeps a status in a byte; statuses the API does not define
// become -1, which is neither open nor finished.
func status8(s int) int8 {
	if s < 0 || s > 3 {
		return -1
	}
	return int8(s)
}

// band is a fixed range of creation times and the tasks known in it.
type band struct {
	from, to   WallTime // inclusive; the newest window has no end
	recs       []*rec
	open       [2]int    // known tasks with status 0 and 1
	size       int       // tasks listed by its last full read
	lastFull   time.Time // start of the cycle that last read it in full
	lastOpen   uint64    // cycle that last read its open tasks
	lastOpenAt time.Time
	known      bool // a clean full read listed every task in it
	again      bool // read it in full next cycle: a page shift may have hidden a task new to it
}

func (b *band) weight() int { return max(b.size, len(b.recs)) }
func (b *band) opens() int  { return b.open[0] + b.open[1] }

// remove drops r from b's records.
func (b *band) remove(r *rec) {
	if i := slices.Index(b.recs, r); i >= 0 {
		b.recs = slices.Delete(b.recs, i, i+1)
	}
	if isOpen(r.status) {
		b.open[r.status]--
	}
	r.band = nil
}

func (b *band) add(r *rec) {
	b.recs = append(b.recs, r)
	if isOpen(r.status) {
		b.open[r.status]++
	}
	r.band = b
}

// Kinds of query.
type qkind uint8

const (
	kindInitial qkind = iota // full sweep of the lookback window
	kindHead                 // the head of the initial sweep's list, read again
	kindNewest
	kindOpen
	kindFull
	kindFetch
	kindScan // the head of the unfiltered list, see headScan
)

// planned is one query of the cycle and what came of it.
type planned struct {
	kind   qkind
	lo, hi int   // bands[lo:hi] for kindOpen and kindFull
	status int   // for kindOpen
	id     int64 // for kindFetch
	q      Query
	budget bool // a kindFull read paid for by the budget, beyond the ceilings
	shift  bool // its sweep saw a page shift
	done   bool
}

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
		openEvery: uint64(max(cfg.OpenSweep/cfg.Interval, 1)),
		recs:      make(map[int64]*rec),
		pending:   make(map[int64]struct{}),
	}
	if state != nil {
		t.load()
	}
	return t
}

// Unchanged reports whether the task h describes is the version last
// handed to the handler. It is safe for concurrent use.
func (t *Tiered) Unchanged(h *TaskHead) bool {
	t.mu.RLock()
	r := t.recs[h.ID]
	ok := r != nil && r.unchanged(h)
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
	defer t.mu.Unlock()
	t.cycle++
	t.start = now
	t.plan, t.pos, t.round, t.roundStart = t.plan[:0], 0, 0, 0
	t.pairs, t.inversions = 0, 0
	t.scan = headScan{}
	t.undo = schedule{t.fullCredit, t.openCredit, t.openCursor}
	t.cur = TierStats{}
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

// trim drops what fell out of the lookback window and covers any part of
// the window no band covers (after the lookback was raised) with a new
// band, due at once.
func (t *Tiered) trim() {
	lb := t.lbFrom
	drop := 0
	for drop < len(t.bands) && t.bands[drop].to < lb {
		for _, r := range t.bands[drop].recs {
			t.forget(r)
		}
		drop++
	}
	t.bands = slices.Delete(t.bands, 0, drop)
	first := &t.newest
	if len(t.bands) > 0 {
		first = t.bands[0]
	}
	if first.from < lb {
		first.from = lb
		kept := first.recs[:0]
		for _, r := range first.recs {
			if r.created >= lb {
				kept = append(kept, r)
				continue
			}
			if isOpen(r.status) {
				first.open[r.status]--
			}
			t.forget(r)
		}
		clear(first.recs[len(kept):])
		first.recs = kept
	}
	if first.from > lb {
		gap := &band{from: lb, to: first.from - 1}
		t.bands = slices.Insert(t.bands, 0, gap)
		t.log.Info().Stringer("from", lb).Stringer("to", gap.to).Msg("lookback window grew: sweeping the new part in full")
	}
}

// forget drops r from the records (not from its band).
func (t *Tiered) forget(r *rec) {
	delete(t.recs, r.id)
	delete(t.pending, r.id)
	r.band = nil
}

// planMain plans the newest window, the open tier and the finished tier.
func (t *Tiered) planMain(now time.Time) {
	// The newest window starts where the newest creation time seen was, or,
	// if earlier, at what the wall clock showed a minute before the last
	// cycle: after a daylight-saving fall-back, new tasks get creation times
	// earlier than older ones for an hour. Otherwise closeNewest keeps
	// newest.from the earlier one, so this costs nothing.
	from := t.newest.from
	if !t.prevStart.IsZero() {
		// At most one offset change lies between a and now. If the clock
		// went back, no wall time since a is earlier than wall(now) minus
		// the time passed; if it went forward, none is earlier than
		// wall(a). The -1 covers the truncated fraction of a second.
		a := t.prevStart.Add(-closeLag)
		from = min(from, WallTimeOf(a, t.cfg.Location),
			WallTimeOf(now, t.cfg.Location)-WallTime(now.Sub(a)/time.Second)-1)
	}
	t.plan = append(t.plan, planned{kind: kindScan, q: Query{CreatedFrom: t.lbFrom, Page: 1, Pages: 1}})
	t.plan = append(t.plan, planned{kind: kindNewest, q: Query{CreatedFrom: max(from, t.lbFrom)}})

	n := len(t.bands)
	gap := t.cfg.Interval
	if !t.prevStart.IsZero() {
		gap = min(max(now.Sub(t.prevStart), 0), t.cfg.FullSweep)
	}
	nextGap := max(t.cfg.Interval, t.lastDur)

	// Finished tier: whole bands, due first, then oldest read first.
	full := make([]bool, n)
	total := 0
	for _, s := range t.bands {
		total += s.weight()
	}
	t.fullCredit = min(t.fullCredit+float64(total)*float64(gap)/float64(t.cfg.FullSweep), float64(total))
	for i, s := range t.bands {
		if s.again || s.lastFull.IsZero() || now.Sub(s.lastFull)+nextGap > t.cfg.FullSweep {
			full[i] = true
			t.fullCredit -= float64(s.weight())
		}
	}
	for _, i := range t.oldestFirst(full, func(b *band) int64 { return b.lastFull.UnixNano() }) {
		if t.fullCredit <= 0 {
			break
		}
		full[i] = true
		t.fullCredit -= float64(t.bands[i].weight())
	}
	t.fullCredit = max(t.fullCredit, -float64(total))

	// The budget: what the ceilings left over the last cycles buys full
	// reads of the bands read least recently. Chosen before the open tier,
	// which then passes over them: a full read reads their open tasks too.
	// planBudget spends what is still left once the cycle's other reads
	// are done.
	var paid []bool
	if t.cfg.Budget > 0 && !t.ordered {
		paid = t.chooseBudget(full, t.cfg.Budget-int(math.Ceil(t.need)))
		for i := range paid {
			full[i] = full[i] || paid[i]
		}
	}

	// Open tier: a ring over the bands, from where the last cycle
	// stopped, taking bands until this cycle's share of the open tasks is
	// read: contiguous bands make few ranges, and few partial pages. Bands
	// read in full this cycle are passed over; one the ring would reach too
	// late is read anyway.
	open := make([]bool, n)
	opens := 0
	for _, s := range t.bands {
		opens += s.opens()
	}
	t.openCredit = min(t.openCredit+float64(opens)/float64(t.openEvery), float64(opens))
	start := 0
	if i, ok := slices.BinarySearchFunc(t.bands, t.openCursor, func(s *band, w WallTime) int { return cmp.Compare(s.from, w) }); ok || i < n {
		start = i
	}
	for k := 0; k < n && t.openCredit > 0; k++ {
		i := (start + k) % n
		t.openCursor = t.bands[(i+1)%n].from
		if full[i] || t.bands[i].opens() == 0 {
			continue
		}
		open[i] = true
		t.openCredit -= float64(t.bands[i].opens())
	}
	for i, s := range t.bands {
		if !full[i] && !open[i] && s.opens() > 0 && t.cycle-s.lastOpen >= t.openEvery {
			open[i] = true
			t.openCredit -= float64(s.opens())
		}
	}
	t.openCredit = max(t.openCredit, -float64(opens))
	// Bands without open tasks between two selected ones join them: one
	// range instead of two, at no cost.
	last := -1
	for i := range n {
		if full[i] {
			last = -1
			continue
		}
		if open[i] {
			if last >= 0 {
				for j := last + 1; j < i; j++ {
					open[j] = true
				}
			}
			last = i
		} else if t.bands[i].opens() > 0 {
			last = -1
		}
	}

	for lo := 0; lo < n; {
		hi := lo + 1
		switch {
		case open[lo]:
			for hi < n && open[hi] {
				hi++
			}
			for st := range 2 {
				if t.countOpen(lo, hi, st) == 0 {
					continue // a task that moved here from the other status is fetched
				}
				status := st
				t.plan = append(t.plan, planned{kind: kindOpen, lo: lo, hi: hi, status: st, q: Query{
					Status: &status, CreatedFrom: max(t.bands[lo].from, t.lbFrom), CreatedTo: t.bands[hi-1].to}})
			}
		case full[lo]:
			budget := paid != nil && paid[lo]
			for hi < n && full[hi] && (paid != nil && paid[hi]) == budget {
				hi++
			}
			p := t.fullRead(lo, hi)
			p.budget = budget
			t.plan = append(t.plan, p)
		}
		lo = hi
	}
}

func (t *Tiered) fullRead(lo, hi int) planned {
	return planned{kind: kindFull, lo: lo, hi: hi,
		q: Query{CreatedFrom: max(t.bands[lo].from, t.lbFrom), CreatedTo: t.bands[hi-1].to}}
}

func (t *Tiered) countOpen(lo, hi, status int) int {
	n := 0
	for _, s := range t.bands[lo:hi] {
		n += s.open[status]
	}
	return n
}

// oldestFirst returns the indexes of the bands not excluded, least
// recently read first, ties in band order.
func (t *Tiered) oldestFirst(exclude []bool, readAt func(*band) int64) []int {
	idx := make([]int, 0, len(t.bands))
	for i := range t.bands {
		if !exclude[i] {
			idx = append(idx, i)
		}
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(readAt(t.bands[a]), readAt(t.bands[b])) })
	return idx
}

// Observe records what a page says about each task. It ends a read of the
// head of the list at the first page without news.
func (t *Tiered) Observe(_ Query, p *Page) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	kind := kindNewest
	if t.pos < len(t.plan) {
		kind = t.plan[t.pos].kind
	}
	more := kind != kindHead
	if kind == kindScan {
		t.scan.more = t.observeScan(p)
	}
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
			r.updated, r.lastLog, r.logs, r.handled = h.Updated, h.LastLog, int32(min(h.Logs, 1<<31-1)), true
		}
	}
	return more
}

// maxScanPages bounds the head scan of one cycle when there is no budget
// to bound it by.
const maxScanPages = 10

// observeScan reads one page of the head scan before Observe records it,
// and reports whether the scan should read the next page: while the list
// is sorted by updated_at, newest first, and the page shows news (a task
// not handled in this version, or one updated at or after the newest
// updated_at the last complete scan listed). The order is shown only by
// positive evidence: a task with a new log listed ahead of a task with a
// higher id, which neither an id nor a creation order does. updated_at
// alone proves nothing: the API moves it without a log.
func (t *Tiered) observeScan(p *Page) bool {
	sc := &t.scan
	sc.pages++
	news := false
	oldest := WallTime(0)
	for i := range p.Heads {
		h := &p.Heads[i]
		r := t.recs[h.ID]
		if h.Updated != 0 {
			if sc.prevUpdated != 0 && h.Updated > sc.prevUpdated {
				sc.negative = true
			}
			sc.prevUpdated = h.Updated
			sc.top = max(sc.top, h.Updated)
			if oldest == 0 || h.Updated < oldest {
				oldest = h.Updated
			}
		}
		if sc.minChanged != 0 && h.ID > sc.minChanged {
			sc.positive = true
		}
		if r == nil || !r.unchanged(h) {
			news = true
		}
		if r != nil && r.handled && (h.LastLog != r.lastLog || h.Logs != int(r.logs)) {
			if sc.minChanged == 0 || h.ID < sc.minChanged {
				sc.minChanged = h.ID
			}
		}
	}
	if t.scanTop != 0 && oldest >= t.scanTop {
		news = true // tasks updated since the last scan may follow
	}
	limit := maxScanPages
	if t.cfg.Budget > 0 {
		limit = max(t.cfg.Budget/4, 2)
	}
	if p.Number <= 1 {
		sc.served = len(p.Heads) // the API may serve smaller pages than asked
	}
	end := len(p.Heads) == 0 || (p.Number-1)*sc.served+len(p.Heads) >= p.Total
	switch {
	case !news || end:
		sc.complete = true
		return false
	case sc.negative || sc.pages >= limit:
		return false
	}
	return true
}

// place puts a new record into the band its creation time falls in. Before
// the first full sweep ends, records wait to be placed by build.
func (t *Tiered) place(r *rec) {
	if !t.ready {
		return
	}
	if r.created == 0 {
		if t.unplaced++; t.unplaced == 1 {
			t.log.Warn().Int64("task_id", r.id).Msg("task has no readable created_at: it is read by no tier until it changes")
		}
		return
	}
	if r.created >= t.newest.from {
		t.newest.add(r)
		return
	}
	i, found := slices.BinarySearchFunc(t.bands, r.created, func(s *band, w WallTime) int {
		switch {
		case s.to < w:
			return -1
		case s.from > w:
			return 1
		}
		return 0
	})
	if found {
		t.bands[i].add(r)
	}
}

// Swept records a finished query and, once a round of queries is
// complete, returns the follow-ups it calls for: after the main queries,
// fetches and band reads; after those, fetches for what the band reads
// did not list. There is no third round.
func (t *Tiered) Swept(_ Query, st SweepStats) []Query {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pos >= len(t.plan) {
		return nil
	}
	p := &t.plan[t.pos]
	t.pos++
	p.done, p.shift = true, st.PageShift()
	t.cur.Requests += st.Requests
	if p.shift {
		t.cur.PageShifts++
	}
	switch p.kind {
	case kindNewest:
		t.cur.NewestRequests += st.Requests
	case kindOpen:
		t.cur.OpenRequests += st.Requests
	case kindInitial, kindHead, kindFull:
		t.cur.SweepRequests += st.Requests
		if p.budget {
			t.cur.BudgetRequests += st.Requests
		}
	case kindScan:
		t.cur.ScanRequests += st.Requests
		if t.scan.more {
			// One page at a time: a page fetched ahead would be wasted
			// on the last one. The next page is part of this round.
			t.scan.more = false
			q := p.q
			q.Page++
			t.plan = append(t.plan, planned{kind: kindScan, q: q})
			t.roundEnd = len(t.plan)
			return []Query{q}
		}
	case kindFetch:
		t.cur.FetchRequests += st.Requests
		t.cur.Fetches++
		delete(t.pending, p.id)
		if r := t.recs[p.id]; r != nil && r.seen != t.cycle {
			// The API no longer lists the task: forget it.
			if r.band != nil {
				r.band.remove(r)
			}
			t.forget(r)
		}
	}
	if p.kind == kindInitial && p.shift && t.inversions*20 < t.pairs {
		// Tasks moved while the sweep paged through a list sorted by
		// updated_at: those updated during the sweep moved to its head, and
		// some were passed over. Read the head again until a page lists
		// no task updated since the sweep began.
		t.headFrom = WallTimeOf(t.start.Add(-closeLag), t.cfg.Location)
		t.plan = append(t.plan, planned{kind: kindHead, q: p.q})
		return []Query{p.q}
	}
	if t.pos < t.roundEnd || !t.ready {
		return nil
	}
	return t.nextRound()
}

// nextRound plans the round after the one just swept: two rounds of
// follow-ups, then the finished bands the budget pays for. An empty round
// is passed over.
func (t *Tiered) nextRound() []Query {
	for t.round < 3 {
		from := len(t.plan)
		if t.round < 2 {
			t.followUps(t.roundStart, t.roundEnd)
		} else {
			t.planBudget()
		}
		t.round++
		t.roundStart, t.roundEnd = t.roundEnd, len(t.plan)
		if len(t.plan) > from {
			return t.queries(from)
		}
	}
	return nil
}

// planBudget spends what is left of the budget after the ceilings on full
// reads of the bands read least recently, as many as it pays for at one
// request per page. A cycle whose head scan found the list in updated_at
// order found every change through it and spends nothing here.
func (t *Tiered) planBudget() {
	left := t.cfg.Budget - t.cur.Requests
	if t.cfg.Budget <= 0 || left <= 0 || t.scanOrdered() {
		return
	}
	read := make([]bool, len(t.bands))
	for i := range t.plan {
		if p := &t.plan[i]; p.kind == kindFull {
			for j := p.lo; j < p.hi; j++ {
				read[j] = true
			}
		}
	}
	chosen := t.chooseBudget(read, left)
	for lo := 0; lo < len(chosen); {
		hi := lo + 1
		if chosen[lo] {
			for hi < len(chosen) && chosen[hi] {
				hi++
			}
			p := t.fullRead(lo, hi)
			p.budget = true
			t.plan = append(t.plan, p)
		}
		lo = hi
	}
}

// chooseBudget picks the bands not excluded that were read least
// recently, as many as left pages pay for at one request per page, and
// counts their reads toward the FullSweep ceiling.
func (t *Tiered) chooseBudget(exclude []bool, left int) []bool {
	chosen := make([]bool, len(t.bands))
	if left <= 0 {
		return chosen
	}
	total := 0
	for _, s := range t.bands {
		total += s.weight()
	}
	for _, i := range t.oldestFirst(exclude, func(b *band) int64 { return b.lastFull.UnixNano() }) {
		cost := max((t.bands[i].weight()+t.cfg.PageSize-1)/t.cfg.PageSize, 1)
		if cost > left {
			break
		}
		chosen[i] = true
		left -= cost
		t.fullCredit -= float64(t.bands[i].weight())
	}
	t.fullCredit = max(t.fullCredit, -float64(total))
	return chosen
}

// scanOrdered reports whether this cycle's head scan showed the list in
// updated_at order and read it down to where nothing changed.
func (t *Tiered) scanOrdered() bool {
	sc := &t.scan
	return sc.complete && sc.positive && !sc.negative
}

// followUps plans, after the round plan[from:to], a fetch for every task
// known to be in a range that round read (for the open tier: known to be
// open) that was not listed this cycle; in the first round, also for the
// tasks pending from earlier cycles, and a full read instead of fetches
// for a band that misses more tasks than it has pages.
func (t *Tiered) followUps(from, to int) {
	missing := make(map[*band][]int64)
	var order []*band // bands in the order found, for a stable plan
	note := func(s *band, id int64) {
		if _, ok := missing[s]; !ok {
			order = append(order, s)
		}
		missing[s] = append(missing[s], id)
	}
	check := func(s *band, openOnly bool) {
		for _, r := range s.recs {
			if r.seen != t.cycle && (!openOnly || isOpen(r.status)) {
				note(s, r.id)
			}
		}
	}
	readInFull := make(map[*band]bool)
	for i := range t.plan {
		if p := &t.plan[i]; p.kind == kindFull && p.done {
			for _, s := range t.bands[p.lo:p.hi] {
				readInFull[s] = true
			}
		}
	}
	for i := from; i < to; i++ {
		p := &t.plan[i]
		switch {
		case !p.done:
		case p.kind == kindNewest:
			check(&t.newest, false)
		case p.kind == kindFull:
			for _, s := range t.bands[p.lo:p.hi] {
				check(s, false)
			}
		case p.kind == kindOpen && (i+1 >= to || t.plan[i+1].kind != kindOpen || t.plan[i+1].lo != p.lo):
			// The last status list of the range: both were read.
			for _, s := range t.bands[p.lo:p.hi] {
				check(s, true)
			}
		}
	}
	if t.round == 0 {
		for id := range t.pending {
			r := t.recs[id]
			if r == nil || r.seen == t.cycle {
				delete(t.pending, id)
				continue
			}
			if !slices.Contains(missing[r.band], id) {
				note(r.band, id)
			}
		}
	}
	fetches := 0
	for _, s := range order {
		ids := missing[s]
		if t.round == 0 && s != nil && s != &t.newest && !readInFull[s] &&
			len(ids) > max((s.weight()+t.cfg.PageSize-1)/t.cfg.PageSize, 2) {
			i := slices.Index(t.bands, s)
			t.plan = append(t.plan, t.fullRead(i, i+1))
			readInFull[s] = true
			continue
		}
		slices.Sort(ids)
		for _, id := range ids {
			if fetches >= maxFetches {
				t.pending[id] = struct{}{}
				continue
			}
			fetches++
			tid := id
			t.plan = append(t.plan, planned{kind: kindFetch, id: id, q: Query{TaskID: &tid}})
		}
	}
}

// End commits the cycle's reads to the schedule, or, after a failure,
// leaves the schedule as it was: what was not read in full is read again.
func (t *Tiered) End(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	end := t.cfg.Now()
	t.lastDur = max(end.Sub(t.start), 0)
	if err != nil {
		t.fullCredit, t.openCredit, t.openCursor = t.undo.fullCredit, t.undo.openCredit, t.undo.openCursor
		return
	}
	if !t.ready {
		t.build()
	} else {
		t.commit()
		t.account()
	}
	t.updateStats()
	if t.state != nil && (t.lastSave.IsZero() || end.Sub(t.lastSave) >= saveInterval) {
		t.save()
		t.lastSave = end
	}
}

// commit marks what this cycle read.
func (t *Tiered) commit() {
	newestShift := false
	for i := range t.plan {
		p := &t.plan[i]
		if !p.done {
			continue
		}
		switch p.kind {
		case kindNewest:
			t.newest.lastFull, t.newest.lastOpen, t.newest.lastOpenAt = t.start, t.cycle, t.start
			newestShift = p.shift
		case kindOpen:
			for _, s := range t.bands[p.lo:p.hi] {
				s.lastOpen, s.lastOpenAt = t.cycle, t.start
			}
		case kindFull:
			for _, s := range t.bands[p.lo:p.hi] {
				s.lastOpen, s.lastOpenAt = t.cycle, t.start
				listed := 0
				for _, r := range s.recs {
					if r.seen == t.cycle {
						listed++
					} else if p.budget {
						// The budget round has no follow-ups of its own:
						// the next cycle fetches what it did not list.
						t.pending[r.id] = struct{}{}
					}
				}
				s.size, s.again = listed, false
				switch {
				case !p.shift:
					s.lastFull, s.known = t.start, true
				case s.known:
					// What the shift hid was known, hence fetched.
					s.lastFull = t.start
				default:
					// A task new to the band may be hidden: read it again
					// next cycle.
					s.again = true
					t.log.Debug().Stringer("from", s.from).Stringer("to", s.to).Msg("page shift in a slice not known in full: reading it again")
				}
			}
		}
	}
	t.closeNewest(newestShift)
}

// needWeight is the weight of the newest cycle in CeilingNeed's moving
// average.
const needWeight = 0.2

// account learns from a successful cycle what the ceilings cost and
// whether the head scan showed updated_at order, and logs when either
// changes the plan.
func (t *Tiered) account() {
	// What the ceilings cost: measured, or, when budget reads stood in for
	// open-tier reads, what the open tier and the finished tier's share
	// would have cost at one request per page.
	ceiling := max(float64(t.cur.Requests-t.cur.BudgetRequests),
		t.tierCost(float64(t.cur.ScanRequests+t.cur.NewestRequests+t.cur.FetchRequests)))
	if t.need == 0 {
		t.need = ceiling
	} else {
		t.need += needWeight * (ceiling - t.need)
	}
	if t.scan.complete {
		t.scanTop = max(t.scan.top, t.scanTop)
	}
	t.ordered = t.scanOrdered()
	if t.ordered != t.orderLog && (t.ordered || t.scan.negative) {
		t.orderLog = t.ordered
		if t.ordered {
			t.log.Info().Msg("the API lists tasks by updated_at, newest first: reading the head of the list finds every change; finished slices are read at poll.full_sweep")
		} else {
			t.log.Info().Msg("the API's list is not in updated_at order (any more): the budget reads finished slices again")
		}
	}
	short := t.cfg.Budget > 0 && t.need > float64(t.cfg.Budget)*1.05
	if short != t.short {
		t.short = short
		if short {
			t.log.Warn().Int("budget", t.cfg.Budget).Int("need", int(math.Ceil(t.need))).
				Msgf("poll.budget below what the ceilings need (%d requests per cycle): poll.open_sweep and poll.full_sweep are kept, nothing is left to read finished tasks more often", int(math.Ceil(t.need)))
		} else {
			t.log.Info().Int("budget", t.cfg.Budget).Msg("poll.budget covers the ceilings again")
		}
	}
}

// tierCost estimates what the open tier at OpenSweep and the finished tier
// at FullSweep cost per cycle at one request per page, plus fixed requests
// (the head scan, the newest window, fetches).
func (t *Tiered) tierCost(fixed float64) float64 {
	opens, total := t.newest.opens(), 0
	for _, s := range t.bands {
		opens += s.opens()
		total += s.weight()
	}
	pages := func(n float64) float64 { return n / float64(t.cfg.PageSize) }
	est := fixed + math.Ceil(pages(float64(opens)/float64(t.openEvery))) +
		pages(float64(total))*float64(t.cfg.Interval)/float64(t.cfg.FullSweep)
	if opens > 0 {
		est++ // two status lists: two partial pages
	}
	return est
}

// EstimateCeilings estimates from the tier state a relay saved in state
// what poll.open_sweep and poll.full_sweep need per cycle under cfg, for
// check-config. ok is false when state holds no usable tier state.
func EstimateCeilings(cfg Config, state StateStore) (need float64, ok bool) {
	t := NewTiered(cfg, state, zerolog.Nop())
	if !t.ready {
		return 0, false
	}
	return math.Round(t.tierCost(2)*10) / 10, true // the head scan and the newest window
}

// closeNewest turns the older part of the newest window into a band once
// it holds newestMax tasks, keeping in the window the tasks of its newest
// second and those created within closeLag of the cycle's start. After a
// page shift it waits, unless the window grew large; the band made then
// is read again next cycle.
func (t *Tiered) closeNewest(shift bool) {
	nw := &t.newest
	if len(nw.recs) < newestMax || (shift && len(nw.recs) < 4*newestMax) {
		return
	}
	var b WallTime
	for _, r := range nw.recs {
		b = max(b, r.created)
	}
	b = min(b, WallTimeOf(t.start.Add(-closeLag), t.cfg.Location))
	older := 0
	for _, r := range nw.recs {
		if r.created < b {
			older++
		}
	}
	if b <= nw.from || older < newestMax {
		return
	}
	s := &band{from: nw.from, to: b - 1, lastFull: nw.lastFull, lastOpen: nw.lastOpen, lastOpenAt: nw.lastOpenAt,
		known: !shift, again: shift}
	var kept []*rec
	for _, r := range nw.recs {
		if r.created < b {
			s.add(r)
		} else {
			kept = append(kept, r)
		}
	}
	s.size = len(s.recs)
	nw.recs, nw.open, nw.from = kept, [2]int{}, b
	for _, r := range kept {
		if isOpen(r.status) {
			nw.open[r.status]++
		}
	}
	if n := len(t.bands); n > 0 && t.bands[n-1].weight()+s.weight() <= bandTarget && t.bands[n-1].to+1 == s.from {
		prev := t.bands[n-1]
		prev.to = s.to
		for _, r := range s.recs {
			prev.add(r)
		}
		prev.size += s.size
		prev.known = prev.known && s.known
		prev.again = prev.again || s.again
		prev.lastFull = earliest(prev.lastFull, s.lastFull)
		prev.lastOpen = min(prev.lastOpen, s.lastOpen)
		prev.lastOpenAt = earliest(prev.lastOpenAt, s.lastOpenAt)
		return
	}
	t.bands = append(t.bands, s)
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.IsZero() {
		return time.Time{}
	}
	if a.Before(b) {
		return a
	}
	return b
}

// build makes the bands from the first full sweep.
func (t *Tiered) build() {
	shift := len(t.plan) > 0 && t.plan[0].shift
	all := make([]*rec, 0, len(t.recs))
	var newestAt WallTime
	for _, r := range t.recs {
		if r.created == 0 {
			continue
		}
		all = append(all, r)
		newestAt = max(newestAt, r.created)
	}
	slices.SortFunc(all, func(a, b *rec) int {
		return cmp.Or(cmp.Compare(a.created, b.created), cmp.Compare(a.id, b.id))
	})
	t.ready = true
	from := min(newestAt, WallTimeOf(t.start.Add(-closeLag), t.cfg.Location))
	t.newest = band{from: max(from, t.lbFrom), lastFull: t.start, lastOpen: t.cycle, lastOpenAt: t.start}
	t.bands = t.bands[:0]
	cur := &band{from: t.lbFrom}
	for i, r := range all {
		if r.created >= t.newest.from {
			t.newest.add(r)
			continue
		}
		if len(cur.recs) >= bandTarget && r.created > all[i-1].created {
			cur.to = r.created - 1
			t.bands = append(t.bands, cur)
			cur = &band{from: r.created}
		}
		cur.add(r)
	}
	if t.newest.from > cur.from {
		cur.to = t.newest.from - 1
		t.bands = append(t.bands, cur)
	}
	for _, s := range t.bands {
		s.size, s.known = len(s.recs), !shift
		s.lastFull, s.lastOpen, s.lastOpenAt = t.start, t.cycle, t.start
	}
	t.log.Info().Int("tasks", len(all)).Int("slices", len(t.bands)).Bool("page_shift", shift).Msg("full sweep done: polling in tiers from now on")
}

// updateStats fills t.stats after a successful cycle.
func (t *Tiered) updateStats() {
	st := t.cur
	st.Ready = t.ready
	st.Slices = len(t.bands)
	st.Tasks = len(t.recs)
	st.Pending = len(t.pending)
	st.Budget = t.cfg.Budget
	st.CeilingNeed = math.Round(t.need*10) / 10
	st.BudgetShort = t.short
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
