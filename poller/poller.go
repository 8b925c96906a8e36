package poller

// The poll loop (Poller): a cycle every interval, its queries planned by a
// Strategy, each page handed to a Handler; and the naive Lookback
// strategy. The Tiered strategy is tiers.go.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/diff"
)

// Handler consumes what a Poller finds. Its methods are called from the
// goroutine running Poller.Run, one at a time. A Handler that is also a
// Deleter is told of the tasks a task_id look-up confirmed gone; with the
// Lookback strategy it must be a Tracker too (delete.go).
type Handler interface {
	// HandlePage diffs and stores one complete page of tasks. An error ends
	// the sweep; pages handled before stay handled. A handler may store a
	// page after returning, reporting a failure by its next HandlePage or
	// SweepDone; it must then make a Skipper hand the page's tasks over
	// again (Tiered.Forget), since they were observed meanwhile.
	HandlePage(ctx context.Context, tasks []diff.Task) error
	// SweepDone is called after every query of a cycle was swept and every
	// page handled without error. An error counts as a failed cycle.
	SweepDone(ctx context.Context, s SweepStats) error
}

// Strategy plans the queries of each poll cycle and learns from what they
// return. A Poller calls it from the goroutine running Run, one cycle at a
// time: Cycle; then, for each query in the order queued, Observe with each
// page the handler accepted and Swept once the query's sweep succeeded;
// finally End. A cycle stops at the first failed query. A Strategy that is
// also a Skipper is used as the sweeps' Skipper.
type Strategy interface {
	// Cycle returns the first queries of a cycle that starts at now.
	Cycle(now time.Time) []Query
	// Observe is called with each page of q once the handler accepted its
	// tasks, also a page all of whose tasks were skipped. p is not used by
	// the Poller afterwards. Returning false ends q's sweep after this page,
	// as a success.
	Observe(q Query, p *Page) (more bool)
	// Swept is called when q's sweep succeeded. The queries it returns are
	// queued behind the cycle's other queries.
	Swept(q Query, st SweepStats) []Query
	// End ends the cycle. err is nil when every query and
	// Handler.SweepDone succeeded.
	End(err error)
}

// Reconfigurer is a Strategy whose settings can change while the Poller
// runs: Poller.Reconfigure passes the new Config on to it. A Strategy
// wrapping another should pass it on too.
type Reconfigurer interface {
	// Reconfigure takes the settings of cfg it uses, defaults filled in,
	// for the cycles that start after it returned. It is called from any
	// goroutine, also while a cycle runs.
	Reconfigure(cfg Config)
}

// TieredStrategy is a *Tiered, or a Strategy wrapping one that passes its
// Stats on: the Poller's Status then reports the tiers.
type TieredStrategy interface {
	Strategy
	Stats() TierStats
}

// Lookback is the naive Strategy, New's default: every cycle sweeps all
// tasks created within the duration before now, with no end_at. It costs
// ceil(tasks/page size) requests a cycle and decodes every task. It holds
// no settings but its duration and is no Reconfigurer: while a Poller's
// Strategy is the Lookback New set, the Poller sweeps with its own
// Config.Lookback, which Poller.Reconfigure changes.
type Lookback time.Duration

// Cycle returns one query with StartAt now minus l.
func (l Lookback) Cycle(now time.Time) []Query {
	return []Query{{StartAt: now.Add(-time.Duration(l))}}
}

// Observe asks for every page.
func (Lookback) Observe(Query, *Page) bool { return true }

// Swept returns no follow-up.
func (Lookback) Swept(Query, SweepStats) []Query { return nil }

// End does nothing.
func (Lookback) End(error) {}

// maxQueries bounds the queries of one cycle, follow-ups included: a
// Strategy that keeps returning follow-ups cannot make a cycle endless.
const maxQueries = 10000

// errStop ends a sweep whose Strategy wants no more pages.
var errStop = errors.New("strategy wants no more pages")

