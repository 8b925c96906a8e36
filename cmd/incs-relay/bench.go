package main

// The bench command: its flags, checked before anything starts; the
// harness is package bench.

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/bench"
)

// BenchCommand measures the whole relay against the simulator (package
// bench): the relays run as child processes of this binary.
type BenchCommand struct{ m *Main }

// Run runs one benchmark and prints its table.
func (c *BenchCommand) Run(ctx context.Context, args []string) error {
	fs := c.m.newFlagSet("bench")
	tasks := fs.Int("tasks", 20000, "tasks in the simulated world (about 4 logs each)")
	sinks := fs.String("sinks", "jetstream,webhook", "sinks to run at once: any of jetstream, nats, webhook")
	delay := fs.Duration("webhook-delay", 0, "the webhook receiver answers after this long, like a remote one")
	inFlight := fs.Int("in-flight", 0, "max_in_flight of every sink (0: the defaults)")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long (with --scale: each world in each store mode)")
	strategy := fs.String("strategy", "tiered", "poll.strategy: tiered or full")
	replay := fs.Bool("replay", false, "then rewind each sink to offset 1 and time its redelivery of every event: delivery alone, without polling and storing")
	storeType := fs.String("store", "bbolt", "store.type: bbolt, or jetstream (the relays' state on a JetStream cluster in this process); with --scale, only this mode")
	replicas := fs.Int("replicas", 1, "with --store jetstream: relay replicas, NATS nodes and store.replicas (1 to 5)")
	limits := fs.Bool("limits", true, "then measure the limits: what a plain client in a process of its own does against the same NATS server(s) and webhook receiver, with as many events of the relay's average size")
	scale := fs.String("scale", "", "instead: stored events of each world, comma-separated (e.g. 100000,1000000): memory, restart and status times in both store modes as the store grows")
	scaleTasks := fs.Int("scale-tasks", 10000, "with --scale: tasks in every world (fixed; only their logs vary)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *scale != "" {
		return c.runScale(ctx, fs, *scale, *scaleTasks, *timeout)
	}
	if flagGiven(fs, "scale-tasks") {
		return &usageError{msg: "bench: --scale-tasks needs --scale"}
	}
	switch {
	case *storeType != "bbolt" && *storeType != "jetstream":
		return &usageError{msg: fmt.Sprintf("bench: --store: unknown store %q (want bbolt or jetstream)", *storeType)}
	case *replicas < 1 || *replicas > 5:
		return &usageError{msg: fmt.Sprintf("bench: --replicas: %d: want 1 to 5", *replicas)}
	case *replicas > 1 && *storeType != "jetstream":
		return &usageError{msg: "bench: --replicas: more than one replica needs --store jetstream"}
	}
	var names []string
	for _, s := range strings.Split(*sinks, ",") {
		switch s = strings.TrimSpace(s); s {
		case "jetstream", "nats", "webhook":
			names = append(names, s)
		default:
			return &usageError{msg: fmt.Sprintf("bench: --sinks: unknown sink %q (want jetstream, nats or webhook)", s)}
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if path := os.Getenv("INCS_BENCH_CPUPROFILE"); path != "" {
		// The bench process's own profile: the simulator, the NATS
		// server(s) and the receivers (the relays': INCS_RELAY_CPUPROFILE).
		stop, err := startCPUProfile(path)
		if err != nil {
			return err
		}
		defer stop()
	}
	return bench.Run(ctx, bench.Options{
		Tasks: *tasks, Sinks: names, WebhookDelay: *delay, InFlight: *inFlight, Timeout: *timeout,
		Strategy: *strategy, Replay: *replay, Store: *storeType, Replicas: *replicas, Limits: *limits,
		Exe: exe, Stdout: c.m.Stdout, Stderr: c.m.Stderr,
	})
}

// runScale checks the flags of `bench --scale` and runs it: only
// --scale-tasks, --timeout (per world and store mode) and --store (that
// mode alone instead of both) apply.
func (c *BenchCommand) runScale(ctx context.Context, fs *flag.FlagSet, list string, tasks int, timeout time.Duration) error {
	for _, name := range []string{"sinks", "webhook-delay", "in-flight", "strategy", "replay", "replicas", "tasks", "limits"} {
		if flagGiven(fs, name) {
			return &usageError{msg: fmt.Sprintf("bench: --%s does not apply to --scale (it runs one core NATS sink, --scale-tasks tasks)", name)}
		}
	}
	var stores []string // both
	if flagGiven(fs, "store") {
		st := fs.Lookup("store").Value.String()
		if st != "bbolt" && st != "jetstream" {
			return &usageError{msg: fmt.Sprintf("bench: --store: %q: want bbolt or jetstream", st)}
		}
		stores = []string{st}
	}
	var events []int
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return &usageError{msg: fmt.Sprintf("bench: --scale: %q is not a positive number of events", strings.TrimSpace(f))}
		}
		if slices.Contains(events, n) {
			return &usageError{msg: fmt.Sprintf("bench: --scale: %d twice", n)}
		}
		events = append(events, n)
	}
	if tasks < 1 {
		return &usageError{msg: fmt.Sprintf("bench: --scale-tasks: %d: want at least 1", tasks)}
	}
	if timeout <= 0 {
		return &usageError{msg: fmt.Sprintf("bench: --timeout: %s: want above 0", timeout)}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	return bench.RunScale(ctx, bench.ScaleOptions{
		Events: events, Tasks: tasks, Timeout: timeout, Stores: stores,
		Exe: exe, Stdout: c.m.Stdout, Stderr: c.m.Stderr,
	})
}

// flagGiven reports whether the command line set the flag name.
func flagGiven(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}
