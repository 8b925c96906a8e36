package relay

// The rules' hook into polling: every read of a task, decoded or skipped
// as unchanged, reaches the rules after its page committed, and the
// derived events they fire are stored with the rule states.

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/diff/rules"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/store"
)

// ruleStrategy wraps the poll strategy so that every read of a task
// reaches the rules: decoded tasks and those the sweep skipped as
// unchanged, with the cycle's start as the time of the read (every request
// of a cycle is sent after it, so a read counts as made at or after a due
// time only if it surely was). Tasks whose step came due are queued for a
// task_id read in the next cycle (Tiered.Fetch).
type ruleStrategy struct {
	poller.Strategy
	eng   *rules.Engine
	h     *Ingester
	fetch func(ids ...int64) // nil when every cycle reads every task
	start time.Time          // start of the cycle under way
}

// ruleTieredStrategy is a ruleStrategy around a *poller.Tiered: it also
// skips unchanged tasks and reports the tiers' stats.
type ruleTieredStrategy struct {
	*ruleStrategy
	tiers *poller.Tiered
}

// Unchanged lets the sweeps skip what the tiers handled before.
func (s *ruleTieredStrategy) Unchanged(h *poller.TaskHead) bool { return s.tiers.Unchanged(h) }

// Stats returns the tiers' stats.
func (s *ruleTieredStrategy) Stats() poller.TierStats { return s.tiers.Stats() }

// Gone passes on the tiers' confirmed deletions.
func (s *ruleTieredStrategy) Gone() ([]int64, int, int) { return s.tiers.Gone() }

// Settle passes on what became of them.
func (s *ruleTieredStrategy) Settle(reported, again []int64) { s.tiers.Settle(reported, again) }

var _ poller.TieredStrategy = (*ruleTieredStrategy)(nil)
var _ poller.DeletionFinder = (*ruleTieredStrategy)(nil)
var _ poller.Skipper = (*ruleTieredStrategy)(nil)

// newRuleStrategy wraps inner; tiers is inner when it is a *poller.Tiered.
func newRuleStrategy(inner poller.Strategy, tiers *poller.Tiered, eng *rules.Engine, h *Ingester) poller.Strategy {
	s := &ruleStrategy{Strategy: inner, eng: eng, h: h}
	if tiers == nil {
		return s
	}
	s.fetch = tiers.Fetch
	return &ruleTieredStrategy{ruleStrategy: s, tiers: tiers}
}

// Cycle queues the tasks due by now for a read in this cycle.
func (s *ruleStrategy) Cycle(now time.Time) []poller.Query {
	s.start = now
	if ids := s.eng.Due(now); len(ids) > 0 && s.fetch != nil {
		s.fetch(ids...)
	}
	return s.Strategy.Cycle(now)
}

// Observe hands the page's reads to the rules, then to the strategy.
func (s *ruleStrategy) Observe(q poller.Query, p *poller.Page) bool {
	s.h.observeRules(p, s.start)
	return s.Strategy.Observe(q, p)
}

// observeRules evaluates the rules on one page once the page's logs are
// committed, so a derived event always follows the log events of the same
// read in offset order; the page's outcome is then reported like an
// ingest's. Called from the poller's goroutine, right after HandlePage.
func (h *Ingester) observeRules(p *poller.Page, at time.Time) {
	var unchanged []int64
	for i := range p.Heads {
		if p.Heads[i].Skipped {
			unchanged = append(unchanged, p.Heads[i].ID)
		}
	}
	tasks := p.Tasks
	if len(tasks) == 0 && len(unchanged) == 0 {
		return
	}
	if h.bufPages > 0 {
		// The page waits in HandlePage's gathering: observed once its
		// Ingest is under way (start).
		h.deferred = append(h.deferred, deferredRules{p, at})
		return
	}
	prev := h.pending
	ch := make(chan ingestOutcome, 1)
	h.pending = ch
	go func() {
		var o ingestOutcome
		if prev != nil {
			o = <-prev
		}
		var de *store.DiffError
		switch {
		case errors.As(o.err, &de):
			// Tasks whose logs did not parse stay out until they do.
			kept := make([]diff.Task, 0, len(tasks))
			for i := range tasks {
				if !slices.Contains(de.TaskIDs, tasks[i].ID) {
					kept = append(kept, tasks[i])
				}
			}
			tasks = kept
		case o.err != nil:
			ch <- o // the page is read again: its tasks were forgotten
			return
		}
		if err := h.applyRules(tasks, unchanged, at); err != nil {
			ids := make([]int64, len(tasks))
			for i := range tasks {
				ids[i] = tasks[i].ID
			}
			if h.tiers != nil {
				h.tiers.Forget(ids...)
			}
			if o.err == nil {
				o.err = err
			}
		}
		ch <- o
	}()
}

// applyRules evaluates and persists one page's reads.
func (h *Ingester) applyRules(tasks []diff.Task, unchanged []int64, at time.Time) error {
	b := h.rules.Evaluate(tasks, unchanged, at)
	if len(b.Changes) == 0 {
		return nil
	}
	ws := make([]store.RuleWrite, len(b.Changes))
	for i, c := range b.Changes {
		ws[i] = store.RuleWrite{TaskID: c.TaskID, Record: c.Record, Task: c.Task, Events: c.Events}
	}
	res, err := h.db.ApplyRules(context.Background(), ws)
	if err != nil {
		return err
	}
	h.rules.Commit(b)
	h.metrics.eventsAppended(res.Types)
	return nil
}

// RulesView is what `status` and GET /v1/poll show of the rules.
type RulesView struct {
	Rules   int        `json:"rules"`
	Tracked int        `json:"tracked_tasks"` // tasks a rule matches or fired for
	Overdue int        `json:"due_unread"`    // tasks with a step due, not read since
	Waiting int        `json:"fetches_waiting"`
	NextDue *time.Time `json:"next_due,omitempty"`
}

// rulesView returns the rules' state; nil without rules.
func (r *Relay) rulesView(ps poller.Status) *RulesView {
	if r.rules == nil {
		return nil
	}
	v := &RulesView{Rules: len(r.rules.Rules()), Tracked: r.rules.Len(), Overdue: r.rules.Overdue(),
		Waiting: ps.Tiers.Pending, NextDue: timePtr(r.rules.NextDue())}
	return v
}
