package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/diff/rules"
	"github.com/incs-relay/incs-relay/docs"
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
	h     *ingester
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

var _ poller.TieredStrategy = (*ruleTieredStrategy)(nil)
var _ poller.Skipper = (*ruleTieredStrategy)(nil)

// newRuleStrategy wraps inner; tiers is inner when it is a *poller.Tiered.
func newRuleStrategy(inner poller.Strategy, tiers *poller.Tiered, eng *rules.Engine, h *ingester) poller.Strategy {
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
func (h *ingester) observeRules(p *poller.Page, at time.Time) {
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
func (h *ingester) applyRules(tasks []diff.Task, unchanged []int64, at time.Time) error {
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

// rulesView is what `status` and GET /v1/poll show of the rules.
type rulesView struct {
	Rules   int        `json:"rules"`
	Tracked int        `json:"tracked_tasks"` // tasks a rule matches or fired for
	Overdue int        `json:"due_unread"`    // tasks with a step due, not read since
	Waiting int        `json:"fetches_waiting"`
	NextDue *time.Time `json:"next_due,omitempty"`
}

// rulesView returns the rules' state; nil without rules.
func (r *Relay) rulesView(ps poller.Status) *rulesView {
	if r.rules == nil {
		return nil
	}
	v := &rulesView{Rules: len(r.rules.Rules()), Tracked: r.rules.Len(), Overdue: r.rules.Overdue(),
		Waiting: ps.Tiers.Pending, NextDue: timePtr(r.rules.NextDue())}
	return v
}

// line is the rules line of `status`.
func (v *rulesView) line() string {
	s := fmt.Sprintf("rules: %d, %d tasks tracked, %d due and waiting for their confirming read", v.Rules, v.Tracked, v.Overdue)
	if v.Waiting > 0 {
		s += fmt.Sprintf(" (%d task_id reads wait for the follow-up cap of 100 a cycle: firings may come a cycle late)", v.Waiting)
	}
	if v.NextDue != nil {
		s += "; next due " + v.NextDue.Format(time.RFC3339)
	}
	return s
}

// sampleRuleEvents are what preview shows of derived events: a firing of
// each configured rule (and its resolving event with resolve: true), or of
// a stalled rule when none is configured.
func sampleRuleEvents(cfg *config.Config) []diff.Event {
	rs := cfg.ValidRules()
	if len(rs) == 0 {
		return []diff.Event{
			diff.SampleDerivedEvent("stalled", "task.stalled", rules.SinceLastLog, 4*time.Hour, false),
			diff.SampleDerivedEvent("stalled", "task.stalled", rules.SinceLastLog, 4*time.Hour, true),
		}
	}
	var out []diff.Event
	for _, r := range rs {
		out = append(out, diff.SampleDerivedEvent(r.Name, r.Event, r.Since, r.After, false))
		if r.Resolve {
			out = append(out, diff.SampleDerivedEvent(r.Name, r.Event, r.Since, r.After, true))
		}
	}
	return out
}

// schema serves the JSON Schema of an event type the relay emits: a log
// type's, or for a configured rule's type the derived-event schema with
// that type.
func (a *adminServer) schema(w http.ResponseWriter, req *http.Request) {
	typ, ok := strings.CutSuffix(req.PathValue("file"), ".json")
	var body []byte
	switch {
	case !ok:
	case slices.Contains(diff.Types, typ):
		body, ok = docs.Schema(typ, false)
	case a.r.cfg.IsRuleType(typ):
		body, ok = docs.Schema(typ, true)
	default:
		ok = false
	}
	if !ok {
		httpError(w, http.StatusNotFound, fmt.Sprintf("no schema %q: want /v1/schemas/<type>.json for one of %s", req.PathValue("file"), strings.Join(a.r.cfg.EventTypes(), ", ")))
		return
	}
	w.Header().Set("Content-Type", "application/schema+json")
	_, _ = w.Write(body)
}

// asyncAPI serves docs/asyncapi.yaml.
func (a *adminServer) asyncAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(docs.AsyncAPI())
}
