package poller

// Deletions: a task the relay has seen that is gone, confirmed by a
// task_id look-up that lists nothing, is reported to a Handler that is a
// Deleter. The Tiered strategy finds them with its follow-up fetches
// (DeletionFinder); with the naive Lookback strategy the Poller itself
// looks up, after a sweep of the whole lookback window, the tasks the
// handler tracks (Tracker) that the sweep did not list. Either way a guard
// holds a mass deletion back.

import (
	"context"
	"slices"
	"time"
)

// Deleter is an optional interface of a Handler: the Poller reports to it
// the tasks a task_id look-up confirmed gone. It is called from the
// goroutine running Poller.Run, after SweepDone succeeded, at most once a
// cycle. On error the tasks are looked up again in the next cycle and
// reported then if still gone: a deletion is never lost.
type Deleter interface {
	HandleDeleted(ctx context.Context, ids []int64, confirmed time.Time) error
}

// Tracker is an optional interface of a Handler that is a Deleter: with
// the Lookback strategy the Poller looks up the tracked tasks a sweep of
// the whole window did not list, and the Tiered strategy learns from it,
// after a restart, the tasks its saved state does not hold (finished
// ones), so that one deleted meanwhile is still found. Tracked calls fn
// with every task the handler has seen created at or after since (Unix
// seconds; created is 0 when unknown), until fn returns false.
// store.Ingester's Tracked has this form.
type Tracker interface {
	Tracked(since int64, fn func(taskID, created int64) bool) error
}

// trackedSeeder is a Strategy that learns the tracked tasks once
// (Tiered.SeedTracked).
type trackedSeeder interface {
	SeedTracked(tr Tracker, since time.Time) (done bool)
}

// DeletionFinder is a Strategy that confirms deletions with look-ups of
// its own (Tiered). After a cycle whose queries and SweepDone succeeded
// the Poller calls Gone, decides, and then Settle, before End.
type DeletionFinder interface {
	// Gone returns the tasks whose look-up in this cycle listed nothing,
	// how many more tasks wait for a look-up (missed by a range read, not
	// fetched yet), and how many tasks the strategy tracks.
	Gone() (ids []int64, waiting, tracked int)
	// Settle forgets the reported tasks and looks the others up again in
	// the next cycle.
	Settle(reported, again []int64)
}

// Mass-deletion guard: when more tasks would be deleted in one cycle than
// max(minHeld, heldShare of the tracked tasks), none is reported.
const (
	minHeld   = 10
	heldShare = 0.05
)

// deletionLimit is the most deletions one cycle may report.
func deletionLimit(tracked int) int {
	return max(minHeld, int(float64(tracked)*heldShare))
}

// fullCheck is what the Poller gathers for the deletions of a Lookback
// cycle: whether a query covered the whole lookback window, and the tasks
// it listed.
type fullCheck struct {
	covered bool
	listed  map[int64]struct{}
}

// covers reports whether q reads every task created since from, unfiltered.
func covers(q Query, from time.Time) bool {
	return !q.StartAt.IsZero() && !q.StartAt.After(from) && q.EndAt.IsZero() && q.TaskID == nil &&
		q.CreationID == nil && q.Type == nil && q.Status == nil && q.Name == "" && q.CreatedFrom == 0 &&
		q.CreatedTo == 0 && q.Page <= 1 && q.Pages == 0
}

