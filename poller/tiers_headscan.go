package poller

// Tiered's head scan (headScan): each page of it read and judged, the
// order of the list it shows, and when to read the next page.

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

// scanOrdered reports whether this cycle's head scan showed the list in
// updated_at order and read it down to where nothing changed.
func (t *Tiered) scanOrdered() bool {
	sc := &t.scan
	return sc.complete && sc.positive && !sc.negative
}

// learnOrder keeps what a successful cycle's head scan showed: the newest
// updated_at it listed, once complete, and whether the list is in
// updated_at order; it logs when the order starts or stops holding.
func (t *Tiered) learnOrder() {
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
}
