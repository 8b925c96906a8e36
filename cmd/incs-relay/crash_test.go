package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller/sim"
	"github.com/incs-relay/incs-relay/sink/consume"
	"github.com/incs-relay/incs-relay/store"
	"github.com/incs-relay/incs-relay/store/storetest"
)

// TestMain lets the test binary act as the incs-relay binary: with
// INCS_RELAY_MAIN=1 it runs main() on its own arguments (litestream's
// main_cli_test.go does the same), so the crash test can SIGKILL a real
// `incs-relay run` without a separate build, race detector included.
// Otherwise it runs the tests and fails if any leaves a goroutine behind.
func TestMain(m *testing.M) {
	if os.Getenv("INCS_RELAY_MAIN") == "1" {
		main()
		return
	}
	goleak.VerifyTestMain(m)
}

// crashKillsPerPhase is how many times each phase of TestCrash_KillNine
// kills the relay (plus one kill during the very first sweep).
const crashKillsPerPhase = 5

// crashPhases are the moments TestCrash_KillNine kills the relay at.
var crashPhases = []string{
	"startup",      // before the relay is up: store open, sink connect
	"sweep",        // during a sweep that ingests new logs (mid-transaction)
	"delivery",     // while both sinks acknowledge a stream of events
	"retry",        // while the webhook receiver answers 503: retries scheduled
	"hook-down",    // the receiver's listener is closed, or just came back
	"nats-restart", // the NATS server is down or was just restarted
}