// Status is a snapshot of a Poller's health. It carries no secrets.
type Status struct {
	LastSuccess time.Time // end of the last cycle that succeeded
	// LastPage is when the handler last took a page without an error:
	// the API answers and the store stores, though a cycle (the first
	// one, say) may still be under way. Zero before.
	LastPage            time.Time
	LastFailure         time.Time  // end of the last cycle that failed
	LastError           string     // error of the last failed cycle
	ConsecutiveFailures int        // failed cycles since the last success
	Cycles              int        // cycles ended, failed ones included
	Requests            int        // requests sent in the last cycle
	Queries             int        // queries swept in the last cycle, follow-ups included
	LastSweep           SweepStats // stats of the last cycle, summed over its queries
	// SeenThrough bounds what the relay may not have seen yet: every task
	// in the lookback window was read after this time, so a change made
	// before it was seen (a page shift can add one cycle). Zero until the
	// first cycle succeeded.
	SeenThrough time.Time
	// MaxUnseenAge is how old the oldest change not seen yet can be: the
	// time from SeenThrough to when Status was called; zero while
	// SeenThrough is.
	MaxUnseenAge time.Duration
	// OpenAge and FinishedAge are the freshness of the Tiered strategy's
	// tiers: how long ago the open task (any task, for FinishedAge) read
	// least recently was read, the worst-case age of a change not seen
	// yet. Zero for other strategies and before the first full sweep.
	OpenAge, FinishedAge time.Duration
	// FullSweepMissed is set when FinishedAge passed Config.FullSweep by
	// more than an interval: the rate limit does not let the relay read
	// every task that often.
	FullSweepMissed bool
	// Tiers describes the Tiered strategy's state; zero for other
	// strategies.
	Tiers TierStats
	// DeletionsHeld is how many tasks confirmed gone the mass-deletion
	// guard held back in the last cycle that confirmed any (0 once a
	// cycle reported them); DeletionsReported counts the tasks reported
	// to the handler's HandleDeleted since the Poller was made.
	DeletionsHeld, DeletionsReported int
}

// Poller runs a sweep every interval and hands its pages to a Handler.
type Poller struct {
	// Strategy plans each cycle's queries; New sets Lookback(cfg.Lookback),
	// the naive full sweep, whose duration follows Reconfigure's Lookback.
	// Set a *Tiered (NewTiered) to poll in tiers. Change it only before
	// Run.
	Strategy Strategy

	c       *Client
	h       Handler
	log     zerolog.Logger
	now     func() time.Time
	trigger chan struct{}
	reconf  chan struct{} // Reconfigure changed the settings: Run sets its timer anew
	// auto is the Strategy New set, Lookback(cfg.Lookback): while it is
	// the Strategy, cycles use Lookback(set.lookback) in its place.
	auto Lookback
	cur  pollSettings // the settings of the cycle under way; Run's goroutine only

	// Deletions (delete.go): the handler's optional parts, and for the
	// Lookback strategy the look-ups' place (their window and budget are
	// cur's).
	deleter     Deleter
	tracker     Tracker
	seeded      bool  // the strategy learnt the tracked tasks (trackedSeeder)
	fullCursor  int64 // last task looked up by a settled Lookback cycle
	nextCursor  int64 // last task looked up by the cycle under way
	trackWarned bool

	mu     sync.Mutex
	status Status
	set    pollSettings // as Reconfigure left them, under mu
}

// pollSettings are the Poller's settings that Reconfigure changes.
type pollSettings struct {
	interval time.Duration
	lookback time.Duration // the Lookback strategy's window and its deletion check
	budget   int           // caps the Lookback strategy's deletion look-ups
}

func newPollSettings(cfg Config) pollSettings {
	return pollSettings{interval: cfg.Interval, lookback: cfg.Lookback, budget: cfg.Budget}
}

// settings returns the settings as Reconfigure left them.
func (p *Poller) settings() pollSettings {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.set
}

// New returns a Poller that sweeps with c and hands pages to h. Interval,
// Lookback and Now are read from cfg, with defaults filled in.
func New(c *Client, cfg Config, h Handler, log zerolog.Logger) *Poller {
	cfg = cfg.withDefaults()
	p := &Poller{
		Strategy: Lookback(cfg.Lookback),
		auto:     Lookback(cfg.Lookback),
		c:        c,
		h:        h,
		log:      log,
		now:      cfg.Now,
		trigger:  make(chan struct{}, 1),
		reconf:   make(chan struct{}, 1),
		set:      newPollSettings(cfg),
	}
	p.deleter, _ = h.(Deleter)
	p.tracker, _ = h.(Tracker)
	return p
}

