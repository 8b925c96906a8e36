package poller

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/diff"
)

// Handler consumes what a Poller finds. Its methods are called from the
// goroutine running Poller.Run, one at a time.
type Handler interface {
	// HandlePage diffs and stores one complete page of tasks. An error ends
	// the sweep; pages handled before stay handled.
	HandlePage(ctx context.Context, tasks []diff.Task) error
	// SweepDone is called after every query of a cycle was swept and every
	// page handled without error. An error counts as a failed cycle.
	SweepDone(ctx context.Context, s SweepStats) error
}

// Strategy yields the queries of one poll cycle. A Poller sweeps them in
// order and calls Handler.SweepDone once all succeeded. It lets smarter
// schemes (e.g. open tasks often, closed ones rarely) replace the default.
type Strategy interface {
	Cycle(now time.Time) []Query
}

// Lookback is the default Strategy: every cycle sweeps all tasks created
// within the duration before now, with no end_at.
type Lookback time.Duration

// Cycle returns one query with StartAt now minus l.
func (l Lookback) Cycle(now time.Time) []Query {
	return []Query{{StartAt: now.Add(-time.Duration(l))}}
}

// Status is a snapshot of a Poller's health. It carries no secrets.
type Status struct {
	LastSuccess         time.Time  // end of the last cycle that succeeded
	LastFailure         time.Time  // end of the last cycle that failed
	LastError           string     // error of the last failed cycle
	ConsecutiveFailures int        // failed cycles since the last success
	Cycles              int        // cycles ended, failed ones included
	Requests            int        // requests sent in the last cycle
	LastSweep           SweepStats // stats of the last cycle, summed over its queries
}

// Poller runs a sweep every interval and hands its pages to a Handler.
type Poller struct {
	// Strategy yields each cycle's queries; New sets Lookback(cfg.Lookback).
	// Change it only before Run.
	Strategy Strategy

	c        *Client
	h        Handler
	log      zerolog.Logger
	interval time.Duration
	now      func() time.Time
	trigger  chan struct{}

	mu     sync.Mutex
	status Status
}

// New returns a Poller that sweeps with c and hands pages to h. Interval,
// Lookback and Now are read from cfg, with defaults filled in.
func New(c *Client, cfg Config, h Handler, log zerolog.Logger) *Poller {
	cfg = cfg.withDefaults()
	return &Poller{
		Strategy: Lookback(cfg.Lookback),
		c:        c,
		h:        h,
		log:      log,
		interval: cfg.Interval,
		now:      cfg.Now,
		trigger:  make(chan struct{}, 1),
	}
}

// Run sweeps at once and then every interval, or sooner when Trigger is
// called, until ctx ends. A cycle that overruns the interval is followed by
// the next one at once. A failed cycle is logged once and recorded in
// Status; the loop goes on. Run blocks and returns nil once ctx has ended
// and the page handler in flight, if any, has returned.
func (p *Poller) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-p.trigger:
		}
		start := time.Now()
		p.cycle(ctx)
		if ctx.Err() != nil {
			return nil
		}
		timer.Reset(max(p.interval-time.Since(start), 0))
	}
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
	defer p.mu.Unlock()
	return p.status
}

// cycle sweeps every query of one cycle and records the outcome.
func (p *Poller) cycle(ctx context.Context) {
	var (
		total SweepStats
		err   error
	)
	handle := func(ctx context.Context, pg *Page) error { return p.h.HandlePage(ctx, pg.Tasks) }
	for _, q := range p.Strategy.Cycle(p.now()) {
		var st SweepStats
		st, err = p.c.Sweep(ctx, q, handle)
		total = total.add(st)
		if err != nil {
			break
		}
	}
	if err == nil {
		if err = p.h.SweepDone(ctx, total); err != nil {
			err = fmt.Errorf("poller: sweep done: %w", err)
		}
	}
	if ctx.Err() != nil {
		return // shutting down: not a failure of the API
	}

	p.mu.Lock()
	p.status.Cycles++
	p.status.Requests = total.Requests
	p.status.LastSweep = total
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
		return
	}
	ev := p.log.Debug()
	if total.PageShift() {
		ev = p.log.Info()
	}
	ev.Int("requests", total.Requests).Int("pages", total.Pages).Int("tasks", total.Tasks).
		Int("total", total.Total).Bool("total_changed", total.TotalChanged).Int("duplicates", total.Duplicates).
		Dur("took", total.Duration).Msg("poll cycle done")
}