// TestCrash_KillNine runs the real `incs-relay run` as a child process
// against the simulator, an embedded JetStream server and a webhook
// receiver, and SIGKILLs it again and again at random moments of each
// phase, restarting it on the same store, while the world keeps changing,
// the API fails 5% of requests, the receiver answers 503 or is down for a
// while and the NATS server restarts. A last run then catches up and is
// stopped with SIGTERM. Every log must be exactly one event in the store
// and have reached both sinks; a redelivery must carry the identical id,
// offset and body; each task's events arrive in offset order; the stream
// holds exactly one message per log.
//
// INCS_CRASH_SEED=N replays the kill schedule of an earlier run.
func TestCrash_KillNine(t *testing.T) {
	start := time.Now()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("INCS_CRASH_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "INCS_CRASH_SEED")
		seed = v
	}
	t.Logf("kill schedule seed %d (INCS_CRASH_SEED=%d replays it)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 42))
	randDur := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo)+1)) }

	world := sim.New(sim.Options{
		Token: "tok", Tasks: 300, Seed: 11, Extra: true,
		Faults: sim.Faults{Rate: 0.05, SlowDelay: 1200 * time.Millisecond},
	})
	api := httptest.NewServer(world)
	defer api.Close()
	nb := startNATSBox(t)
	hooks := newHookReceiver(t)

	dir := t.TempDir()
	dbPath := filepath.Join(dir, "relay.db")
	adminAddr := freeLoopbackAddrT(t)
	cfgPath := filepath.Join(dir, "relay.yaml")
	writeFileT(t, cfgPath, fmt.Sprintf(`upstream:
  base_url: %q
  token: tok
  page_size: 20
  rate_limit: 500
  timeout: 1s
poll:
  interval: 150ms
  full_sweep: 1s
  initial: replay
store:
  path: %q
admin:
  addr: %q
log:
  level: info
  format: json
sinks:
  - name: bus
    type: nats
    url: %q
    jetstream: true
    stream: {name: INCS, subjects: ["incs.tasks.>"]}
    timeout: 1s
  - name: hooks
    type: webhook
    url: %q
    secret: %q
    max_in_flight: 8
    timeout: 1s
    retry: {initial: 10ms, max: 100ms, max_elapsed: 10m}
`, api.URL, dbPath, adminAddr, nb.url(), hooks.url(), e2eSecret))

	// The schedule: the first kill hits the very first sweep of a new
	// store, then every phase crashKillsPerPhase times in random order.
	schedule := []string{"first-sweep"}
	for _, p := range crashPhases {
		for range crashKillsPerPhase {
			schedule = append(schedule, p)
		}
	}
	rng.Shuffle(len(schedule)-1, func(i, j int) { schedule[i+1], schedule[j+1] = schedule[j+1], schedule[i+1] })

	kills := map[string]int{}
	var children []*relayChild
	for i, phase := range schedule {
		before := hooks.snapshot()
		lifeStart := time.Now()
		var c *relayChild
		note := ""
		// restore brings back what an earlier life left down, once this
		// relay runs: it started with a sink unreachable.
		restore := func() {
			if hooks.isDown() {
				hooks.up(t)
				note += "receiver back after start; "
			}
			if !nb.running() {
				nb.start(t)
				note += "nats back after start; "
			}
		}
		switch phase {
		case "first-sweep":
			c = startRelayChild(t, "run", "--config", cfgPath)
			c.waitRunning(t, 20*time.Second)
			sleepRandom(randDur(0, 250*time.Millisecond))
		case "startup":
			world.Step(10)
			c = startRelayChild(t, "run", "--config", cfgPath)
			sleepRandom(randDur(0, 200*time.Millisecond))
		case "sweep":
			world.Step(30)
			c = startRelayChild(t, "run", "--config", cfgPath)
			c.waitRunning(t, 20*time.Second)
			sleepRandom(randDur(0, 300*time.Millisecond))
		case "delivery":
			world.Step(40)
			c = startRelayChild(t, "run", "--config", cfgPath)
			c.waitRunning(t, 20*time.Second)
			restore()
			if !waitFor(5*time.Second, func() bool { return hooks.snapshot().ok > before.ok }) {
				note += "no delivery seen within 5s"
			}
			sleepRandom(randDur(0, 60*time.Millisecond))
		case "retry":
			hooks.setStatus(func(string) int { return http.StatusServiceUnavailable })
			world.Step(20)
			c = startRelayChild(t, "run", "--config", cfgPath)
			c.waitRunning(t, 20*time.Second)
			restore()
			if !waitFor(5*time.Second, func() bool { return hooks.snapshot().unavailable >= before.unavailable+3 }) {
				note += "fewer than 3 answers 503 within 5s"
			}
			sleepRandom(randDur(0, 100*time.Millisecond))
		case "hook-down":
			hooks.down()
			world.Step(20)
			c = startRelayChild(t, "run", "--config", cfgPath)
			c.waitRunning(t, 20*time.Second)
			sleepRandom(randDur(200*time.Millisecond, 600*time.Millisecond))
			if rng.IntN(2) == 0 {
				note += "killed while the receiver is down"
			} else {
				hooks.up(t)
				if !waitFor(5*time.Second, func() bool { return hooks.snapshot().ok > before.ok }) {
					note += "no delivery within 5s of the receiver coming back"
				} else {
					note += "killed after the receiver came back"
				}
				sleepRandom(randDur(0, 100*time.Millisecond))
			}
		case "nats-restart":
			c = startRelayChild(t, "run", "--config", cfgPath)
			c.waitRunning(t, 20*time.Second)
			restore()
			sleepRandom(randDur(50*time.Millisecond, 300*time.Millisecond))
			nb.stop()
			world.Step(20)
			sleepRandom(randDur(200*time.Millisecond, 500*time.Millisecond))
			if rng.IntN(2) == 0 {
				note += "killed while NATS is down"
			} else {
				nb.start(t)
				note += "killed after NATS came back"
				sleepRandom(randDur(300*time.Millisecond, 1200*time.Millisecond))
			}
		}
		c.kill(t)
		children = append(children, c)
		kills[phase]++
		after := hooks.snapshot()
		t.Logf("kill %2d %-12s after %4dms: webhook acknowledged %d, answered 503 %d; receiver down %v, nats down %v; %s",
			i+1, phase, time.Since(lifeStart).Milliseconds(), after.ok-before.ok, after.unavailable-before.unavailable, hooks.isDown(), !nb.running(), note)
		// Whatever was taken down comes back before the next life, except
		// sometimes: then the next relay starts while it is down.
		if hooks.isDown() && rng.IntN(3) > 0 {
			hooks.up(t)
		}
		if !nb.running() && rng.IntN(3) > 0 {
			nb.start(t)
		}
		hooks.setStatus(nil)
	}
	killed := time.Since(start)

	// Catch up: no more changes or faults, everything back up.
	world.SetFaults(sim.Faults{})
	if !nb.running() {
		nb.start(t)
	}
	if hooks.isDown() {
		hooks.up(t)
	}
	logs := world.Logs()
	final := startRelayChild(t, "run", "--config", cfgPath)
	children = append(children, final)
	final.waitRunning(t, 20*time.Second)

	// A second relay on the same store exits non-zero within a few
	// seconds, saying the store is taken.
	secondStart := time.Now()
	second := startRelayChild(t, "run", "--config", cfgPath)
	select {
	case <-second.done:
	case <-time.After(10 * time.Second):
		second.kill(t)
		t.Fatal("a second relay on a store in use did not exit within 10s")
	}
	secondTook := time.Since(secondStart)
	assert.Less(t, secondTook, 6*time.Second, "a second relay exits within a few seconds")
	assert.Equal(t, exitFailure, second.exitCode(), "second relay on a taken store")
	assert.Contains(t, second.output(), "store "+dbPath+" is taken: another incs-relay is running on it", "second relay says the store is taken")
	children = append(children, second)

	js := nb.jetStream(t)
	ok := waitFor(60*time.Second, func() bool {
		return hooks.got.logCount() >= len(logs) && streamCount(t, js) >= uint64(len(logs))
	})
	require.True(t, ok, "all %d logs delivered: webhook has %d, stream %d\n%s",
		len(logs), hooks.got.count(), streamCount(t, js), final.output())
	// The edits the simulator made without a log arrive with them; both
	// sinks get every event.
	ok = waitFor(20*time.Second, func() bool { return streamCount(t, js) == uint64(hooks.got.total()) })
	require.True(t, ok, "webhook has %d events, stream %d", hooks.got.total(), streamCount(t, js))
	caughtUp := time.Since(start) - killed

	final.terminate(t, 20*time.Second)
	assert.Equal(t, 0, final.exitCode(), "exit code after SIGTERM\n%s", final.output())
	for _, c := range children {
		assert.NotContains(t, c.output(), "WARNING: DATA RACE", "the relay has a data race")
	}

	// The store: exactly one event per log (and the edits'), offsets
	// 1..N, nothing dead.
	db, err := store.Open(dbPath, store.Options{})
	require.NoError(t, err)
	defer db.Close()
	evs, err := db.Events(context.Background(), store.EventQuery{From: 1, Limit: 100000})
	require.NoError(t, err)
	head, err := db.Head()
	require.NoError(t, err)
	assert.Equal(t, uint64(len(evs)), head, "one offset per event: none skipped or reused")
	logEvents := 0
	for _, ev := range evs {
		if isLogEvent(ev.ID) {
			logEvents++
		}
	}
	require.Equal(t, len(logs), logEvents, "one event per log")
	stored := map[string]diff.Event{}
	for _, ev := range evs {
		_, dup := stored[ev.ID]
		assert.False(t, dup, "event id %s stored twice", ev.ID)
		stored[ev.ID] = ev
	}
	for _, l := range logs {
		ev, ok := stored[diff.EventID(l.LogID)]
		if assert.True(t, ok, "log %d has no event", l.LogID) {
			assert.Equal(t, l.TaskID, ev.Data.TaskID)
			assert.Equal(t, diff.TypeOf(l.Type), ev.Type)
		}
	}
	for _, name := range []string{"bus", "hooks"} {
		cur, err := db.Cursor(name)
		require.NoError(t, err)
		assert.Equal(t, head, cur, "%s cursor", name)
		dead, err := db.DeadLetters(name)
		require.NoError(t, err)
		assert.Empty(t, dead, "%s dead letters", name)
	}

	// The stream: exactly one message per log, in per-task offset order,
	// each the stored body.
	bus := newReceived()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, "INCS", jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	msgIDs := map[string]bool{}
	for range streamCount(t, js) {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		require.NoError(t, err)
		id := m.Headers().Get("Nats-Msg-Id")
		assert.False(t, msgIDs[id], "message %s twice in the stream", id)
		msgIDs[id] = true
		bus.add(m.Data())
	}
	assert.Equal(t, uint64(len(evs)), streamCount(t, js), "exactly one message per event in the stream")

	for _, r := range []struct {
		name string
		got  *received
	}{{"nats", bus}, {"webhook", hooks.got}} {
		r.got.checkAgainst(t, r.name, logs)
		r.got.mu.Lock()
		for id, body := range r.got.bodies {
			if ev, ok := stored[id]; assert.True(t, ok, "%s got %s, which is not in the store", r.name, id) {
				assert.Equal(t, string(ev.Body), string(body), "%s: body of %s differs from the stored one", r.name, id)
			}
		}
		r.got.mu.Unlock()
	}
	snap := hooks.snapshot()
	assert.Zero(t, snap.badSig, "every webhook validly signed")

	phases := make([]string, 0, len(kills))
	total := 0
	for p, n := range kills {
		phases = append(phases, fmt.Sprintf("%s=%d", p, n))
		total += n
	}
	sort.Strings(phases)
	assert.GreaterOrEqual(t, total, 20, "kills")
	t.Logf("%d kills (%s) in %s; caught up in %s; %d logs, %d events; webhook: %d deliveries acknowledged, %d redeliveries, %d answers 503; %d API requests; a second relay on the taken store exited after %s",
		total, strings.Join(phases, " "), killed.Round(time.Millisecond), caughtUp.Round(time.Millisecond),
		len(logs), head, snap.ok, hooks.got.dups, snap.unavailable, world.Requests(), secondTook.Round(time.Millisecond))
}