// lookUpTracked is the Lookback strategy's deletion check, run after a
// sweep of the whole window: the tracked tasks it did not list are looked
// up by task_id, at most maxFetches a cycle (fewer when Config.Budget
// leaves less, but at least one), starting after the last one looked up
// in the cycle before, so that many are spread over cycles. It returns
// the tasks whose look-up listed nothing, how many candidates were not
// looked up, and how many tasks are tracked.
func (p *Poller) lookUpTracked(ctx context.Context, start time.Time, fc *fullCheck, total *SweepStats, n *int,
	handle func(Query) func(context.Context, *Page) error) (gone []int64, waiting, tracked int, err error) {
	since := start.Add(-p.cur.lookback).Add(closeLag).Unix() // a minute's margin at the window's edge
	var missing []int64
	if terr := p.tracker.Tracked(since, func(id, _ int64) bool {
		tracked++
		if _, ok := fc.listed[id]; !ok {
			missing = append(missing, id)
		}
		return true
	}); terr != nil {
		if !p.trackWarned {
			p.trackWarned = true
			p.log.Warn().Err(terr).Msg("tracked tasks not readable: deletions are not checked")
		}
		return nil, 0, 0, nil
	}
	p.trackWarned = false
	if len(missing) == 0 {
		return nil, 0, tracked, nil
	}
	slices.Sort(missing)
	// Start after the cursor, wrapping around.
	i, _ := slices.BinarySearch(missing, p.fullCursor+1)
	missing = append(missing[i:], missing[:i]...)
	limit := maxFetches
	if p.cur.budget > 0 {
		limit = min(limit, max(p.cur.budget-total.Requests, 1))
	}
	looked := 0
	for _, id := range missing {
		if looked >= limit {
			break
		}
		tid := id
		q := Query{TaskID: &tid}
		st, serr := p.c.SweepSkip(ctx, q, nil, handle(q))
		*total = total.add(st)
		*n++
		looked++
		if serr != nil {
			return nil, 0, tracked, serr
		}
		if st.Tasks == 0 {
			gone = append(gone, id)
		}
		p.nextCursor = id
	}
	return gone, len(missing) - looked, tracked, nil
}

// settleDeletions applies the guard to the cycle's confirmed deletions and
// reports them to the Deleter, or holds them. It returns what the
// strategy is to forget and what to look up again.
func (p *Poller) settleDeletions(ctx context.Context, gone []int64, waiting, tracked int) (reported, again []int64) {
	if len(gone) == 0 {
		p.setHeld(0)
		return nil, nil
	}
	if p.deleter == nil {
		return gone, nil // nobody to tell: forgotten, as before deletions were reported
	}
	if limit := deletionLimit(tracked); len(gone)+waiting > limit {
		p.setHeld(len(gone))
		p.log.Error().Int("confirmed", len(gone)).Int("waiting", waiting).Int("tracked", tracked).Int("limit", limit).
			Msg("deletions held: more tasks are gone than the guard lets through in one cycle (a token whose scope changed, an API listing nothing?); they are looked up again next cycle")
		return nil, gone
	}
	if err := p.deleter.HandleDeleted(ctx, gone, p.now()); err != nil {
		p.log.Warn().Err(err).Int("tasks", len(gone)).Msg("deletions not stored: looked up again next cycle")
		return nil, gone
	}
	p.setHeld(0)
	p.mu.Lock()
	p.status.DeletionsReported += len(gone)
	p.mu.Unlock()
	p.log.Info().Ints64("task_ids", gone).Msg("tasks deleted upstream")
	return gone, nil
}

func (p *Poller) setHeld(n int) {
	p.mu.Lock()
	p.status.DeletionsHeld = n
	p.mu.Unlock()
}

// SeedTracked learns the tasks tr tracks that were created since and
// that its state does not hold: once its saved state was loaded (it keeps
// the open tasks), or else once the first full sweep learnt every task
// it listed; it reports false, to be called again next cycle, before
// that. Each is placed in its band as finished, so that the band's next
// read finds it or, when it does not list it, looks it up. Without this a
// finished task deleted while the relay was stopped was never reported.
// A task it learns that is listed again is handled as a changed one once
// (the store finds it unchanged).
func (t *Tiered) SeedTracked(tr Tracker, since time.Time) bool {
	t.mu.Lock()
	defer t.unlock()
	if !t.ready {
		return false
	}
	added := 0
	err := tr.Tracked(since.Unix(), func(id, created int64) bool {
		if _, ok := t.recs[id]; ok || created == 0 {
			return true
		}
		r := &rec{id: id, created: WallTimeOf(time.Unix(created, 0), t.cfg.Location), status: 2}
		t.recs[id] = r
		t.place(r)
		added++
		return true
	})
	if err != nil {
		t.log.Warn().Err(err).Msg("tracked tasks not readable: a task deleted while the relay was stopped may go unreported")
		return true
	}
	if added > 0 {
		t.log.Info().Int("tasks", added).Msg("tracked tasks the tier state did not hold are placed in their slices")
	}
	return true
}
