package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/incs-relay/incs-relay/poller/sim"
	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/sink/consume"
)

// BenchCommand measures the whole relay: it serves a simulated API, an
// embedded NATS server with JetStream and a webhook receiver in this
// process, runs `incs-relay run` as a child process with poll.initial:
// replay, and reports how fast each sink acknowledged every event and the
// child's peak RSS.
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
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "incs-relay-bench-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	fmt.Fprintf(c.m.Stderr, "bench: building a world of %d tasks...\n", *tasks)
	world := sim.New(sim.Options{Token: "bench", Tasks: *tasks, Seed: 1})
	want := len(world.Logs())
	api, err := serveLoopback(world)
	if err != nil {
		return err
	}
	defer api.Close()

	ns, err := sink.StartEmbeddedNATS(sink.EmbeddedOptions{Host: "127.0.0.1", Port: -1, StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		return err
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()

	secret := demoSecret()
	verifier, _ := consume.NewVerifier([]string{secret})
	var hooked, badSig atomic.Int64
	hook, err := serveLoopback(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hooked.Add(1)
		if n%100 == 0 { // verify a sample: a receiver's full cost is not what is measured
			if _, err := verifier.Verify(r); err != nil {
				badSig.Add(1)
			}
		} else {
			io.Copy(io.Discard, r.Body)
		}
		if *delay > 0 {
			time.Sleep(*delay)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	if err != nil {
		return err
	}
	defer hook.Close()

	adminAddr, err := freeLoopbackAddr()
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "upstream: {base_url: %q, token: bench, rate_limit: 1000, page_size: 100}\n", "http://"+api.Addr)
	fmt.Fprintf(&b, "poll: {interval: 1s, initial: replay, strategy: %s}\nstore: {path: %q}\nadmin: {addr: %q}\nlog: {level: warn, format: json}\nsinks:\n", *strategy, filepath.Join(dir, "relay.db"), adminAddr)
	var names []string
	for _, s := range strings.Split(*sinks, ",") {
		s = strings.TrimSpace(s)
		fl := ""
		if *inFlight > 0 {
			fl = fmt.Sprintf(", max_in_flight: %d", *inFlight)
		}
		switch s {
		case "jetstream":
			fmt.Fprintf(&b, "  - {name: jetstream, type: nats, url: %q, jetstream: true, stream: {name: BENCH, subjects: [\"incs.>\"]}%s}\n", ns.ClientURL(), fl)
		case "nats":
			fmt.Fprintf(&b, "  - {name: nats, type: nats, url: %q, subject: \"core.{task_id}.{event}\"%s}\n", ns.ClientURL(), fl)
		case "webhook":
			fmt.Fprintf(&b, "  - {name: webhook, type: webhook, url: %q, secret: %q%s}\n", "http://"+hook.Addr+"/incs", secret, fl)
		default:
			return &usageError{msg: fmt.Sprintf("bench: --sinks: unknown sink %q (want jetstream, nats or webhook)", s)}
		}
		names = append(names, s)
	}
	cfgPath := filepath.Join(dir, "bench.yaml")
	if err := os.WriteFile(cfgPath, []byte(b.String()), 0o600); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	child := exec.Command(exe, "run", "--config", cfgPath)
	child.Stderr = c.m.Stderr
	fmt.Fprintf(c.m.Stderr, "bench: relaying %d events to %s...\n", want, strings.Join(names, ", "))
	start := time.Now()
	if err := child.Start(); err != nil {
		return err
	}
	defer child.Process.Kill()

	ac := &adminClient{base: "http://" + adminAddr, http: &http.Client{Timeout: 5 * time.Second}}
	done := map[string]time.Duration{}
	var stored time.Duration
	var peak, peakAnon int64 // peakAnon is sampled: heap and stacks, without the mapped store file
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for len(done) < len(names) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: gave up after %s: %d of %d sinks done", time.Since(start).Round(time.Second), len(done), len(names))
		case <-tick.C:
		}
		peak = max(peak, peakRSS(child.Process.Pid))
		peakAnon = max(peakAnon, procStatus(child.Process.Pid, "RssAnon:"))
		var body struct {
			Sinks []sinkStatus `json:"sinks"`
		}
		if ac.do(ctx, http.MethodGet, "/v1/sinks", nil, &body) != nil {
			continue
		}
		for _, s := range body.Sinks {
			if stored == 0 && s.Head >= uint64(want) {
				stored = time.Since(start)
			}
			if _, ok := done[s.Name]; !ok && s.Cursor >= uint64(want) {
				done[s.Name] = time.Since(start)
			}
		}
	}
	peak = max(peak, peakRSS(child.Process.Pid))
	file := procStatus(child.Process.Pid, "RssFile:")
	child.Process.Signal(syscall.SIGTERM)
	waitErr := child.Wait()

	tw := tabwriter.NewWriter(c.m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "world\t%d tasks, %d logs\n", *tasks, want)
	fmt.Fprintf(tw, "stored (poll+decode+diff+store)\t%s\t%.0f events/s\n", stored.Round(time.Millisecond), float64(want)/stored.Seconds())
	for _, n := range names {
		fmt.Fprintf(tw, "acknowledged by %s\t%s\t%.0f events/s\n", n, done[n].Round(time.Millisecond), float64(want)/done[n].Seconds())
	}
	fmt.Fprintf(tw, "relay peak RSS\t%.1f MB\tof which anonymous (heap, stacks) peaked at %.1f MB; file-backed (the binary's code and the store's mapped pages) was %.1f MB at the end\n", float64(peak)/(1<<20), float64(peakAnon)/(1<<20), float64(file)/(1<<20))
	if *delay > 0 {
		fmt.Fprintf(tw, "webhook receiver delay\t%s\n", *delay)
	}
	tw.Flush()
	if badSig.Load() > 0 {
		return fmt.Errorf("bench: %d sampled webhooks had a bad signature", badSig.Load())
	}
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		return fmt.Errorf("bench: relay exited %d after SIGTERM", ee.ExitCode())
	}
	return nil
}

// loopbackServer is an HTTP server on a random loopback port.
type loopbackServer struct {
	Addr string
	srv  *http.Server
}

func (s *loopbackServer) Close() { s.srv.Close() }

func serveLoopback(h http.Handler) (*loopbackServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &loopbackServer{Addr: ln.Addr().String(), srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	go s.srv.Serve(ln)
	return s, nil
}

func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// peakRSS reads a process's peak resident set size (VmHWM) from /proc.
func peakRSS(pid int) int64 { return procStatus(pid, "VmHWM:") }

// procStatus reads one kB figure of /proc/PID/status, in bytes.
func procStatus(pid int, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
