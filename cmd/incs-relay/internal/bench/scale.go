package bench

// The scale mode of `incs-relay bench --scale`: the relay's memory, restart
// and `status` times as its store grows, with the number of tasks fixed,
// in both store modes side by side.

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/incs-relay/incs-relay/poller/sim"
)

// ScaleOptions are one scale benchmark's settings.
type ScaleOptions struct {
	// Events are the stored events of each world, one world each.
	Events []int
	// Tasks is the number of tasks of every world: the worlds differ
	// only in how many logs each task has.
	Tasks int
	// Stores are the store modes measured in each world (default
	// bbolt and jetstream).
	Stores []string
	// Timeout bounds each run's storing and delivering (one world, one
	// store mode): when it passes the run goes on to the restart with
	// what was delivered, and the table says so.
	Timeout time.Duration
	// Settle is how long after the restart's first poll cycle the
	// memory after a restart is read; default 2s.
	Settle time.Duration
	// Exe is the incs-relay binary the relays and `status` run as.
	Exe string
	// Stdout receives the tables; Stderr the progress and the relays'
	// logs.
	Stdout, Stderr io.Writer
}

// The goals the tables check (issue 21).
const (
	goalGrowth     = 32       // RssAnon bytes per stored event, smallest to largest world
	goalModeGap    = 64 << 20 // jetstream's RssAnon above bbolt's, bytes
	goalStoreOpen  = time.Second
	goalReady      = 2 * time.Second
	goalStatus     = time.Second
	goalScaleRatio = 1.2 // a figure of the largest world over the smallest's
)

// scaleRow is one run's figures.
type scaleRow struct {
	Store  string
	Events int // stored events
	Tasks  int
	Stored time.Duration // start to every event stored
	// Delivered is start to every event delivered; 0 when Timeout
	// passed first, with Cursor events delivered.
	Delivered time.Duration
	Cursor    uint64

	AnonDelivering int64 // the largest RssAnon sampled while storing and delivering
	HWMDelivering  int64 // VmHWM then

	Open  time.Duration // SIGTERM restart: start to /healthz (the store is open)
	Ready time.Duration // start to /readyz 200
	// AnonAfter and HWMAfter are read Settle after /readyz.
	AnonAfter, HWMAfter int64

	Status    time.Duration // `status --config FILE`, wall time, the relay stopped
	StatusHWM int64         // its peak RSS
	StatusHow string        // how StatusHWM was read
}

// RunScale builds, for each of opts.Events, a simulated world of
// opts.Tasks tasks whose logs add up to that many events, and for each
// store mode runs the relay (a core NATS sink on a NATS node in this
// process) until every event is stored and delivered, sampling its
// memory; then restarts it with SIGTERM and times its store open and
// /readyz, reads its memory after, stops it and times a one-off
// `status`. It writes a table of every run and one of the goals.
func RunScale(ctx context.Context, opts ScaleOptions) error {
	if opts.Settle <= 0 {
		opts.Settle = 2 * time.Second
	}
	if len(opts.Stores) == 0 {
		opts.Stores = []string{"bbolt", "jetstream"}
	}
	events := slices.Clone(opts.Events)
	slices.Sort(events)
	var rows []scaleRow
	for _, n := range events {
		fmt.Fprintf(opts.Stderr, "bench: building a world of %d tasks and %d logs...\n", opts.Tasks, n)
		world, err := scaleWorld(opts.Tasks, n)
		if err != nil {
			return err
		}
		api, err := serveLoopback(world)
		if err != nil {
			return err
		}
		for _, st := range opts.Stores {
			row, err := scaleRun(ctx, opts, api.Addr, st, n)
			if err != nil {
				api.Close()
				if len(rows) > 0 {
					writeScaleTables(opts.Stdout, rows)
				}
				return fmt.Errorf("bench: %s, %d events: %w", st, n, err)
			}
			fmt.Fprintf(opts.Stderr, "bench: %+v\n", row)
			rows = append(rows, row)
		}
		api.Close()
	}
	writeScaleTables(opts.Stdout, rows)
	return nil
}

