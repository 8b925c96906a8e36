package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller/sim"
	"github.com/incs-relay/incs-relay/store/jsstore"
	"github.com/incs-relay/incs-relay/store/storetest"
)

// The chaos test's timing: a short lease, as the issue asks, and a poll
// interval short against it, so that failover time is mostly the lease.
const (
	chaosLease    = 2 * time.Second
	chaosInterval = 200 * time.Millisecond
	chaosName     = "chaos" // store.name: the outbox stream and every bucket
	chaosOut      = "CHAOS_OUT"
	chaosKills    = 6 // kill -9 of the leader
)

// TestChaos_JetStreamReplicas runs three incs-relay replicas (child
// processes) in jetstream mode on a three-node JetStream cluster (three
// nats-server child processes built from the nats-server/v2 module), against
// the simulator (in process, changing all the time, 5% of requests faulty),
// with a webhook receiver that verifies every signature and a JetStream
// subscriber of the NATS sink's stream. Lease 2s. The script: kill -9 the
// leader again and again, restarting it each time; kill -9 a NATS node and
// bring it back; SIGSTOP the leader for longer than its lease, then SIGCONT
// it: it must not append anything (fenced); restart a replica. At the end
// every upstream log has its event at the receiver and at the subscriber,
// duplicates only with identical id and body, per-task order kept, offsets
// dense and the same at every sink and in the outbox stream. It measures
// failover: from a leader's death to the next event stored (p50, max).
//
// It runs only with INCS_CHAOS=1 (its own step in .ci/run, about two
// minutes); INCS_CHAOS_SEED=N replays an earlier run's choices.
func TestChaos_JetStreamReplicas(t *testing.T) {
	if os.Getenv("INCS_CHAOS") != "1" {
		t.Skip("INCS_CHAOS=1 runs the chaos test (child processes, about two minutes; .ci/run runs it as its own step)")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("INCS_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "INCS_CHAOS_SEED")
		seed = v
	}
	t.Logf("seed %d (INCS_CHAOS_SEED=%d replays it)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 15))
	began := time.Now()

	cl := startNATSCluster(t, buildNATSServer(t))

	world := sim.New(sim.Options{
		Token: "tok", Tasks: 150, Seed: int64(seed % 1000), Extra: true,
		Faults: sim.Faults{Rate: 0.05, SlowDelay: 600 * time.Millisecond},
	})
	api := httptest.NewServer(world)
	defer api.Close()
	hooks := newHookReceiver(t)

	// The world changes all the time, so that there is always something
	// for a new leader to store: the failover measure relies on it.
	mutCtx, stopMut := context.WithTimeout(context.Background(), 5*time.Minute)
	defer stopMut()
	var mutWG sync.WaitGroup
	mutWG.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-mutCtx.Done():
				return
			case <-tick.C:
				world.Step(2)
			}
		}
	})
	stopWorld := func() { stopMut(); mutWG.Wait() }
	defer stopWorld()

	dir := t.TempDir()
	relays := make([]*chaosRelay, 3)
	// One after the other: replicas opening a new store at the same moment
	// stall in creating its buckets (see the report of issue 15).
	for i := range relays {
		relays[i] = newChaosRelay(t, dir, i, api.URL, cl.urls(), hooks.url())
		relays[i].start(t)
		relays[i].c.waitRunning(t, 30*time.Second)
	}
	defer func() {
		for _, r := range relays {
			r.cont()
			if r.c != nil {
				_ = r.c.cmd.Process.Kill()
				<-r.c.done
			}
		}
	}()

	obs := newChaosObserver(t, cl.urls())
	defer obs.close()
	bus := newReceived()
	obs.consume(t, chaosOut, func(m jetstream.Msg) { bus.add(m.Data()) })
	obs.watchOutbox(t)
	require.True(t, waitFor(30*time.Second, func() bool { return obs.evCount() > 0 }), "no event stored within 30s")

	// 1. kill -9 the leader, again and again; each comes back at once, as
	// a supervisor would restart it.
	var failovers []time.Duration
	for k := range chaosKills {
		sleepRandom(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
		li := waitChaosLeader(t, obs, relays, 30*time.Second)
		t0 := time.Now()
		relays[li].c.kill(t)
		relays[li].start(t)
		fo, ok := obs.failover(t0, 30*time.Second)
		require.True(t, ok, "kill %d: no new leader stored an event within 30s of the leader's death", k+1)
		failovers = append(failovers, fo)
		t.Logf("kill -9 %d: leader relay-%d; next event stored by its successor after %s", k+1, li, fo.Round(time.Millisecond))
		relays[li].c.waitRunning(t, 30*time.Second)
	}

	// 2. kill -9 a NATS node, keep going without it, bring it back.
	// Stored is judged by the head offset (the stream's "$INCS.<name>.head"
	// subject), which the test's own consumer cannot miss while it moves.
	n := rng.IntN(len(cl.nodes))
	li := waitChaosLeader(t, obs, relays, 30*time.Second)
	headBefore, hooksBefore := obs.head(), hooks.got.count()
	cl.nodes[n].kill(t)
	downAt := time.Now()
	storedWhileDown := waitFor(15*time.Second, func() bool { return obs.head() > headBefore+5 })
	storedAfter := time.Since(downAt)
	sleepRandom(time.Until(downAt.Add(4 * time.Second)))
	headDown, hooksDown := obs.head(), hooks.got.count()
	cl.nodes[n].start(t)
	cl.waitReady(t, 30*time.Second)
	t.Logf("NATS node n%d killed for %s (leader relay-%d): head %d -> %d while down (more than 5 stored after %s), webhook received %d new events",
		n+1, time.Since(downAt).Round(time.Millisecond), li, headBefore, headDown, storedAfter.Round(time.Millisecond), hooksDown-hooksBefore)
	assert.True(t, storedWhileDown, "with one NATS node of three down, events are still stored: head stayed at %d for 15s\n%s", headBefore, chaosOutputs(relays))

	// 3. SIGSTOP the leader for longer than its lease: a successor takes
	// over; after SIGCONT the old leader must not append (fenced).
	li = waitChaosLeader(t, obs, relays, 30*time.Second)
	t0 := time.Now()
	relays[li].stop()
	fo, ok := obs.failover(t0, 30*time.Second)
	require.True(t, ok, "no successor stored an event within 30s of SIGSTOP to the leader")
	sleepRandom(time.Until(t0.Add(2*chaosLease + time.Second)))
	stoppedFor := time.Since(t0)
	next := waitChaosLeader(t, obs, relays, 30*time.Second, li)
	mark := obs.mark()
	relays[li].cont()
	sleepRandom(chaosLease + time.Second) // every chance to append
	holder := obs.leaseHolder()
	assert.NotEqual(t, relays[li].id(), holder, "relay-%d, stopped for %s, holds the lease again right after SIGCONT", li, stoppedFor)
	steppedDown := waitFor(5*time.Second, func() bool { return strings.Contains(relays[li].c.output(), "no longer leading") })
	assert.True(t, steppedDown, "relay-%d logs that it no longer leads after SIGCONT\n%s", li, relays[li].c.output())
	stale := obs.appendsSince(mark)
	assert.Empty(t, stale, "relay-%d appended after its successor relay-%d started (epoch records and events stored since SIGCONT, by stream sequence)", li, next)
	t.Logf("SIGSTOP: relay-%d stopped %s (lease %s); relay-%d stored the next event after %s; after SIGCONT the lease names %q",
		li, stoppedFor.Round(time.Millisecond), chaosLease, next, fo.Round(time.Millisecond), holder)

	// 4. restart a replica: SIGTERM a follower, which drains and exits 0,
	// and start it again.
	li = waitChaosLeader(t, obs, relays, 30*time.Second)
	fi := (li + 1 + rng.IntN(2)) % 3
	relays[fi].c.terminate(t, 30*time.Second)
	assert.Equal(t, 0, relays[fi].c.exitCode(), "relay-%d after SIGTERM\n%s", fi, relays[fi].c.output())
	relays[fi].start(t)
	relays[fi].c.waitRunning(t, 30*time.Second)

	// Catch up: no more changes or faults.
	stopWorld()
	world.SetFaults(sim.Faults{})
	logs := world.Logs()
	ok = waitFor(90*time.Second, func() bool {
		return hooks.got.logCount() >= len(logs) && bus.logCount() >= len(logs) && obs.evCount() >= len(logs)
	})
	if !ok {
		inOutbox := map[string]bool{}
		for _, e := range obs.events() {
			inOutbox[e.id] = true
		}
		var notStored, notDelivered []string
		hooks.got.mu.Lock()
		for _, l := range logs {
			id := diff.EventID(l.LogID)
			if !inOutbox[id] {
				notStored = append(notStored, fmt.Sprintf("%s(task %d)", id, l.TaskID))
			} else if _, ok := hooks.got.bodies[id]; !ok {
				notDelivered = append(notDelivered, fmt.Sprintf("%s(task %d)", id, l.TaskID))
			}
		}
		hooks.got.mu.Unlock()
		t.Fatalf("all %d logs delivered within 90s: webhook %d, subscriber %d, outbox %d; not in the outbox %v; stored, not at the webhook %v\n%s",
			len(logs), hooks.got.logCount(), bus.logCount(), obs.evCount(), notStored, notDelivered, chaosOutputs(relays))
	}
	// The world's edits without a log are events too: every event at
	// both sinks.
	ok = waitFor(30*time.Second, func() bool {
		return hooks.got.count() == obs.evCount() && bus.count() == obs.evCount()
	})
	require.True(t, ok, "every event delivered: webhook %d, subscriber %d, outbox %d", hooks.got.count(), bus.count(), obs.evCount())
	for i, r := range relays {
		r.c.terminate(t, 30*time.Second)
		assert.Equal(t, 0, r.c.exitCode(), "relay-%d after SIGTERM\n%s", i, r.c.output())
		assert.NotContains(t, r.c.output(), "WARNING: DATA RACE", "relay-%d has a data race", i)
	}
	for _, r := range relays {
		for _, c := range r.past {
			assert.NotContains(t, c.output(), "WARNING: DATA RACE", "a relay has a data race")
		}
	}

	// Every log at both sinks, once by id, identical bodies, per-task order.
	hooks.got.checkAgainst(t, "webhook", logs)
	bus.checkAgainst(t, "nats", logs)
	assert.Zero(t, hooks.snapshot().badSig, "every webhook validly signed")

	// Offsets dense, the same at every sink and in the outbox.
	outbox := obs.events()
	assert.Len(t, outbox, hooks.got.count(), "the outbox stream: one event message per event")
	byID := map[string]uint64{}
	seenOff := map[uint64]string{}
	for _, e := range outbox {
		if prev, dup := seenOff[e.offset]; dup {
			assert.Failf(t, "offset stored twice", "offset %d: %s and %s", e.offset, prev, e.id)
		}
		seenOff[e.offset] = e.id
		_, dup := byID[e.id]
		assert.False(t, dup, "event %s stored twice in the outbox", e.id)
		byID[e.id] = e.offset
	}
	for off := uint64(1); off <= uint64(len(outbox)); off++ {
		if _, ok := seenOff[off]; !ok {
			assert.Failf(t, "offsets not dense", "no event at offset %d of 1..%d", off, len(outbox))
			break
		}
	}
	for name, r := range map[string]*received{"webhook": hooks.got, "nats": bus} {
		r.mu.Lock()
		for id, ev := range r.events {
			assert.Equal(t, byID[id], ev.Offset, "%s: offset of %s differs from the outbox's", name, id)
		}
		r.mu.Unlock()
	}

	// Failover against the lease.
	slices.Sort(failovers)
	p50, worst := failovers[len(failovers)/2], failovers[len(failovers)-1]
	t.Logf("failover over %d kills -9 (lease %s, poll interval %s): p50 %s, max %s (p50 = %.2f x lease); all: %v",
		len(failovers), chaosLease, chaosInterval, p50.Round(time.Millisecond), worst.Round(time.Millisecond),
		p50.Seconds()/chaosLease.Seconds(), failovers)
	assert.GreaterOrEqual(t, len(failovers), 5, "failovers measured")
	assert.Less(t, worst, 3*chaosLease+5*time.Second, "failover bounded by a few leases")
	t.Logf("%d logs, %d events; webhook %d redeliveries, subscriber %d; %d API requests; %s in all",
		len(logs), len(outbox), hooks.got.dups, bus.dups, world.Requests(), time.Since(began).Round(time.Second))
}

