package main

// The demo command: the simulator, an embedded NATS server and a
// signed-webhook receiver in process, the relay with its admin API, and
// every event printed as it arrives on NATS.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/nats-io/nats.go"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/admin"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/poller/sim"
	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/sink/consume"
)

// DemoCommand is the zero-config showcase: the API simulator, an embedded
// NATS server with JetStream and a local signed-webhook receiver, all in
// process, with every event printed as it arrives on NATS.
type DemoCommand struct{ m *Main }

// Run runs the demo until ctx ends.
func (c *DemoCommand) Run(ctx context.Context, args []string) error {
	fs := c.m.newFlagSet("demo")
	living := sim.DemoOptions()
	tasks := fs.Int("tasks", living.Tasks, "tasks in the simulated world at start")
	tick := fs.Duration("tick", living.Tick, "the world changes every tick")
	faultRate := fs.Float64("fault-rate", 0.05, "fraction of API requests that fail (the relay retries)")
	adminAddr := fs.String("admin", "127.0.0.1:8086", "admin address (a free port is taken if it is busy)")
	level := fs.String("log-level", "warn", "relay log level")
	keep := fs.String("dir", "", "keep the store here instead of a temporary folder")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(c.m.Stderr, *level, "auto")
	if err != nil {
		return err
	}
	dir := *keep
	if dir == "" {
		if dir, err = os.MkdirTemp("", "incs-relay-demo-*"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	color := false
	if f, ok := c.m.Stdout.(*os.File); ok {
		color = isatty.IsTerminal(f.Fd())
	}
	out := &eventPrinter{w: c.m.Stdout, color: color}

	// The upstream API: an evolving simulated world.
	const token = "demo-token"
	living.Token, living.Tasks, living.Seed, living.Tick = token, *tasks, time.Now().UnixNano(), *tick
	living.Faults = sim.Faults{Rate: *faultRate, Kinds: []sim.FaultKind{sim.Status429RetryAfter, sim.Status503, sim.Truncated, sim.ErrorEnvelope}}
	world := sim.New(living)
	simLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	simSrv := &http.Server{Handler: world, ReadHeaderTimeout: 5 * time.Second}
	go simSrv.Serve(simLn)
	defer simSrv.Close()
	go world.Run(ctx)

	// NATS with JetStream, in process.
	ns, err := sink.StartEmbeddedNATS(sink.EmbeddedOptions{Host: "127.0.0.1", Port: -1, StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		return fmt.Errorf("demo: nats: %w", err)
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()

	// A webhook receiver that checks every signature.
	secret := demoSecret()
	verifier, err := consume.NewVerifier([]string{secret})
	if err != nil {
		return err
	}
	var hooked, badSig atomic.Int64
	hookLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hookSrv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := verifier.Verify(r); err != nil {
			badSig.Add(1)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		hooked.Add(1)
		w.WriteHeader(http.StatusNoContent)
	})}
	go hookSrv.Serve(hookLn)
	defer hookSrv.Close()

	cfg := config.Default()
	cfg.SetFile("(demo)")
	cfg.Upstream.BaseURL = "http://" + simLn.Addr().String()
	cfg.Upstream.Token = token
	cfg.Upstream.RateLimit = 20
	cfg.Upstream.Timeout = config.Duration(3 * time.Second)
	cfg.Poll.Interval = config.Duration(time.Second)
	cfg.Poll.Initial = "replay"
	cfg.Store.Path = filepath.Join(dir, "incs-relay.db")
	cfg.Admin.Addr = freeAddr(*adminAddr)
	cfg.Sinks = []config.SinkConfig{
		{Name: "bus", Type: config.SinkNATS, URL: ns.ClientURL(), Subject: sink.DefaultNATSSubject, JetStream: true,
			Stream: &config.StreamConfig{Name: relay.DefaultStream, Subjects: []string{"incs.tasks.>"}}},
		{Name: "hooks", Type: config.SinkWebhook, URL: "http://" + hookLn.Addr().String() + "/incs", Secret: secret},
	}
	if err := cfg.Validate(); err != nil {
		return err
	}

	// Print what arrives on NATS, as a downstream service would see it.
	nc, err := nats.Connect(ns.ClientURL(), nats.Name("incs-relay demo printer"))
	if err != nil {
		return err
	}
	defer nc.Close()
	var printed atomic.Int64
	if _, err := nc.Subscribe("incs.tasks.>", func(m *nats.Msg) {
		var ev diff.Event
		if json.Unmarshal(m.Data, &ev) == nil {
			printed.Add(1)
			out.Print(&ev)
		}
	}); err != nil {
		return err
	}

	r, err := admin.Open(ctx, &cfg, log, relay.Options{})
	if err != nil {
		return err
	}
	out.Line("incs-relay demo: %d simulated tasks change every %s; every change becomes one event.", *tasks, *tick)
	out.Line("  API simulator  %s%s (%.0f%% of requests fail on purpose)", cfg.Upstream.BaseURL, poller.TasksPath, *faultRate*100)
	out.Line("  NATS           %s  subject incs.tasks.{task_id}.{event}, JetStream stream INCS", ns.ClientURL())
	out.Line("  webhook        %s  (Standard Webhooks signatures verified)", cfg.Sinks[1].URL)
	out.Line("  admin          http://%s/   metrics at /metrics", r.AdminAddr())
	out.Line("Ctrl-C stops.\n")

	go func() {
		t := time.NewTicker(15 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				head, _ := r.Store().Head()
				out.Line(out.paint(ansiDim, fmt.Sprintf("— %d events stored · %d seen on NATS · %d webhooks verified (%d bad signatures) · %d API requests",
					head, printed.Load(), hooked.Load(), badSig.Load(), world.Requests())))
			}
		}
	}()
	if err := r.Run(ctx); err != nil {
		return err
	}
	out.Line("\nstopped cleanly: %d events seen on NATS, %d webhooks verified.", printed.Load(), hooked.Load())
	return nil
}

// freeAddr returns addr if it can be listened on, else a free loopback port.
func freeAddr(addr string) string {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "127.0.0.1:0"
	}
	ln.Close()
	return addr
}

func demoSecret() string {
	b := make([]byte, 24)
	rand.Read(b)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}
