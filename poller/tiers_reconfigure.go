package poller

// Changing a Tiered strategy's settings while it runs (Reconfigure): the
// new settings wait for the next cycle's plan, and a shorter ceiling is
// caught up with in that cycle without leaving the tiers' credits in debt.

import "github.com/rs/zerolog"

var _ Reconfigurer = (*Tiered)(nil)

// Reconfigure changes the settings the Tiered strategy plans its cycles
// by: cfg's Interval, Lookback, FullSweep, OpenSweep (the cycles between
// two reads of an open task are recomputed from it and Interval), Budget
// and PageSize (what a band's read costs in requests), defaults filled in
// as NewTiered fills them. cfg's Location (the tier state is made for one
// zone), Now and the Client's settings are ignored. The tier state, the
// task records, the pending look-ups and the deletions found are kept.
//
// The settings are applied at the start of the next cycle's plan (Cycle):
// a cycle under way ends with the settings it started with, and Stats
// shows the new Budget and FullSweepLimit once that next cycle ended.
// Calls before it are merged; the last one wins. It is safe for
// concurrent use, also during a cycle.
//
// From that next cycle on:
//
//   - A shorter FullSweep or OpenSweep is kept at once: every band that
//     would pass the new FullSweep before the cycle after is read in full
//     in that cycle, and every band whose open tasks were last read the
//     new OpenSweep's number of cycles ago or earlier has them read; the
//     cycle may then run longer than an interval (the rate limit is
//     kept). Those reads would leave
//     the tiers' credits in debt until every band is due again at once, so
//     the cycle that catches up clears the debt (the credits stay within
//     their bounds, -tasks to +tasks), and the reads spread out over the
//     cycles as they do after the first full sweep. If that cycle fails,
//     the next one catches up instead.
//   - A longer FullSweep or OpenSweep makes the credits grow more slowly:
//     the bands are read less often as their credit runs out, none at
//     once.
//   - The ceilings' cost per cycle (CeilingNeed), an average of the
//     cycles measured, is corrected by what the new settings change in
//     its estimate, so the budget's spare reads fit the new ceilings from
//     the first cycle; the cycle that catches up is not counted into it.
//   - A longer Lookback adds a band for the part of the window no band
//     covers, read in full at once; a shorter one forgets the tasks that
//     fall out of the window without reporting them as deleted.
//   - Budget also caps the head scan (a quarter of it) from that cycle.
func (t *Tiered) Reconfigure(cfg Config) {
	cfg = cfg.withDefaults()
	t.mu.Lock()
	t.next = &cfg
	t.mu.Unlock()
}

// openEveryOf is the cycles between two reads of an open task for cfg,
// defaults filled in.
func openEveryOf(cfg Config) uint64 {
	return uint64(max(cfg.OpenSweep/cfg.Interval, 1))
}

// applyNext applies the settings Reconfigure left, if any, at the start of
// a cycle's plan. It is called with mu held.
func (t *Tiered) applyNext() {
	if t.next == nil {
		return
	}
	n := *t.next
	t.next = nil
	old, oldEvery := t.cfg, t.openEvery
	var oldCost float64
	if t.ready {
		oldCost = t.tierCost(0)
	}
	t.cfg.Interval, t.cfg.Lookback, t.cfg.FullSweep, t.cfg.OpenSweep = n.Interval, n.Lookback, n.FullSweep, n.OpenSweep
	t.cfg.Budget, t.cfg.PageSize = n.Budget, n.PageSize
	t.openEvery = openEveryOf(t.cfg)
	if t.cfg.FullSweep < old.FullSweep || t.openEvery < oldEvery {
		t.catchUp = true
	}
	if t.ready && t.budget.need > 0 {
		t.budget.need = max(t.budget.need+t.tierCost(0)-oldCost, 0)
	}
	c := t.cfg
	t.logLater(func(l zerolog.Logger) {
		l.Info().Dur("interval", c.Interval).Dur("lookback", c.Lookback).Dur("full_sweep", c.FullSweep).
			Dur("open_sweep", c.OpenSweep).Int("budget", c.Budget).Int("page_size", c.PageSize).
			Msg("tier settings changed: planning this cycle by them")
	})
}