// chaosOutputs is the last lines of every replica's log.
func chaosOutputs(relays []*chaosRelay) string {
	var b strings.Builder
	for i, r := range relays {
		fmt.Fprintf(&b, "--- relay-%d:\n%s\n", i, r.c.output())
	}
	return b.String()
}

// buildNATSServer builds nats-server from the nats-server/v2 module this
// module requires, into a temp dir.
func buildNATSServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nats-server")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build nats-server: %s", out)
	return bin
}

// natsNode is one nats-server child process of a cluster; it can be
// killed and started again on the same ports and store directory.
type natsNode struct {
	name                  string
	bin, conf, dir        string
	port, cport, httpPort int
	cmd                   *exec.Cmd
	done                  chan struct{}
}

// natsCluster is three nats-server child processes with JetStream, routed
// to each other on 127.0.0.1.
type natsCluster struct{ nodes []*natsNode }

func startNATSCluster(t *testing.T, bin string) *natsCluster {
	t.Helper()
	cl := &natsCluster{}
	var routes []string
	for i := range 3 {
		n := &natsNode{name: fmt.Sprintf("n%d", i+1), bin: bin, dir: t.TempDir(),
			port: freePortT(t), cport: freePortT(t), httpPort: freePortT(t)}
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", n.cport))
		cl.nodes = append(cl.nodes, n)
	}
	for _, n := range cl.nodes {
		n.conf = filepath.Join(n.dir, "nats.conf")
		writeFileT(t, n.conf, fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream { store_dir: %q }
cluster {
  name: chaos
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, n.name, n.port, n.httpPort, filepath.Join(n.dir, "js"), n.cport, strings.Join(routes, ", ")))
		n.start(t)
	}
	t.Cleanup(func() {
		for _, n := range cl.nodes {
			n.stop()
		}
	})
	cl.waitReady(t, 60*time.Second)
	return cl
}