// scaleWorld returns a world of tasks tasks holding n logs: the
// simulator's own histories (about 4 logs a task), then comments added
// to the tasks in turn until there are n.
func scaleWorld(tasks, n int) (*sim.Sim, error) {
	world := sim.New(sim.Options{Token: "bench", Tasks: tasks, Seed: 1})
	have := world.LogCount()
	if have > n {
		return nil, fmt.Errorf("bench: %d tasks already hold %d logs, more than %d: ask for more events or fewer tasks", tasks, have, n)
	}
	for i := range n - have {
		world.Comment(int64(i%tasks) + 1)
	}
	return world, nil
}

// scaleRun is one run: one world, one store mode, its own NATS node and
// store in a new directory.
func scaleRun(ctx context.Context, opts ScaleOptions, api, storeType string, n int) (row scaleRow, err error) {
	row = scaleRow{Store: storeType, Events: n, Tasks: opts.Tasks}
	// The restart and status get 5 minutes beyond the storing and delivering.
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout+5*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "incs-relay-scale-*")
	if err != nil {
		return row, err
	}
	defer os.RemoveAll(dir)
	cluster, err := startBenchCluster(filepath.Join(dir, "nats"), 1)
	defer func() {
		for _, ns := range cluster {
			ns.Shutdown()
			ns.WaitForShutdown()
		}
	}()
	if err != nil {
		return row, err
	}
	cfgPath := filepath.Join(dir, "bench.yaml")
	rc := relayConfig{
		API: api, Strategy: "tiered", Store: storeType, NATSURL: cluster[0].ClientURL(), Nodes: 1,
		DBPath: filepath.Join(dir, "relay.db"), Sinks: []string{"nats"},
		Retention: 10 * 365 * 24 * time.Hour, // nothing is pruned
	}
	if err := rc.write(cfgPath); err != nil {
		return row, err
	}

	fmt.Fprintf(opts.Stderr, "bench: %s: storing and delivering %d events...\n", storeType, n)
	start := time.Now()
	c, err := startChild(ctx, opts.Exe, cfgPath, opts.Stderr)
	if err != nil {
		return row, err
	}
	defer func() {
		if c != nil {
			c.kill()
		}
	}()
	fill, stopFill := context.WithTimeout(ctx, opts.Timeout)
	defer stopFill()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for row.Delivered == 0 {
		select {
		case <-ctx.Done():
			return row, ctx.Err()
		case <-fill.Done():
			fmt.Fprintf(opts.Stderr, "bench: %s: %d of %d events delivered when --timeout %s passed: restarting anyway\n", storeType, row.Cursor, n, opts.Timeout)
		case <-tick.C:
		}
		if fill.Err() != nil {
			break
		}
		if err := c.exitedErr(); err != nil {
			return row, fmt.Errorf("relay exited: %v", err)
		}
		row.AnonDelivering = max(row.AnonDelivering, procStatus(c.pid(), "RssAnon:"))
		sinks, err := c.sinks(ctx)
		if err != nil || len(sinks) != 1 {
			continue
		}
		if row.Stored == 0 && sinks[0].Head >= uint64(n) {
			row.Stored = time.Since(start)
		}
		row.Cursor = sinks[0].Cursor
		if row.Stored != 0 && row.Cursor >= uint64(n) {
			row.Delivered = time.Since(start)
		}
	}
	row.AnonDelivering = max(row.AnonDelivering, procStatus(c.pid(), "RssAnon:"))
	row.HWMDelivering = peakRSS(c.pid())
	if err := c.stop(time.Minute); err != nil {
		return row, err
	}

	fmt.Fprintf(opts.Stderr, "bench: %s: restarting on %d events...\n", storeType, n)
	start = time.Now()
	c, err = startChild(ctx, opts.Exe, cfgPath, opts.Stderr)
	if err != nil {
		return row, fmt.Errorf("restart: %v", err)
	}
	row.Open = time.Since(start)
	if err := c.await(ctx, "/readyz", 10*time.Millisecond); err != nil {
		return row, fmt.Errorf("restart: %v", err)
	}
	row.Ready = time.Since(start)
	// The memory after a restart is the store's and the relay's at
	// rest: read once the first poll cycle since the restart ended (it
	// reads every task again, pages as large as the world's tasks) and
	// Settle passed, not while that poll decodes pages.
	for {
		if n, err := c.pollCycles(ctx); err == nil && n > 0 {
			break
		}
		if err := c.exitedErr(); err != nil {
			return row, fmt.Errorf("restart: relay exited: %v", err)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return row, fmt.Errorf("restart: no poll cycle ended: %w", ctx.Err())
		}
	}
	select {
	case <-time.After(opts.Settle):
	case <-ctx.Done():
		return row, ctx.Err()
	}
	row.AnonAfter = procStatus(c.pid(), "RssAnon:")
	row.HWMAfter = peakRSS(c.pid())
	sinks, err := c.sinks(ctx)
	if err != nil {
		return row, fmt.Errorf("restart: %v", err)
	}
	for _, s := range sinks {
		if (row.Stored != 0 && s.Head < uint64(n)) || s.Cursor < row.Cursor {
			return row, fmt.Errorf("after the restart sink %s has head %d and cursor %d of %d events (cursor %d before)", s.Name, s.Head, s.Cursor, n, row.Cursor)
		}
	}
	addr := c.addr
	if err := c.stop(time.Minute); err != nil {
		return row, err
	}

	// status with the relay stopped: it opens the store itself in both
	// modes (a bbolt store a relay holds it would ask over the admin API).
	fmt.Fprintf(opts.Stderr, "bench: %s: status on %d events...\n", storeType, n)
	r, err := runPeak(ctx, append(os.Environ(), adminEnv+"="+addr), opts.Exe, "status", "--config", cfgPath)
	if err != nil {
		return row, err
	}
	row.Status, row.StatusHWM, row.StatusHow = r.Wall, r.Peak, r.How
	return row, nil
}

