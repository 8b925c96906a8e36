package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"text/tabwriter"
	"time"
)

// StatusCommand shows per sink: cursor, head offset, lag, dead letters and
// the last error.
type StatusCommand struct{ m *Main }

// Run prints a table, or JSON with --json.
func (c *StatusCommand) Run(ctx context.Context, args []string) error {
	fs := c.m.newFlagSet("status")
	path := fs.String("config", "", "config file")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := c.m.loadConfig(*path)
	if err != nil {
		return err
	}
	db, ac, err := storeOrAdmin(ctx, cfg)
	if err != nil {
		return err
	}
	var sinks []sinkStatus
	var poll *pollView
	var cluster *clusterView
	source := "store " + cfg.Store.Path + " (relay not running)"
	if db != nil {
		defer db.Close()
		if h, ok := db.(*jsHandle); ok {
			source = "store " + cfg.StoreLabel()
			cluster = storeClusterView(ctx, cfg, h)
		}
		for _, sc := range cfg.Sinks {
			s, err := storeSinkStatus(db, sc)
			if err != nil {
				return err
			}
			sinks = append(sinks, s)
		}
	} else {
		source = "running relay at " + cfg.Admin.Addr
		poll = &pollView{}
		if err := ac.do(ctx, http.MethodGet, "/v1/poll", nil, poll); err != nil {
			return err
		}
		cluster = poll.Cluster
		for _, sc := range cfg.Sinks {
			var s sinkStatus
			if err := ac.do(ctx, http.MethodGet, "/v1/sinks/"+sc.Name, nil, &s); err != nil {
				return err
			}
			sinks = append(sinks, s)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(c.m.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"sinks": sinks, "poll": poll, "cluster": cluster})
	}
	fmt.Fprintf(c.m.Stdout, "%s\n", source)
	if cluster != nil {
		for _, l := range cluster.lines() {
			fmt.Fprintln(c.m.Stdout, l)
		}
	}
	if poll != nil {
		last := "never"
		if poll.LastSuccess != nil {
			last = time.Since(*poll.LastSuccess).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(c.m.Stdout, "poll: %s, last success %s, %d requests last cycle", poll.Strategy, last, poll.Requests)
		if t := poll.Tiers; t != nil {
			fmt.Fprintf(c.m.Stdout, " (scan %d, newest %d, open %d, sweep %d of which budget %d, fetch %d; %d tasks, %d open)",
				t.Scan, t.Newest, t.Open, t.Sweep, t.Budgeted, t.Fetch, t.Tasks, t.OpenN)
		}
		if poll.MaxUnseenAgeSeconds != nil {
			fmt.Fprintf(c.m.Stdout, "; oldest unseen change at most %s old", (time.Duration(*poll.MaxUnseenAgeSeconds * float64(time.Second))).Round(time.Second))
		}
		fmt.Fprintln(c.m.Stdout)
		if t := poll.Tiers; t != nil {
			fmt.Fprintf(c.m.Stdout, "budget: %d requests per interval, the ceilings need %.1f", t.Budget, t.CeilingNeed)
			if t.OpenAge != nil && t.FinishedAge != nil {
				fmt.Fprintf(c.m.Stdout, "; freshness: open tasks %s, finished tasks %s", secs(*t.OpenAge), secs(*t.FinishedAge))
			}
			if t.Ordered {
				fmt.Fprint(c.m.Stdout, "; the API lists by updated_at: the head scan finds every change")
			}
			fmt.Fprintln(c.m.Stdout)
			if t.BudgetShort {
				fmt.Fprintf(c.m.Stdout, "warning: poll.budget below what the ceilings need (%.0f): raise upstream.rate_limit or poll.budget, or lengthen poll.open_sweep or poll.full_sweep\n", t.CeilingNeed)
			}
			if t.SweepMissed {
				fmt.Fprintln(c.m.Stdout, "warning: some tasks were not read within poll.full_sweep: the rate limit cannot keep it")
			}
		}
		if ru := poll.Rules; ru != nil {
			fmt.Fprintln(c.m.Stdout, ru.line())
		}
		if poll.ConsecutiveFailures > 0 {
			fmt.Fprintf(c.m.Stdout, "poll failing (%d in a row): %s\n", poll.ConsecutiveFailures, poll.LastError)
		}
	}
	fmt.Fprintln(c.m.Stdout)
	tw := tabwriter.NewWriter(c.m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SINK\tTYPE\tCURSOR\tHEAD\tLAG\tDEAD LETTERS\tSTATE\tLAST ERROR")
	for _, s := range sinks {
		state := "ok"
		switch {
		case s.Paused:
			state = "paused"
		case s.Failing:
			state = "failing"
		}
		lastErr := s.LastError
		if s.LastErrorAt != nil && lastErr != "" {
			lastErr = s.LastErrorAt.Local().Format(time.DateTime) + " " + lastErr
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", s.Name, s.Type, s.Cursor, s.Head, s.Lag, s.DeadLetters, state, oneLine(lastErr, 100))
	}
	tw.Flush()
	for _, s := range sinks {
		if s.Paused {
			fmt.Fprintf(c.m.Stdout, "\n%s is paused: %s\n  resume: incs-relay replay --config %s --sink %s --from %d\n", s.Name, s.PauseReason, *path, s.Name, s.Cursor+1)
		}
		if len(s.Dead) == 0 {
			continue
		}
		fmt.Fprintf(c.m.Stdout, "\ndead letters of %s:\n", s.Name)
		tw := tabwriter.NewWriter(c.m.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  OFFSET\tEVENT\tTYPE\tTASK\tATTEMPTS\tAT\tERROR")
		for i, d := range s.Dead {
			if i == 50 {
				fmt.Fprintf(tw, "  … and %d more\n", len(s.Dead)-50)
				break
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%d\t%d\t%s\t%s\n", d.Offset, d.EventID, d.Type, d.TaskID, d.Attempts, d.At.Local().Format(time.DateTime), oneLine(d.Error, 100))
		}
		tw.Flush()
		fmt.Fprintf(c.m.Stdout, "  redeliver: incs-relay replay --config %s --sink %s --from %d\n", *path, s.Name, s.Dead[0].Offset)
	}
	return nil
}

// secs formats seconds as a duration rounded to the second.
func secs(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Second).String()
}
