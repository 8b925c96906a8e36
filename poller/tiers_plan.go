package poller

// Planning a Tiered cycle's main queries (the head scan's first page, the
// newest window, the open tier and the finished tier) and, once the cycle
// succeeded, committing what it read to the bands' schedule.

import (
	"cmp"
	"slices"
	"time"

	"github.com/rs/zerolog"
)

// schedule is what planning a cycle changes before the cycle succeeded:
// the finished and the open tier's credits, and the open tier's place in
// its ring.
type schedule struct {
	fullCredit, openCredit float64
	openCursor             WallTime // the open tier's ring goes on at the band starting here
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
	if t.catchUp {
		// The reads a shorter FullSweep made due were not paid for by the
		// credit: without the debt they spread out again (Reconfigure).
		t.fullCredit = max(t.fullCredit, 0)
	}

	// The budget: what the ceilings left over the last cycles buys full
	// reads of the bands read least recently. Chosen before the open tier,
	// which then passes over them: a full read reads their open tasks too.
	// planBudget spends what is still left once the cycle's other reads
	// are done.
	var paid []bool
	if t.cfg.Budget > 0 && !t.ordered {
		paid = t.chooseBudget(full, t.budget.spare(t.cfg.Budget))
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
	if t.catchUp {
		t.openCredit = max(t.openCredit, 0) // as the finished tier's, above
	}
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
					from, to := s.from, s.to
					t.logLater(func(l zerolog.Logger) {
						l.Debug().Stringer("from", from).Stringer("to", to).Msg("page shift in a slice not known in full: reading it again")
					})
				}
			}
		}
	}
	t.closeNewest(newestShift)
}