// sleepRandom waits d: the random moment a kill lands at, not a poll.
func sleepRandom(d time.Duration) { <-time.After(d) }

// waitFor checks cond every 5ms until it holds (true) or timeout passes
// (false).
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		<-time.After(5 * time.Millisecond)
	}
}

// relayChild is `incs-relay` run as a child process: this test binary
// with INCS_RELAY_MAIN=1.
type relayChild struct {
	cmd     *exec.Cmd
	running chan struct{} // closed when the relay logged "relay running" (or "relay replica running")
	done    chan struct{} // closed once it exited and its stderr was read
	waitErr error

	mu   sync.Mutex
	tail []string // last lines of stderr
	// leads is whether the last of its jetstream store's "leading" and
	// "could not write the epoch" lines was "leading".
	leads bool
}

// leading reports whether the relay's log says it leads (see leads).
func (c *relayChild) leading() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leads
}

// startRelayChild starts incs-relay with args.
func startRelayChild(t testing.TB, args ...string) *relayChild {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	c := &relayChild{running: make(chan struct{}), done: make(chan struct{})}
	c.cmd = exec.Command(exe, args...)
	c.cmd.Env = append(os.Environ(), "INCS_RELAY_MAIN=1")
	stderr, err := c.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, c.cmd.Start())
	// INCS_TEST_LOGDIR=dir keeps every child's whole stderr there, one
	// file per process, for a failure the kept tail does not explain.
	var full *os.File
	if d := os.Getenv("INCS_TEST_LOGDIR"); d != "" {
		full, _ = os.Create(filepath.Join(d, fmt.Sprintf("relay-%d.log", c.cmd.Process.Pid)))
	}
	go func() {
		if full != nil {
			defer full.Close()
		}
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		running := false
		for sc.Scan() {
			line := sc.Text()
			if full != nil {
				fmt.Fprintln(full, line)
			}
			c.mu.Lock()
			switch {
			case strings.Contains(line, `"jsstore: leading"`):
				c.leads = true
			case strings.Contains(line, "could not write the epoch"):
				c.leads = false
			}
			c.tail = append(c.tail, line)
			if len(c.tail) > 400 {
				c.tail = c.tail[len(c.tail)-300:]
			}
			c.mu.Unlock()
			if !running && (strings.Contains(line, `"relay running"`) || strings.Contains(line, `"relay replica running"`)) {
				running = true
				close(c.running)
			}
		}
		c.waitErr = c.cmd.Wait()
		close(c.done)
	}()
	return c
}

