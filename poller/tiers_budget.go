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

// budgetAccount keeps what the ceilings (the newest window, the head scan,
// the open tier at Config.OpenSweep, the finished tier at Config.FullSweep
// and the follow-ups) cost per cycle, and whether Config.Budget covers it.
type budgetAccount struct {
	need  float64 // requests the ceilings need per cycle, averaged
	short bool    // the budget was below what the ceilings need, last logged
}

// add counts a cycle's ceiling cost into the average.
func (a *budgetAccount) add(ceiling float64) {
	if a.need == 0 {
		a.need = ceiling
	} else {
		a.need += needWeight * (ceiling - a.need)
	}
}

// spare is what budget leaves after the ceilings' need; negative when
// short.
func (a *budgetAccount) spare(budget int) int {
	return budget - int(math.Ceil(a.need))
}

// check returns a line to log when budget stops or starts covering the
// ceilings' need, nil otherwise.
func (a *budgetAccount) check(budget int) func(zerolog.Logger) {
	short := budget > 0 && a.need > float64(budget)*1.05
	if short == a.short {
		return nil
	}
	a.short = short
	need := int(math.Ceil(a.need))
	if short {
		return func(log zerolog.Logger) {
			log.Warn().Int("budget", budget).Int("need", need).
				Msgf("poll.budget below what the ceilings need (%d requests per cycle): poll.open_sweep and poll.full_sweep are kept, nothing is left to read finished tasks more often", need)
		}
	}
	return func(log zerolog.Logger) {
		log.Info().Int("budget", budget).Msg("poll.budget covers the ceilings again")
	}
}

// account learns from a successful cycle what the ceilings cost and
// whether the head scan showed updated_at order, and logs when either
// changes the plan.
func (t *Tiered) account() {
	// What the ceilings cost: measured, or, when budget reads stood in for
	// open-tier reads, what the open tier and the finished tier's share
	// would have cost at one request per page.
	ceiling := max(float64(t.cur.Requests-t.cur.BudgetRequests),
		t.tierCost(float64(t.cur.ScanRequests+t.cur.NewestRequests+t.cur.FetchRequests)))
	if !t.catchUp {
		// A cycle catching up with a shorter ceiling costs what no other
		// cycle will: it is left out of the average (Reconfigure).
		t.budget.add(ceiling)
	}
	t.learnOrder()
	if line := t.budget.check(t.cfg.Budget); line != nil {
		t.logLater(line)
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