// urls is the client URL list of every node, as a relay's config wants it.
func (cl *natsCluster) urls() string {
	var us []string
	for _, n := range cl.nodes {
		us = append(us, fmt.Sprintf("nats://127.0.0.1:%d", n.port))
	}
	return strings.Join(us, ",")
}

// waitReady waits until every node reports JetStream healthy (the meta
// leader elected, its streams current).
func (cl *natsCluster) waitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	hc := &http.Client{Timeout: time.Second}
	for _, n := range cl.nodes {
		ok := waitFor(timeout, func() bool {
			resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", n.httpPort))
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
		require.True(t, ok, "nats node %s not healthy within %s", n.name, timeout)
	}
}

func (n *natsNode) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(n.dir, "nats.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	require.NoError(t, err)
	defer logf.Close()
	n.cmd = exec.Command(n.bin, "-c", n.conf)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	require.NoError(t, n.cmd.Start())
	n.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(n.cmd, n.done)
	ok := waitFor(10*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.port), 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	require.True(t, ok, "nats node %s does not listen on %d", n.name, n.port)
}

// kill sends SIGKILL and waits for the process to be gone.
func (n *natsNode) kill(t *testing.T) {
	t.Helper()
	_ = n.cmd.Process.Kill()
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("nats node %s did not exit within 10s of SIGKILL", n.name)
	}
}

