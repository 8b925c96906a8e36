package poller

// Tiered's budget accounting: what the ceilings (Config.OpenSweep and
// Config.FullSweep) cost per cycle, whether Config.Budget covers it, and
// spending what the budget leaves over on full reads of the bands read
// least recently.

import (
	"math"

	"github.com/rs/zerolog"
)

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