// writeScaleTables writes the runs, both modes of each world together,
// and the goals with pass or fail.
func writeScaleTables(w io.Writer, rows []scaleRow) {
	fmt.Fprintf(w, "machine: %d cores, %s/%s; %s\n\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, time.Now().UTC().Format("2006-01-02 15:04 MST"))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tstored events\ttasks\tstored in\tdelivered in\tRssAnon delivering\tVmHWM delivering\trestart→store open\trestart→/readyz\tRssAnon after restart\tVmHWM after restart\tstatus time\tstatus peak RSS\t")
	for _, r := range rows {
		delivered := secs(r.Delivered)
		if r.Delivered == 0 {
			delivered = fmt.Sprintf("timeout(%d)", r.Cursor)
		}
		stored := secs(r.Stored)
		if r.Stored == 0 {
			stored = "timeout"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Store, r.Events, r.Tasks, stored, delivered,
			mb(r.AnonDelivering), mb(r.HWMDelivering), secs(r.Open), secs(r.Ready), mb(r.AnonAfter), mb(r.HWMAfter),
			secs(r.Status), mb(r.StatusHWM))
	}
	tw.Flush()
	fmt.Fprintln(w, "\nstore open is the first /healthz answer: the relay opens its store and connects its sinks before it serves the admin API.")
	fmt.Fprintln(w, "RssAnon after restart is read once the restart's first poll cycle ended (it reads every task again) and 2s more passed.")
	fmt.Fprintln(w, "status runs with the relay stopped, so it opens the store itself in both modes.")
	if len(rows) > 0 {
		fmt.Fprintf(w, "status peak RSS: %s.\n", rows[0].StatusHow)
	}
	fmt.Fprintln(w, "timeout(N): --timeout passed with N events delivered; the restart and status ran on the store as it was.")
	fmt.Fprintln(w)

	var stores []string
	var events []int
	byKey := map[string]scaleRow{}
	for _, r := range rows {
		if !slices.Contains(stores, r.Store) {
			stores = append(stores, r.Store)
		}
		if !slices.Contains(events, r.Events) {
			events = append(events, r.Events)
		}
		byKey[r.Store+"/"+strconv.Itoa(r.Events)] = r
	}
	get := func(store string, n int) (scaleRow, bool) {
		r, ok := byKey[store+"/"+strconv.Itoa(n)]
		return r, ok
	}
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "goal\t%s\t\n", strings.Join(stores, "\t"))
	line := func(goal string, cell func(store string) string) {
		cells := make([]string, len(stores))
		for i, s := range stores {
			cells[i] = cell(s)
		}
		fmt.Fprintf(tw, "%s\t%s\t\n", goal, strings.Join(cells, "\t"))
	}
	lo, hi := events[0], events[len(events)-1]
	if hi > lo {
		for _, f := range []struct {
			name string
			of   func(scaleRow) int64
		}{{"delivering", func(r scaleRow) int64 { return r.AnonDelivering }}, {"after restart", func(r scaleRow) int64 { return r.AnonAfter }}} {
			line(fmt.Sprintf("RssAnon %s grows ≤ %d B per stored event (%d→%d)", f.name, goalGrowth, lo, hi), func(s string) string {
				a, ok1 := get(s, lo)
				b, ok2 := get(s, hi)
				if !ok1 || !ok2 {
					return "-"
				}
				g := float64(f.of(b)-f.of(a)) / float64(hi-lo)
				return fmt.Sprintf("%.1f B %s", g, pass(g <= goalGrowth))
			})
		}
	}
	if slices.Contains(stores, "bbolt") && slices.Contains(stores, "jetstream") {
		for _, n := range events {
			for _, f := range []struct {
				name string
				of   func(scaleRow) int64
			}{{"delivering", func(r scaleRow) int64 { return r.AnonDelivering }}, {"after restart", func(r scaleRow) int64 { return r.AnonAfter }}} {
				line(fmt.Sprintf("jetstream RssAnon %s ≤ bbolt's + 64 MB (%d)", f.name, n), func(s string) string {
					if s != "jetstream" {
						return "-"
					}
					b, _ := get("bbolt", n)
					j, _ := get("jetstream", n)
					d := f.of(j) - f.of(b)
					return fmt.Sprintf("%+.1f MB %s", float64(d)/(1<<20), pass(d <= goalModeGap))
				})
			}
		}
	}
	for _, n := range events {
		for _, f := range []struct {
			name string
			goal time.Duration
			of   func(scaleRow) time.Duration
		}{
			{"restart→store open", goalStoreOpen, func(r scaleRow) time.Duration { return r.Open }},
			{"restart→/readyz 200", goalReady, func(r scaleRow) time.Duration { return r.Ready }},
			{"status", goalStatus, func(r scaleRow) time.Duration { return r.Status }},
		} {
			line(fmt.Sprintf("%s ≤ %s (%d)", f.name, f.goal, n), func(s string) string {
				r, ok := get(s, n)
				if !ok {
					return "-"
				}
				return fmt.Sprintf("%s %s", secs(f.of(r)), pass(f.of(r) <= f.goal))
			})
		}
	}
	if hi > lo {
		for _, f := range []struct {
			name string
			of   func(scaleRow) float64
		}{
			{"RssAnon delivering", func(r scaleRow) float64 { return float64(r.AnonDelivering) }},
			{"VmHWM delivering", func(r scaleRow) float64 { return float64(r.HWMDelivering) }},
			{"restart→store open", func(r scaleRow) float64 { return r.Open.Seconds() }},
			{"restart→/readyz", func(r scaleRow) float64 { return r.Ready.Seconds() }},
			{"RssAnon after restart", func(r scaleRow) float64 { return float64(r.AnonAfter) }},
			{"VmHWM after restart", func(r scaleRow) float64 { return float64(r.HWMAfter) }},
			{"status time", func(r scaleRow) float64 { return r.Status.Seconds() }},
			{"status peak RSS", func(r scaleRow) float64 { return float64(r.StatusHWM) }},
		} {
			line(fmt.Sprintf("%s at %d ≤ %.1f × at %d", f.name, hi, goalScaleRatio, lo), func(s string) string {
				a, ok1 := get(s, lo)
				b, ok2 := get(s, hi)
				if !ok1 || !ok2 || f.of(a) == 0 {
					return "-"
				}
				q := f.of(b) / f.of(a)
				return fmt.Sprintf("%.2f× %s", q, pass(q <= goalScaleRatio))
			})
		}
	}
	tw.Flush()
}

func pass(ok bool) string {
	if ok {
		return "pass"
	}
	return "FAIL"
}

func mb(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }

func secs(d time.Duration) string { return fmt.Sprintf("%.3fs", d.Seconds()) }
