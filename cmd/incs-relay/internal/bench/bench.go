// Package bench is the end-to-end benchmark harness of `incs-relay
// bench`: a simulated API, NATS (one server or a cluster) and a webhook
// receiver in this process, the relay itself as child processes, and a
// table of how fast every sink acknowledged every event, how that compares
// with what a plain client gets from the same servers (limits.go), and the
// relays' CPU per event and its shares by stage (cpu.go). It talks to the
// relays only through their admin API (admin.Client) and /proc; the
// command's flags stay in cmd/incs-relay.
package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/admin"
	"github.com/incs-relay/incs-relay/poller/sim"
	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/sink/consume"
)

// Options are one benchmark's settings (the bench command's flags).
type Options struct {
	Tasks        int           // tasks in the simulated world (about 4 logs each)
	Sinks        []string      // sinks to run at once: jetstream, nats, webhook
	WebhookDelay time.Duration // the webhook receiver answers after this long
	InFlight     int           // max_in_flight of every sink; 0 keeps the defaults
	Timeout      time.Duration // give up after this long
	Strategy     string        // poll.strategy: tiered or full
	// Replay then rewinds each sink to offset 1 and times its redelivery
	// of every event: delivery alone, without polling and storing.
	Replay   bool
	Store    string // store.type: bbolt or jetstream
	Replicas int    // with Store jetstream: relays, NATS nodes and store.replicas (1 to 5)
	// Limits then measures, once the relays stopped, what a plain client
	// in a process of its own does against the same NATS server(s) and
	// webhook receiver (limits.go), and compares each sink with it.
	Limits bool
	// Exe is the incs-relay binary the relays run as (`Exe run --config
	// FILE`): the bench command passes its own.
	Exe string
	// Stdout receives the table; Stderr the progress and the relays'
	// logs.
	Stdout, Stderr io.Writer
}

// sinkProgress is what the harness reads of GET /v1/sinks.
type sinkProgress struct {
	Name   string `json:"name"`
	Head   uint64 `json:"head"`
	Cursor uint64 `json:"cursor"`
}