// Run sweeps at once and then every interval, or sooner when Trigger is
// called, until ctx ends. A cycle that overruns the interval is followed by
// the next one at once. A failed cycle is logged once and recorded in
// Status; the loop goes on. Run blocks and returns nil once ctx has ended
// and the page handler in flight, if any, has returned.
func (p *Poller) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	var start time.Time // of the last cycle
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-p.trigger:
		case <-p.reconf:
			// The interval changed while Run waited: the next cycle is
			// due the new interval after the last one started, at once
			// if that has passed. Before the first cycle the timer is
			// due at once anyway. A signal sent during a cycle finds the
			// timer already set by the new interval: setting it again
			// changes nothing.
			if !start.IsZero() {
				timer.Reset(max(p.settings().interval-time.Since(start), 0))
			}
			continue
		}
		start = time.Now()
		_ = p.cycle(ctx) // recorded in Status and logged
		if ctx.Err() != nil {
			return nil
		}
		timer.Reset(max(p.settings().interval-time.Since(start), 0))
	}
}

// Reconfigure changes the Poller's settings while it runs, keeping all it
// holds in memory: its status, the strategy's state, the deletions'
// tracking. It takes from cfg, defaults filled in:
//
//   - Interval: the wait before the next cycle is counted from the start
//     of the last one with the new interval. Called between two cycles,
//     the next one starts at once if the new interval has passed since
//     the last one started; called during a cycle, the wait after that
//     cycle uses it.
//   - Lookback and Budget: from the next cycle on, for the Lookback
//     strategy's window (while the Strategy is the Lookback New set; one
//     set by hand keeps its own duration) and for its deletion look-ups.
//
// cfg is passed on to the Poller's Client (Client.Reconfigure: the token,
// the page size, the rate limit, the timeout and the retries, for the
// requests sent from now on) and to the Strategy if it is a Reconfigurer
// (a *Tiered applies it at the start of its next cycle). cfg's BaseURL,
// Location, HTTPClient and Now are ignored. Reconfigure is safe for
// concurrent use, also while a cycle runs, and never blocks on one; the
// Strategy field itself must still not be changed after Run started.
func (p *Poller) Reconfigure(cfg Config) {
	// The Client and the Strategy fill in the defaults of cfg as given:
	// withDefaults twice would take a negative Retries or Budget, made
	// zero by the first, for unset.
	set := newPollSettings(cfg.withDefaults())
	p.mu.Lock()
	old := p.set
	p.set = set
	p.mu.Unlock()
	p.c.Reconfigure(cfg)
	if r, ok := p.Strategy.(Reconfigurer); ok {
		r.Reconfigure(cfg)
	}
	if set.interval != old.interval {
		select {
		case p.reconf <- struct{}{}:
		default:
		}
	}
	p.log.Debug().Dur("interval", set.interval).Dur("lookback", set.lookback).Int("budget", set.budget).
		Msg("poller reconfigured")
}

// Trigger asks Run to start a cycle now, or right after the one under way.
// It never blocks; triggers made while one is pending are merged.
func (p *Poller) Trigger() {
	select {
	case p.trigger <- struct{}{}:
	default:
	}
}

// Status returns a snapshot of the poller's health. It is safe for
// concurrent use.
func (p *Poller) Status() Status {
	p.mu.Lock()
	st := p.status
	p.mu.Unlock()
	now := p.now()
	if tr, ok := p.Strategy.(TieredStrategy); ok {
		st.Tiers = tr.Stats()
		st.SeenThrough = st.Tiers.SeenThrough()
		if !st.Tiers.OpenSeenThrough.IsZero() {
			st.OpenAge = max(now.Sub(st.Tiers.OpenSeenThrough), 0)
		}
		if !st.Tiers.FinishedSeenThrough.IsZero() {
			st.FinishedAge = max(now.Sub(st.Tiers.FinishedSeenThrough), 0)
			st.FullSweepMissed = st.FinishedAge > st.Tiers.FullSweepLimit
		}
	}
	if !st.SeenThrough.IsZero() {
		st.MaxUnseenAge = max(now.Sub(st.SeenThrough), 0)
	}
	return st
}

// notePage sets Status.LastPage: a page was handled.
func (p *Poller) notePage() {
	p.mu.Lock()
	p.status.LastPage = p.now()
	p.mu.Unlock()
}

// RunOnce runs one cycle at once, as Run does, and returns its error. It
// blocks until the cycle ended. It must not be called while Run runs or
// concurrently with itself; tests and tools use it to drive a Poller
// without its timer.
func (p *Poller) RunOnce(ctx context.Context) error {
	return p.cycle(ctx)
}

// pageHandler hands q's pages to the handler: the look-ups of the
// Lookback strategy's deletion check, which its Observe never sees.
func (p *Poller) pageHandler(Query) func(context.Context, *Page) error {
	return func(ctx context.Context, pg *Page) error {
		if len(pg.Tasks) > 0 {
			return p.h.HandlePage(ctx, pg.Tasks)
		}
		return nil
	}
}