// waitRunning waits until the relay is up; it fails the test if the child
// exits first or does not come up within timeout.
func (c *relayChild) waitRunning(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case <-c.running:
	case <-c.done:
		t.Fatalf("relay exited before running: %v\n%s", c.waitErr, c.output())
	case <-time.After(timeout):
		c.kill(t)
		t.Fatalf("relay not running within %s\n%s", timeout, c.output())
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *relayChild) kill(t testing.TB) {
	t.Helper()
	_ = c.cmd.Process.Kill()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatal("killed relay did not exit within 10s")
	}
}

// terminate sends SIGTERM and waits up to timeout for a clean exit.
func (c *relayChild) terminate(t testing.TB, timeout time.Duration) {
	t.Helper()
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-c.done:
	case <-time.After(timeout):
		c.kill(t)
		t.Fatalf("relay did not stop within %s of SIGTERM\n%s", timeout, c.output())
	}
}

// exitCode is the exit code once done; -1 when killed by a signal.
func (c *relayChild) exitCode() int {
	<-c.done
	var ee *exec.ExitError
	if errors.As(c.waitErr, &ee) {
		return ee.ExitCode()
	}
	if c.waitErr != nil {
		return -1
	}
	return 0
}

// output returns the last lines the child wrote to stderr.
func (c *relayChild) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.tail, "\n")
}

// hookReceiver is a webhook endpoint that verifies every delivery, answers
// per setStatus (default 204) and records what it acknowledged. Its
// listener can be closed and reopened on the same address.
type hookReceiver struct {
	verifier *consume.Verifier
	got      *received
	addr     string

	mu       sync.Mutex
	srv      *http.Server
	status   func(id string) int
	answered map[int]int
	badSig   int
	ids      map[string]int // attempts per event id, whatever the answer
}

// hookSnapshot counts a receiver's answers.
type hookSnapshot struct{ ok, unavailable, gone, badRequest, badSig int }