func (n *natsNode) stop() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.done
}

// chaosRelay is one replica's slot: its config and the process running it
// now (restarts replace c; the ones before are kept in past).
type chaosRelay struct {
	i       int
	cfgPath string
	admin   string
	c       *relayChild
	past    []*relayChild
	stopped bool
}

func newChaosRelay(t *testing.T, dir string, i int, apiURL, natsURLs, hookURL string) *chaosRelay {
	t.Helper()
	r := &chaosRelay{i: i, cfgPath: filepath.Join(dir, fmt.Sprintf("relay-%d.yaml", i)), admin: freeLoopbackAddrT(t)}
	// The same config for every replica but admin.addr.
	writeFileT(t, r.cfgPath, fmt.Sprintf(`upstream:
  base_url: %q
  token: tok
  page_size: 20
  rate_limit: 500
  timeout: 1s
poll:
  interval: %s
  full_sweep: 2s
  initial: replay
store:
  type: jetstream
  url: %q
  replicas: 3
  lease: %s
  name: %s
admin:
  addr: %q
log:
  level: %s
  format: json
sinks:
  - name: bus
    type: nats
    url: %q
    jetstream: true
    stream: {name: %s, subjects: ["incs.tasks.>"], replicas: 3}
    timeout: 2s
  - name: hooks
    type: webhook
    url: %q
    secret: %q
    max_in_flight: 8
    timeout: 1s
    retry: {initial: 10ms, max: 200ms, max_elapsed: 10m}
`, apiURL, chaosInterval, natsURLs, chaosLease, chaosName, r.admin, cmp.Or(os.Getenv("INCS_CHAOS_LOG_LEVEL"), "info"), natsURLs, chaosOut, hookURL, e2eSecret))
	return r
}

