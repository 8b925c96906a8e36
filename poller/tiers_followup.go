package poller

// What a Tiered cycle does after each swept query: counting its requests,
// paging on through the head scan or the initial sweep's head, and, once a
// round is done, planning the next: two rounds of follow-ups (task_id
// fetches, and band reads for the tasks a range did not list), then the
// budget's reads (tiers_budget.go).

import "slices"

// Swept records a finished query and, once a round of queries is
// complete, returns the follow-ups it calls for: after the main queries,
// fetches and band reads; after those, fetches for what the band reads
// did not list. There is no third round.
func (t *Tiered) Swept(_ Query, st SweepStats) []Query {
	t.mu.Lock()
	defer t.unlock()
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
		if r := t.recs[p.id]; r != nil && r.seen != t.cycle && st.Tasks == 0 {
			// The look-up lists nothing: the task is gone. The Poller
			// reports it (Gone) and Settle forgets it, or, held back or
			// not stored, has it looked up again next cycle. Marked seen
			// so that no other follow-up of this cycle fetches it again.
			t.gone = append(t.gone, p.id)
			r.seen = t.cycle
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