// Run measures the whole relay: it serves a simulated API, an embedded
// NATS server with JetStream and a webhook receiver in this process, runs
// opts.Exe as `run` in child processes with poll.initial: replay, and
// writes how fast each sink acknowledged every event, the children's
// CPU per event (from /proc) and its shares by stage (from their CPU
// profiles), with Limits each sink's limit and its ratio to it, and the
// children's peak RSS. With Store jetstream it runs Replicas relays on a JetStream
// cluster of as many nodes (in this process), store.replicas the same,
// instead of one relay on a bbolt file. It returns when every sink
// acknowledged every event, or with an error when a relay exits or
// Timeout passes.
func Run(ctx context.Context, opts Options) error {
	dir, err := os.MkdirTemp("", "incs-relay-bench-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	fmt.Fprintf(opts.Stderr, "bench: building a world of %d tasks...\n", opts.Tasks)
	world := sim.New(sim.Options{Token: "bench", Tasks: opts.Tasks, Seed: 1})
	want := len(world.Logs())
	api, err := serveLoopback(world)
	if err != nil {
		return err
	}
	defer api.Close()

	nodes := 1
	if opts.Store == "jetstream" {
		nodes = opts.Replicas
	}
	cluster, err := startBenchCluster(filepath.Join(dir, "nats"), nodes)
	defer func() {
		for _, ns := range cluster {
			ns.Shutdown()
			ns.WaitForShutdown()
		}
	}()
	if err != nil {
		return err
	}
	var urls []string
	for _, ns := range cluster {
		urls = append(urls, ns.ClientURL())
	}
	natsURL := strings.Join(urls, ",")

	secret := webhookSecret()
	verifier, _ := consume.NewVerifier([]string{secret})
	var hooked, hookedBytes, badSig atomic.Int64
	hook, err := serveLoopback(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hooked.Add(1)
		hookedBytes.Add(max(r.ContentLength, 0))
		if n%100 == 0 { // verify a sample: a receiver's full cost is not what is measured
			if _, err := verifier.Verify(r); err != nil {
				badSig.Add(1)
			}
		} else {
			io.Copy(io.Discard, r.Body)
		}
		if opts.WebhookDelay > 0 {
			time.Sleep(opts.WebhookDelay)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	if err != nil {
		return err
	}
	defer hook.Close()

	var names []string
	for _, s := range opts.Sinks {
		switch s {
		case "jetstream", "nats", "webhook":
			names = append(names, s)
		default:
			return fmt.Errorf("bench: unknown sink %q (want jetstream, nats or webhook)", s)
		}
	}
	cfgPath := filepath.Join(dir, "bench.yaml")
	rc := relayConfig{
		API: api.Addr, Strategy: opts.Strategy, Store: opts.Store, NATSURL: natsURL, Nodes: nodes,
		DBPath: filepath.Join(dir, "relay.db"), Sinks: names, InFlight: opts.InFlight,
		HookURL: "http://" + hook.Addr + "/incs", Secret: secret,
	}
	if err := rc.write(cfgPath); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	relays := 1
	if opts.Store == "jetstream" {
		relays = opts.Replicas
	}
	fmt.Fprintf(opts.Stderr, "bench: relaying %d events to %s (%s store, %d relay(s))...\n", want, strings.Join(names, ", "), opts.Store, relays)
	// Each relay writes a CPU profile, for the stages' shares, unless the
	// caller asked for one of their own.
	var profiles []string
	_, ownProfile := os.LookupEnv("INCS_RELAY_CPUPROFILE")
	start := time.Now()
	// Every replica runs the same config but for admin.addr. They start
	// one after the other, each once the one before answers on its admin
	// address: replicas opening a new store at the same moment stall in
	// creating its stream and buckets.
	var children []*child
	defer func() {
		for _, c := range children {
			c.kill()
		}
	}()
	for i := range relays {
		var env []string
		if !ownProfile {
			path := filepath.Join(dir, fmt.Sprintf("relay-%d.pprof", i+1))
			env = append(env, "INCS_RELAY_CPUPROFILE="+path)
			profiles = append(profiles, path)
		}
		c, err := startChild(ctx, opts.Exe, cfgPath, opts.Stderr, env...)
		if err != nil {
			return fmt.Errorf("bench: relay %d: %v", i+1, err)
		}
		children = append(children, c)
	}
	cpuStart := cpuOf(children)
	done := map[string]time.Duration{}
	var stored time.Duration
	var peak, peakAnon int64 // peakAnon is sampled: heap and stacks, without the mapped store file
	var statusCalls []time.Duration
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for len(done) < len(names) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: gave up after %s: %d of %d sinks done", time.Since(start).Round(time.Second), len(done), len(names))
		case <-tick.C:
		}
		for i, c := range children {
			if err := c.exitedErr(); err != nil {
				return fmt.Errorf("bench: relay %d exited: %v", i+1, err)
			}
		}
		for _, c := range children {
			peak = max(peak, peakRSS(c.pid()))
			peakAnon = max(peakAnon, procStatus(c.pid(), "RssAnon:"))
		}
		// Any replica answers for the whole store.
		asked := time.Now()
		sinks, err := children[0].sinks(ctx)
		if err != nil {
			continue
		}
		// stored and done are read from this answer, so they are late by
		// up to its time: reported below.
		statusCalls = append(statusCalls, time.Since(asked))
		for _, s := range sinks {
			if stored == 0 && s.Head >= uint64(want) {
				stored = time.Since(start)
			}
			if _, ok := done[s.Name]; !ok && s.Cursor >= uint64(want) {
				done[s.Name] = time.Since(start)
			}
		}
	}
	cpuDone := cpuOf(children)
	// What the webhook receiver got from the relay: its average body is
	// the limits' body size.
	hookReqs, hookBytes := hooked.Load(), hookedBytes.Load()
	replayed := map[string]time.Duration{}
	replayCPU := map[string]time.Duration{}
	if opts.Replay {
		for _, n := range names {
			before := cpuOf(children)
			d, err := timeReplay(ctx, children[0].ac, n, uint64(want))
			if err != nil {
				return err
			}
			replayed[n], replayCPU[n] = d, cpuOf(children)-before
		}
	}
	var file int64
	for _, c := range children {
		peak = max(peak, peakRSS(c.pid()))
		file = max(file, procStatus(c.pid(), "RssFile:"))
		c.cmd.Process.Signal(syscall.SIGTERM)
	}
	var waitErr error
	for _, c := range children {
		err := <-c.exited
		c.exited <- err
		if err != nil && waitErr == nil {
			waitErr = err
		}
	}
	var lim limits
	if opts.Limits {
		lim, err = measureLimits(ctx, opts, limitRun{
			NATSURL: natsURL, HookURL: "http://" + hook.Addr + "/incs", Secret: secret, Nodes: nodes,
			Events: want, Tasks: opts.Tasks, InFlight: opts.InFlight, Sinks: names,
			HookRequests: hookReqs, HookBytes: hookBytes,
		})
		if err != nil {
			return err
		}
	}
	var shares []stageShare
	if len(profiles) > 0 {
		ps, err := readProfiles(profiles)
		if err == nil {
			shares, err = stageShares(ps...)
		}
		if err != nil {
			fmt.Fprintf(opts.Stderr, "bench: no stage shares: %v\n", err)
		}
	}

	tw := tabwriter.NewWriter(opts.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "run\t%s\n", start.UTC().Format("2006-01-02 15:04:05 MST"))
	fmt.Fprintf(tw, "world\t%d tasks, %d logs\n", opts.Tasks, want)
	if opts.Store == "jetstream" {
		fmt.Fprintf(tw, "store\tjetstream: %d relay(s) on %d NATS node(s), store.replicas %d\n", relays, nodes, nodes)
	} else {
		fmt.Fprintf(tw, "store\tbbolt\n")
	}
	fmt.Fprintf(tw, "stored (poll+decode+diff+store)\t%s\t%.0f events/s\n", stored.Round(time.Millisecond), float64(want)/stored.Seconds())
	for _, n := range names {
		rate := float64(want) / done[n].Seconds()
		fmt.Fprintf(tw, "acknowledged by %s\t%s\t%.0f events/s%s\n", n, done[n].Round(time.Millisecond), rate, lim.ratio(n, rate))
	}
	if len(statusCalls) > 0 {
		slices.Sort(statusCalls)
		fmt.Fprintf(tw, "sink status (/v1/sinks) while relaying\t%s\tp50, max %s over %d calls: the two figures above are read from it, late by up to a call\n",
			statusCalls[len(statusCalls)/2].Round(time.Millisecond), statusCalls[len(statusCalls)-1].Round(time.Millisecond), len(statusCalls))
	}
	for _, n := range names {
		if d, ok := replayed[n]; ok {
			rate := float64(want) / d.Seconds()
			fmt.Fprintf(tw, "replayed to %s (delivery alone)\t%s\t%.0f events/s%s\n", n, d.Round(time.Millisecond), rate, lim.ratio(n, rate))
		}
	}
	lim.print(tw)
	fmt.Fprintf(tw, "relay CPU per event, end to end\t%.1f µs\tuser+system of the relay(s) from start until every sink acknowledged every event, over %d events stored\n", perEvent(cpuDone-cpuStart, want), want)
	for _, n := range names {
		if d, ok := replayCPU[n]; ok {
			fmt.Fprintf(tw, "relay CPU per event, replay to %s\t%.1f µs\tper event delivered\n", n, perEvent(d, want))
		}
	}
	printShares(tw, shares, want, opts.Replay)
	fmt.Fprintf(tw, "relay peak RSS (the largest replica)\t%.1f MB\tof which anonymous (heap, stacks) peaked at %.1f MB; file-backed (the binary's code and the store's mapped pages) was %.1f MB at the end\n", float64(peak)/(1<<20), float64(peakAnon)/(1<<20), float64(file)/(1<<20))
	if opts.WebhookDelay > 0 {
		fmt.Fprintf(tw, "webhook receiver delay\t%s\n", opts.WebhookDelay)
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

// timeReplay rewinds sink to offset 1 through the admin API and returns how
// long it took until its cursor reached want again.
func timeReplay(ctx context.Context, ac *admin.Client, sink string, want uint64) (time.Duration, error) {
	cursor := func() (uint64, error) {
		var body struct {
			Sinks []sinkProgress `json:"sinks"`
		}
		if err := ac.Do(ctx, http.MethodGet, "/v1/sinks", nil, &body); err != nil {
			return 0, err
		}
		for _, s := range body.Sinks {
			if s.Name == sink {
				return s.Cursor, nil
			}
		}
		return 0, fmt.Errorf("bench: no sink %s in /v1/sinks", sink)
	}
	start := time.Now()
	if err := ac.Do(ctx, http.MethodPost, "/v1/sinks/"+sink+"/replay", url.Values{"from": {"1"}}, nil); err != nil {
		return 0, err
	}
	rewound := false
	for {
		c, err := cursor()
		if err != nil {
			return 0, err
		}
		rewound = rewound || c < want
		if rewound && c >= want {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("bench: replay to %s: cursor %d of %d when the time ran out", sink, c, want)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// startBenchCluster starts n in-process NATS servers with JetStream on
// loopback, routed into one cluster when n > 1, and waits until JetStream
// has a meta leader. On error the servers started so far are returned, for
// the caller to shut down.
func startBenchCluster(dir string, n int) ([]*server.Server, error) {
	if n == 1 {
		ns, err := sink.StartEmbeddedNATS(sink.EmbeddedOptions{Host: "127.0.0.1", Port: -1, StoreDir: dir})
		if err != nil {
			return nil, err
		}
		return []*server.Server{ns}, nil
	}
	var ports []int
	var routes []string
	for range n {
		addr, err := freeLoopbackAddr()
		if err != nil {
			return nil, err
		}
		_, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		ports = append(ports, port)
		routes = append(routes, "nats://"+addr)
	}
	var servers []*server.Server
	for i := range n {
		s, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("bench-%d", i+1), Host: "127.0.0.1", Port: server.RANDOM_PORT,
			JetStream: true, StoreDir: filepath.Join(dir, strconv.Itoa(i+1)), NoLog: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: "bench", Host: "127.0.0.1", Port: ports[i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		})
		if err != nil {
			return servers, err
		}
		go s.Start()
		servers = append(servers, s)
	}
	for _, s := range servers {
		if !s.ReadyForConnections(10 * time.Second) {
			return servers, fmt.Errorf("bench: nats %s not ready within 10s", s.Name())
		}
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		for _, s := range servers {
			if s.JetStreamIsLeader() {
				return servers, nil
			}
		}
		if time.Now().After(deadline) {
			return servers, errors.New("bench: the JetStream cluster elected no meta leader within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// webhookSecret returns a new random Standard Webhooks secret.
func webhookSecret() string {
	key := make([]byte, 24)
	rand.Read(key)
	return "whsec_" + base64.StdEncoding.EncodeToString(key)
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
