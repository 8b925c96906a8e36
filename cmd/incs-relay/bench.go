package main

// The bench command: its flags, checked before anything starts; the
// harness is package bench.

import (
	"context"
	"fmt"
	"os"
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
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	strategy := fs.String("strategy", "tiered", "poll.strategy: tiered or full")
	replay := fs.Bool("replay", false, "then rewind each sink to offset 1 and time its redelivery of every event: delivery alone, without polling and storing")
	storeType := fs.String("store", "bbolt", "store.type: bbolt, or jetstream (the relays' state on a JetStream cluster in this process)")
	replicas := fs.Int("replicas", 1, "with --store jetstream: relay replicas, NATS nodes and store.replicas (1 to 5)")
	if err := parseFlags(fs, args); err != nil {
		return err
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
	return bench.Run(ctx, bench.Options{
		Tasks: *tasks, Sinks: names, WebhookDelay: *delay, InFlight: *inFlight, Timeout: *timeout,
		Strategy: *strategy, Replay: *replay, Store: *storeType, Replicas: *replicas,
		Exe: exe, Stdout: c.m.Stdout, Stderr: c.m.Stderr,
	})
}