func newHookReceiver(t testing.TB) *hookReceiver {
	t.Helper()
	v, err := consume.NewVerifier([]string{e2eSecret})
	require.NoError(t, err)
	h := &hookReceiver{verifier: v, got: newReceived(), answered: map[int]int{}, ids: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h.addr = ln.Addr().String()
	h.serve(ln)
	t.Cleanup(h.down)
	return h
}

func (h *hookReceiver) url() string { return "http://" + h.addr + "/incs" }

func (h *hookReceiver) serve(ln net.Listener) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	h.srv = srv
	go srv.Serve(ln)
}

// setStatus makes the receiver answer fn(event id) (a 2xx acknowledges);
// nil means 204 for every event.
func (h *hookReceiver) setStatus(fn func(id string) int) {
	h.mu.Lock()
	h.status = fn
	h.mu.Unlock()
}

// down closes the listener and every connection: deliveries fail with a
// refused connection until up.
func (h *hookReceiver) down() {
	h.mu.Lock()
	srv := h.srv
	h.srv = nil
	h.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// up listens again on the same address.
func (h *hookReceiver) up(t testing.TB) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.srv != nil {
		return
	}
	var ln net.Listener
	ok := waitFor(5*time.Second, func() bool {
		var err error
		ln, err = net.Listen("tcp", h.addr)
		return err == nil
	})
	require.True(t, ok, "listen again on %s", h.addr)
	h.serve(ln)
}

func (h *hookReceiver) isDown() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.srv == nil
}

func (h *hookReceiver) snapshot() hookSnapshot {
	h.mu.Lock()
	defer h.mu.Unlock()
	return hookSnapshot{
		ok:          h.answered[http.StatusNoContent],
		unavailable: h.answered[http.StatusServiceUnavailable],
		gone:        h.answered[http.StatusGone],
		badRequest:  h.answered[http.StatusBadRequest],
		badSig:      h.badSig,
	}
}

// attempts returns how many deliveries of id arrived, whatever the answer.
func (h *hookReceiver) attempts(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ids[id]
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ev, err := h.verifier.Verify(r)
	if err != nil {
		h.mu.Lock()
		h.badSig++
		h.mu.Unlock()
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	h.mu.Lock()
	code := http.StatusNoContent
	if h.status != nil {
		code = h.status(ev.ID)
	}
	h.ids[ev.ID]++
	if code/100 == 2 {
		h.got.add(ev.Body) // before answering: the relay may die right after
	}
	h.answered[code]++
	h.mu.Unlock()
	w.WriteHeader(code)
}

// natsBox is an embedded NATS server with JetStream that can be stopped
// and started again on the same port and store directory.
type natsBox struct {
	port int
	dir  string
	mu   sync.Mutex
	s    *server.Server
	nc   *nats.Conn
}

func startNATSBox(t testing.TB) *natsBox {
	t.Helper()
	_, port, err := net.SplitHostPort(freeLoopbackAddrT(t))
	require.NoError(t, err)
	n := &natsBox{dir: t.TempDir()}
	n.port, _ = strconv.Atoi(port)
	n.start(t)
	t.Cleanup(func() {
		if n.nc != nil {
			n.nc.Close()
		}
		n.stop()
	})
	return n
}

func (n *natsBox) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

func (n *natsBox) start(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.s != nil {
		return
	}
	var s *server.Server
	ok := waitFor(5*time.Second, func() bool {
		var err error
		s, err = server.NewServer(&server.Options{ServerName: "crash", Host: "127.0.0.1", Port: n.port,
			NoLog: true, NoSigs: true, JetStream: true, StoreDir: n.dir})
		if err != nil {
			return false
		}
		go s.Start()
		if s.ReadyForConnections(5 * time.Second) {
			return true
		}
		s.Shutdown()
		s.WaitForShutdown()
		return false
	})
	require.True(t, ok, "nats server on port %d", n.port)
	n.s = s
}

func (n *natsBox) stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.s != nil {
		n.s.Shutdown()
		n.s.WaitForShutdown()
		n.s = nil
	}
}

func (n *natsBox) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.s != nil
}

// jetStream returns a JetStream client of the test itself.
func (n *natsBox) jetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(n.url(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	require.NoError(t, err)
	n.nc = nc
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}

// freeLoopbackAddrT returns a loopback address with a port free right now
// (storetest.FreeAddr: not from the ephemeral range, which an outgoing
// connection may take before the child process binds it).
func freeLoopbackAddrT(t testing.TB) string {
	t.Helper()
	return storetest.FreeAddr(t)
}

func writeFileT(t testing.TB, path, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
}
