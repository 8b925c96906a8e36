package main

import (
	"context"
	"fmt"
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
	if err := buildSinksDryRun(cfg); err != nil {
		return err
	}
	fmt.Fprintf(c.m.Stdout, "%s: ok (%d sinks, store %s, polling %s every %s, budget %d requests per interval)\n",
		*path, len(cfg.Sinks), cfg.Store.Path, hostOf(cfg.Upstream.BaseURL), cfg.Poll.Interval.D(), cfg.EffectiveBudget())
	return nil
}