// start runs a new process in the slot.
func (r *chaosRelay) start(t *testing.T) {
	t.Helper()
	if r.c != nil {
		r.past = append(r.past, r.c)
	}
	r.c = startRelayChild(t, "run", "--config", r.cfgPath)
	r.stopped = false
}

// id is the replica id of the process in the slot: jsstore's default,
// "<hostname>-<pid>".
func (r *chaosRelay) id() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", host, r.c.cmd.Process.Pid)
}

// stop sends SIGSTOP; cont SIGCONT.
func (r *chaosRelay) stop() {
	_ = r.c.cmd.Process.Signal(syscall.SIGSTOP)
	r.stopped = true
}

func (r *chaosRelay) cont() {
	if r.stopped && r.c != nil {
		_ = r.c.cmd.Process.Signal(syscall.SIGCONT)
		r.stopped = false
	}
}

// waitChaosLeader returns the index of the replica that holds the lease,
// skipping stopped replicas and those in not. It reads the lease bucket
// ("<name>-lease", key "leader"), whose value names the holder's replica
// id, "<hostname>-<pid>" by default.
func waitChaosLeader(t *testing.T, obs *chaosObserver, relays []*chaosRelay, timeout time.Duration, not ...int) int {
	t.Helper()
	leader := -1
	ok := waitFor(timeout, func() bool {
		// A replica leads once it holds the lease and wrote its epoch
		// record: one that won the lease but could not write the record
		// (a NATS node just died) releases it again without leading; so
		// can one whose record was stored but that could not read it
		// back, hence its log is asked too (relayChild.leading).
		id := obs.leaseHolder()
		if id == "" || obs.epochLeader() != id {
			return false
		}
		for i, r := range relays {
			if !r.stopped && !slices.Contains(not, i) && id == r.id() && r.c.leading() {
				leader = i
				return true
			}
		}
		return false
	})
	require.True(t, ok, "no replica holds the lease within %s (holder %q)", timeout, obs.leaseHolder())
	return leader
}

// chaosObserver watches the cluster from the test: the outbox stream's
// event and epoch records as they are stored, and the NATS sink's stream.
type chaosObserver struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	ctxs []jetstream.ConsumeContext

	mu     sync.Mutex
	stored []storedRecord // in stream order
}

// storedRecord is one message of the outbox stream: an event or an epoch
// record.
type storedRecord struct {
	seq    uint64
	epoch  bool
	at     time.Time // when the server stored it
	offset uint64
	id     string
	leader string // an epoch record's leader
}

func newChaosObserver(t *testing.T, urls string) *chaosObserver {
	t.Helper()
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	require.NoError(t, err)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return &chaosObserver{nc: nc, js: js}
}

// head is the outbox's head offset as the stream says it now ("$INCS.<name>.head"
// holds the last offset assigned), 0 if unknown.
func (o *chaosObserver) head() uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := o.js.Stream(ctx, chaosName)
	if err != nil {
		return 0
	}
	m, err := st.GetLastMsgForSubject(ctx, jsstore.SubjectPrefix(chaosName)+"head")
	if err != nil {
		return 0
	}
	h, _ := strconv.ParseUint(strings.TrimSpace(string(m.Data)), 10, 64)
	return h
}

// leaseHolder is the replica id the lease names now, "" if none.
func (o *chaosObserver) leaseHolder() string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	kv, err := o.js.KeyValue(ctx, chaosName+"-lease")
	if err != nil {
		return ""
	}
	e, err := kv.Get(ctx, "leader")
	if err != nil {
		return ""
	}
	var v struct {
		Leader string `json:"leader"`
	}
	_ = json.Unmarshal(e.Value(), &v)
	return v.Leader
}

func (o *chaosObserver) close() {
	for _, c := range o.ctxs {
		c.Stop()
	}
	o.nc.Close()
}

