package main

// The check-config command: validate a config, build the sinks that need
// no network, read the NATS files, and estimate what the poll ceilings
// need from the store.

import (
	"context"
	"fmt"
	"net/http"
	"os"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/admin"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/poller"
)

// CheckConfigCommand validates a config file and exits.
type CheckConfigCommand struct{ m *Main }

// Run parses flags, reads and validates the config, and prints a summary.
func (c *CheckConfigCommand) Run(ctx context.Context, args []string) error {
	fs := c.m.newFlagSet("check-config")
	path := fs.String("config", "", "config file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := c.m.loadConfig(*path)
	if err != nil {
		return err
	}
	if err := relay.CheckSinks(cfg); err != nil {
		return err
	}
	if err := cfg.CheckNATSFiles(); err != nil {
		return err
	}
	fmt.Fprintf(c.m.Stdout, "%s: ok (%d sinks, store %s, polling %s every %s, budget %d requests per interval)\n",
		*path, len(cfg.Sinks), cfg.StoreLabel(), config.HostOf(cfg.Upstream.BaseURL), cfg.Poll.Interval.D(), cfg.EffectiveBudget())
	if need, ok := ceilingNeed(ctx, cfg); ok {
		budget := cfg.EffectiveBudget()
		if need > float64(budget) {
			fmt.Fprintf(c.m.Stdout, "warning: poll.budget (%d) below what the ceilings need (%.0f requests per cycle, from the tasks the store knows): poll.open_sweep and poll.full_sweep are kept, nothing is left to read finished tasks more often\n", budget, need)
		} else {
			fmt.Fprintf(c.m.Stdout, "the ceilings need about %.0f requests per cycle (from the tasks the store knows); %d are left for finished tasks\n", need, budget-int(need))
		}
	}
	return nil
}

// ceilingNeed is what poll.open_sweep and poll.full_sweep need per cycle
// for the world the store knows: estimated from its tier state, or, while
// a relay runs on it, as that relay measures it. ok is false for a store
// that does not exist yet or knows no tiers; check-config never creates
// one.
func ceilingNeed(ctx context.Context, cfg *config.Config) (float64, bool) {
	if cfg.Poll.Strategy != "tiered" || cfg.JetStream() { // check-config stays off the cluster
		return 0, false
	}
	if _, err := os.Stat(cfg.Store.Path); err != nil {
		return 0, false
	}
	db, ac, err := admin.StoreOrClient(ctx, cfg)
	if err != nil {
		return 0, false
	}
	if db != nil {
		defer db.Close()
		return poller.EstimateCeilings(cfg.PollerConfig(), db)
	}
	var pv relay.PollView
	if err := ac.Do(ctx, http.MethodGet, "/v1/poll", nil, &pv); err != nil || pv.Tiers == nil || pv.Tiers.CeilingNeed == 0 {
		return 0, false
	}
	return pv.Tiers.CeilingNeed, true
}
