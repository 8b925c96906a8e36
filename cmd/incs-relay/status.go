package main

// The status command: per sink cursor, head, lag, dead letters and last
// error, with the poller's and the cluster's state when a relay answers.

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/admin"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
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
	db, ac, err := admin.StoreOrClient(ctx, cfg)
	if err != nil {
		return err
	}
	var sinks []relay.SinkStatus
	var poll *relay.PollView
	var cluster *relay.ClusterView
	source := "store " + cfg.Store.Path + " (relay not running)"
	if db != nil {
		defer db.Close()
		if h, ok := db.(*relay.JetStream); ok {
			source = "store " + cfg.StoreLabel()
			cluster = admin.ClusterView(ctx, cfg, h)
		}
		for _, sc := range cfg.Sinks {
			s, err := relay.StoreSinkStatus(db, sc)
			if err != nil {
				return err
			}
			sinks = append(sinks, s)
		}
		removed, err := relay.RemovedSinkStatuses(db, configuredSinks(cfg))
		if err != nil {
			return err
		}
		sinks = append(sinks, removed...)
	} else {
		source = "running relay at " + cfg.Admin.Addr
		poll = &relay.PollView{}
		if err := ac.Do(ctx, http.MethodGet, "/v1/poll", nil, poll); err != nil {
			return err
		}
		cluster = poll.Cluster
		for _, sc := range cfg.Sinks {
			var s relay.SinkStatus
			if err := ac.Do(ctx, http.MethodGet, "/v1/sinks/"+sc.Name, nil, &s); err != nil {
				return err
			}
			sinks = append(sinks, s)
		}
		var all struct {
			Sinks []relay.SinkStatus `json:"sinks"`
		}
		if err := ac.Do(ctx, http.MethodGet, "/v1/sinks", nil, &all); err != nil {
			return err
		}
		for _, s := range all.Sinks {
			if s.RemovedAt != nil && !slices.Contains(configuredSinks(cfg), s.Name) {
				sinks = append(sinks, s)
			}
		}
	}
	if *asJSON {
		enc := json.NewEncoder(c.m.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"sinks": sinks, "poll": poll, "cluster": cluster})
	}
	fmt.Fprintf(c.m.Stdout, "%s\n", source)
	if cluster != nil {
		for _, l := range clusterLines(cluster) {
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
			fmt.Fprintln(c.m.Stdout, rulesLine(ru))
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
		case s.RemovedAt != nil:
			state = "removed " + s.RemovedAt.Local().Format(time.DateTime)
		case s.Paused:
			state = "paused"
		case s.Failing:
			state = "failing"
		}
		lastErr := s.LastError
		if s.LastErrorAt != nil && lastErr != "" {
			lastErr = s.LastErrorAt.Local().Format(time.DateTime) + " " + lastErr
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", s.Name, cmp.Or(s.Type, "-"), s.Cursor, s.Head, s.Lag, s.DeadLetters, state, oneLine(lastErr, 100))
	}
	tw.Flush()
	for _, s := range sinks {
		if s.Paused && s.RemovedAt == nil {
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

// rulesLine is the rules line of `status`.
func rulesLine(v *relay.RulesView) string {
	s := fmt.Sprintf("rules: %d, %d tasks tracked, %d due and waiting for their confirming read", v.Rules, v.Tracked, v.Overdue)
	if v.Waiting > 0 {
		s += fmt.Sprintf(" (%d task_id reads wait for the follow-up cap of 100 a cycle: firings may come a cycle late)", v.Waiting)
	}
	if v.NextDue != nil {
		s += "; next due " + v.NextDue.Format(time.RFC3339)
	}
	return s
}

// clusterLines is the cluster part of `status`.
func clusterLines(v *relay.ClusterView) []string {
	lead := "none (no replica holds the lease)"
	if v.Leader != "" {
		lead = v.Leader
		if v.LeaseExpires != nil {
			lead += fmt.Sprintf(", epoch %d, lease %s, expires in %s unless renewed", v.Epoch, v.Lease, relay.RoundDuration(max(time.Until(*v.LeaseExpires), 0)))
		}
	}
	self := ""
	if v.Self != "" {
		self = ", as replica " + v.Self + " sees it"
	}
	out := []string{fmt.Sprintf("store: jetstream %q, %d partitions%s", v.Name, v.Partitions, self), "leader: " + lead}
	if len(v.Assignments) == 0 {
		out = append(out, "partitions: not assigned yet")
	}
	for _, id := range slices.Sorted(maps.Keys(v.Assignments)) {
		live := ""
		if !slices.Contains(v.Members, id) {
			live = " (not live: they move to a live replica)"
		}
		out = append(out, fmt.Sprintf("delivers: %s partitions %s%s", id, intList(v.Assignments[id]), live))
	}
	if len(v.Members) > 0 {
		out = append(out, "replicas: "+strings.Join(v.Members, ", "))
	} else {
		out = append(out, "replicas: none live")
	}
	if !v.Connected {
		out = append(out, "warning: this replica is not connected to the cluster")
	}
	return out
}

// intList formats partitions compactly: "0-3,7".
func intList(ps []int) string {
	var b strings.Builder
	for i := 0; i < len(ps); {
		j := i
		for j+1 < len(ps) && ps[j+1] == ps[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", ps[i], ps[j])
		} else {
			fmt.Fprintf(&b, "%d", ps[i])
		}
		i = j + 1
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// configuredSinks lists the names of cfg's sinks.
func configuredSinks(cfg *config.Config) []string {
	names := make([]string, len(cfg.Sinks))
	for i, sc := range cfg.Sinks {
		names[i] = sc.Name
	}
	return names
}