// consume calls fn for every message of stream, from the first, through
// an ordered consumer (recreated by the client when its node dies).
func (o *chaosObserver) consume(t *testing.T, stream string, fn func(jetstream.Msg), filters ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := o.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: filters})
	require.NoError(t, err, "consumer on %s", stream)
	cc, err := cons.Consume(fn)
	require.NoError(t, err)
	o.ctxs = append(o.ctxs, cc)
}

// watchOutbox records the outbox stream's events and epoch records. An
// event message packs the events of one partition that a batch committed:
// per event a line "<offset> <task> <commit time> <type>", then the event
// JSON on one line (store/jsstore/frame.go); a message whose first byte is
// 0x01 holds them as one S2 block after it, as docs/ha.md tells a tool of
// its own.
func (o *chaosObserver) watchOutbox(t *testing.T) {
	t.Helper()
	o.consume(t, chaosName, func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return
		}
		var rec struct {
			Leader string `json:"leader"`
		}
		_ = json.Unmarshal(m.Data(), &rec)
		recs := []storedRecord{{seq: md.Sequence.Stream, at: md.Timestamp, epoch: true, leader: rec.Leader}}
		if m.Subject() != jsstore.SubjectPrefix(chaosName)+"epoch" {
			recs = nil
			data := m.Data()
			if len(data) > 0 && data[0] == 0x01 {
				if data, err = s2.Decode(nil, data[1:]); err != nil {
					data = []byte("0 0 0 \"\"\nundecodable\n")
				}
			}
			lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
			for i := 0; i+1 < len(lines); i += 2 {
				off, _ := strconv.ParseUint(strings.Fields(lines[i])[0], 10, 64)
				var ev struct {
					ID     string `json:"id"`
					Offset uint64 `json:"offset"`
				}
				if json.Unmarshal([]byte(lines[i+1]), &ev) != nil || ev.Offset != off {
					ev.ID = fmt.Sprintf("unreadable frame %d of message %d", i/2, md.Sequence.Stream)
				}
				recs = append(recs, storedRecord{seq: md.Sequence.Stream, at: md.Timestamp, offset: off, id: ev.ID})
			}
		}
		o.mu.Lock()
		o.stored = append(o.stored, recs...)
		o.mu.Unlock()
	}, jsstore.SubjectPrefix(chaosName)+"ev.>", jsstore.SubjectPrefix(chaosName)+"epoch")
}

// epochLeader is the replica named by the last epoch record stored.
func (o *chaosObserver) epochLeader() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := len(o.stored) - 1; i >= 0; i-- {
		if o.stored[i].epoch {
			return o.stored[i].leader
		}
	}
	return ""
}

func (o *chaosObserver) evCount() int { return len(o.events()) }

// events returns the event records seen so far.
func (o *chaosObserver) events() []storedRecord {
	o.mu.Lock()
	defer o.mu.Unlock()
	var evs []storedRecord
	for _, r := range o.stored {
		if !r.epoch {
			evs = append(evs, r)
		}
	}
	return evs
}

// failover waits for a new epoch record stored after t0 and the first
// event stored after it, and returns how long after t0 that event was
// stored.
func (o *chaosObserver) failover(t0 time.Time, timeout time.Duration) (time.Duration, bool) {
	var d time.Duration
	ok := waitFor(timeout, func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		epoch := false
		for _, r := range o.stored {
			switch {
			case r.epoch && r.at.After(t0):
				epoch = true
			case !r.epoch && epoch:
				d = r.at.Sub(t0)
				return true
			}
		}
		return false
	})
	return d, ok
}

// mark is the position in the record up to now.
func (o *chaosObserver) mark() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.stored)
}

// appendsSince returns the records stored since mark that break the
// single-writer rule: an event whose offset or id was already stored.
func (o *chaosObserver) appendsSince(mark int) []storedRecord {
	o.mu.Lock()
	defer o.mu.Unlock()
	offs, ids := map[uint64]bool{}, map[string]bool{}
	var bad []storedRecord
	for i, r := range o.stored {
		if r.epoch {
			continue
		}
		if i >= mark && (offs[r.offset] || ids[r.id]) {
			bad = append(bad, r)
		}
		offs[r.offset], ids[r.id] = true, true
	}
	return bad
}

// freePortT returns a loopback port free right now (storetest.FreePort).
func freePortT(t *testing.T) int {
	t.Helper()
	return storetest.FreePort(t)
}