// cycle sweeps every query of one cycle, records the outcome and returns
// the cycle's error.
func (p *Poller) cycle(ctx context.Context) error {
	var (
		total SweepStats
		err   error
		n     int
	)
	start := p.now()
	p.cur = p.settings()
	strategy := p.Strategy
	if l, ok := strategy.(Lookback); ok && l == p.auto {
		strategy = Lookback(p.cur.lookback)
	}
	skip, _ := strategy.(Skipper)
	finder, _ := strategy.(DeletionFinder)
	var fc *fullCheck // the Lookback strategy's deletion check
	if finder == nil && p.deleter != nil && p.tracker != nil {
		fc = &fullCheck{}
	}
	if s, ok := strategy.(trackedSeeder); ok && !p.seeded && p.deleter != nil && p.tracker != nil {
		p.seeded = s.SeedTracked(p.tracker, start.Add(-p.cur.lookback))
	}
	queue := strategy.Cycle(start)
	for ; n < len(queue); n++ {
		if n == maxQueries {
			err = fmt.Errorf("poller: cycle: more than %d queries", maxQueries)
			break
		}
		q := queue[n]
		full := fc != nil && covers(q, start.Add(-p.cur.lookback))
		if full && fc.listed == nil {
			fc.listed = make(map[int64]struct{})
		}
		stopped := false
		handle := func(ctx context.Context, pg *Page) error {
			if len(pg.Tasks) > 0 {
				if err := p.h.HandlePage(ctx, pg.Tasks); err != nil {
					return err
				}
			}
			p.notePage()
			if full {
				for i := range pg.Heads {
					fc.listed[pg.Heads[i].ID] = struct{}{}
				}
			}
			if !strategy.Observe(q, pg) {
				stopped = true
				return errStop
			}
			return nil
		}
		var st SweepStats
		st, err = p.c.SweepSkip(ctx, q, skip, handle)
		if errors.Is(err, errStop) {
			err = nil
		}
		total = total.add(st)
		if err != nil {
			break
		}
		if full && !stopped {
			fc.covered = true
		}
		queue = append(queue, strategy.Swept(q, st)...)
	}
	var (
		gone             []int64
		waiting, tracked int
	)
	if err == nil && fc != nil && fc.covered {
		gone, waiting, tracked, err = p.lookUpTracked(ctx, start, fc, &total, &n, p.pageHandler)
	}
	if err == nil {
		if err = p.h.SweepDone(ctx, total); err != nil {
			err = fmt.Errorf("poller: sweep done: %w", err)
		}
	}
	if err == nil && ctx.Err() == nil {
		if finder != nil {
			gone, waiting, tracked = finder.Gone()
		}
		reported, again := p.settleDeletions(ctx, gone, waiting, tracked)
		if finder != nil {
			finder.Settle(reported, again)
		} else if fc != nil && fc.covered && len(again) == 0 {
			p.fullCursor = p.nextCursor
		}
	}
	if ctx.Err() != nil {
		if err == nil {
			err = ctx.Err()
		}
		strategy.End(err)
		return err // shutting down: not a failure of the API
	}
	strategy.End(err)

	p.mu.Lock()
	p.status.Cycles++
	p.status.Requests = total.Requests
	p.status.Queries = n
	p.status.LastSweep = total
	if err == nil {
		if _, tiered := strategy.(TieredStrategy); !tiered {
			p.status.SeenThrough = start
		}
	}
	if err != nil {
		p.status.LastFailure = p.now()
		p.status.LastError = err.Error()
		p.status.ConsecutiveFailures++
	} else {
		p.status.LastSuccess = p.now()
		p.status.ConsecutiveFailures = 0
	}
	failures := p.status.ConsecutiveFailures
	p.mu.Unlock()

	if err != nil {
		p.log.Warn().Err(err).Int("consecutive_failures", failures).Int("requests", total.Requests).
			Int("pages", total.Pages).Msg("poll cycle failed")
		return err
	}
	p.log.Debug().Int("queries", n).Int("requests", total.Requests).Int("pages", total.Pages).
		Int("tasks", total.Tasks).Int("skipped", total.Skipped).Int("total", total.Total).
		Bool("total_changed", total.TotalChanged).Int("duplicates", total.Duplicates).
		Dur("took", total.Duration).Msg("poll cycle done")
	return nil
}
