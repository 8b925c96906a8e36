package poller

// Tiered's bookkeeping of what it knows: a record per task, and the bands
// (fixed ranges of creation times) the records are placed in. Placing a
// record, trimming the bands to the lookback window, closing the newest
// window into a band, and building the bands after the first full sweep.

import (
	"cmp"
	"slices"
	"time"

	"github.com/rs/zerolog"
)

// rec is what Tiered knows of one task: where it is, and which version of
// it the handler accepted last (when handled), told apart as
// TaskHead.Unchanged does.
type rec struct {
	id      int64
	created WallTime
	updated WallTime
	lastLog int64
	logUpd  WallTime // newest updated_at of its logs
	seen    uint64   // cycle in which it was last listed
	band    *band    // nil when not placed
	logs    int32
	status  int8
	handled bool
	hot     bool // handled within hotSeconds of its last change: not skipped on its next read
}

// unchanged reports whether h is the version handled last.
func (r *rec) unchanged(h *TaskHead) bool {
	return r.handled && h.Updated != 0 && h.Updated == r.updated && h.LastLog == r.lastLog &&
		h.Logs == int(r.logs) && h.Status == int(r.status) && h.LogUpdated == r.logUpd
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

// place puts a new record into the band its creation time falls in. Before
// the first full sweep ends, records wait to be placed by build.
func (t *Tiered) place(r *rec) {
	if !t.ready {
		return
	}
	if r.created == 0 {
		if t.unplaced++; t.unplaced == 1 {
			id := r.id
			t.logLater(func(l zerolog.Logger) {
				l.Warn().Int64("task_id", id).Msg("task has no readable created_at: it is read by no tier until it changes")
			})
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

// forget drops r from the records (not from its band).
func (t *Tiered) forget(r *rec) {
	delete(t.recs, r.id)
	delete(t.pending, r.id)
	r.band = nil
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
		to := gap.to
		t.logLater(func(l zerolog.Logger) {
			l.Info().Stringer("from", lb).Stringer("to", to).Msg("lookback window grew: sweeping the new part in full")
		})
	}
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
	tasks, bands := len(all), len(t.bands)
	t.logLater(func(l zerolog.Logger) {
		l.Info().Int("tasks", tasks).Int("slices", bands).Bool("page_shift", shift).Msg("full sweep done: polling in tiers from now on")
	})
}
