package main

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/admin"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config/configtest"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/poller/sim"
	"github.com/incs-relay/incs-relay/sink/consume"
	"github.com/incs-relay/incs-relay/store/jsstore"
)

// replica is one relay of a jetstream store, run in this process.
type replica struct {
	id     string
	r      *relay.Relay
	cancel context.CancelFunc
	done   chan error
}

func startReplica(t *testing.T, cfg *config.Config, id string) *replica {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Str("replica", id).Logger()
	r, err := admin.Open(ctx, cfg, log, relay.Options{ReplicaID: id})
	require.NoError(t, err)
	rep := &replica{id: id, r: r, cancel: cancel, done: make(chan error, 1)}
	go func() { rep.done <- r.Run(ctx) }()
	t.Cleanup(func() { rep.stop(t) })
	return rep
}

// stop ends the replica gracefully, once.
func (rep *replica) stop(t *testing.T) {
	if rep.cancel == nil {
		return
	}
	rep.cancel()
	rep.cancel = nil
	select {
	case err := <-rep.done:
		assert.NoError(t, err, rep.id)
	case <-time.After(30 * time.Second):
		t.Errorf("replica %s did not stop within 30s", rep.id)
	}
}

func (rep *replica) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + rep.r.AdminAddr() + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// replicaConfig is a jetstream-mode config on the NATS server at url with
// a 2s lease, a NATS sink on the same server and a webhook sink.
func replicaConfig(t *testing.T, apiURL, natsURL, hookURL string) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.SetFile("replicas")
	cfg.Upstream.BaseURL = apiURL
	cfg.Upstream.Token = "tok"
	cfg.Upstream.RateLimit = 200
	cfg.Upstream.Timeout = config.Duration(time.Second)
	cfg.Poll.Interval = config.Duration(150 * time.Millisecond)
	cfg.Poll.FullSweep = config.Duration(time.Second)
	cfg.Poll.Initial = "replay"
	cfg.Store.Type = config.StoreJetStream
	cfg.Store.URL = natsURL
	cfg.Store.Name = "relay"
	cfg.Store.Lease = config.Duration(2 * time.Second)
	cfg.Store.Partitions = 4
	cfg.Admin.Addr = "127.0.0.1:0"
	cfg.Sinks = []config.SinkConfig{
		{Name: "bus", Type: config.SinkNATS, URL: natsURL, Subject: "incs.tasks.{task_id}.{event}", JetStream: true,
			Stream: &config.StreamConfig{Name: "INCS", Subjects: []string{"incs.tasks.>"}}},
		{Name: "hooks", Type: config.SinkWebhook, URL: hookURL, Secret: e2eSecret, MaxInFlight: 8,
			Retry: &config.RetryConfig{Initial: config.Duration(5 * time.Millisecond), Max: config.Duration(50 * time.Millisecond), MaxElapsed: config.Duration(time.Minute)}},
	}
	require.NoError(t, cfg.Validate())
	return &cfg
}

// TestReplicas_Failover runs two replicas of one jetstream store in this
// process against a changing simulated API: the first leads and polls,
// both deliver their partitions; the follower is ready and shows who
// leads. The leader stops; the follower takes over polling within the
// lease and delivers every partition. Every log reaches the webhook and
// the NATS stream, duplicates only with identical bodies, per task in
// offset order, and the offsets are dense: 1..N, each once.
func TestReplicas_Failover(t *testing.T) {
	world := sim.New(sim.Options{Token: "tok", Tasks: 60, Seed: 11, Extra: true, Faults: sim.Faults{Rate: 0.05}})
	api := httptest.NewServer(world)
	defer api.Close()
	ns := runNATS(t)
	verifier, err := consume.NewVerifier([]string{e2eSecret})
	require.NoError(t, err)
	hooks := newReceived()
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev, err := verifier.Verify(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		hooks.add(ev.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	cfg := replicaConfig(t, api.URL, ns.ClientURL(), hook.URL)

	a := startReplica(t, cfg, "replica-a")
	require.Eventually(t, func() bool { return a.r.JetStream().IsLeader() }, 10*time.Second, 20*time.Millisecond, "the first replica leads")
	b := startReplica(t, cfg, "replica-b")
	require.Eventually(t, func() bool {
		as := b.r.JetStream().Role().Assignments
		return len(as["replica-a"]) > 0 && len(as["replica-b"]) > 0
	}, 15*time.Second, 50*time.Millisecond, "partitions spread over both replicas")
	assert.False(t, b.r.JetStream().IsLeader(), "one leader")

	for i := 0; i < 20; i++ {
		world.Step(3)
		time.Sleep(50 * time.Millisecond)
	}

	// The follower: ready, polls nothing, shows the leader and who
	// delivers which partitions.
	code, body := b.get(t, "/readyz")
	assert.Equal(t, http.StatusOK, code, body)
	assert.Zero(t, b.r.PollView().Cycles, "a follower does not poll")
	code, body = b.get(t, "/v1/cluster")
	require.Equal(t, http.StatusOK, code, body)
	var cv relay.ClusterView
	require.NoError(t, json.Unmarshal([]byte(body), &cv))
	assert.Equal(t, "replica-a", cv.Leader)
	assert.Equal(t, "replica-b", cv.Self)
	assert.NotNil(t, cv.LeaseExpires)
	assert.ElementsMatch(t, []string{"replica-a", "replica-b"}, cv.Members)
	all := slices.Concat(cv.Assignments["replica-a"], cv.Assignments["replica-b"])
	slices.Sort(all)
	assert.Equal(t, []int{0, 1, 2, 3}, all, "every partition delivered by one replica")
	lines := strings.Join(clusterLines(&cv), "\n")
	assert.Contains(t, lines, "leader: replica-a, epoch")
	assert.Contains(t, lines, "delivers: replica-b partitions")
	assert.Greater(t, a.r.PollView().Cycles, 0, "the leader polls")
	_, expoB := b.get(t, "/metrics")
	_, expoA := a.get(t, "/metrics")
	assert.Equal(t, 0.0, metricValue(t, expoB, "incs_relay_replica_leader"))
	assert.Equal(t, 1.0, metricValue(t, expoA, "incs_relay_replica_leader"))
	assert.Equal(t, 2.0, metricValue(t, expoB, "incs_relay_replica_members"))
	assert.Equal(t, 4.0, metricValue(t, expoA, "incs_relay_replica_partitions")+metricValue(t, expoB, "incs_relay_replica_partitions"))
	assert.InDelta(t, 1.5, metricValue(t, expoB, "incs_relay_replica_lease_remaining_seconds"), 1.5)
	assert.Equal(t, 1.0, metricValue(t, expoB, "incs_relay_ready"), "a follower is ready")
	assert.Greater(t, metricValue(t, expoB, "incs_relay_store_record_messages"), 0.0, "the follower counts the record packs")
	assert.Less(t, metricValue(t, expoB, "incs_relay_store_record_messages"), 60.0, "60 tasks' records packed in fewer messages")
	assert.Equal(t, 0.0, metricValue(t, expoA, "incs_relay_store_record_delete_failures_total"))

	// `status` as a one-off command asks the replica at admin.addr who leads.
	file := filepath.Join(t.TempDir(), "relay.yaml")
	writeFileT(t, file, strings.Replace(jsCLIConfig(ns.ClientURL(), "relay", ""), `addr: "127.0.0.1:1"`, `addr: "`+b.r.AdminAddr()+`"`, 1))
	var out, errb strings.Builder
	m := &Main{Stdout: &out, Stderr: &errb, Getenv: func(k string) (string, bool) { return "tok", k == "INCS_TOKEN" }}
	require.Equal(t, exitOK, m.Run(context.Background(), []string{"status", "--config", file}), errb.String())
	assert.Contains(t, out.String(), `store: jetstream "relay", 4 partitions, as replica replica-b sees it`)
	assert.Contains(t, out.String(), "leader: replica-a, epoch")
	assert.Contains(t, out.String(), "delivers: replica-a partitions")
	assert.Contains(t, out.String(), "delivers: replica-b partitions")
	t.Logf("status:\n%s", out.String())

	// With no admin API answering, it reads the lease and the members
	// from the store.
	writeFileT(t, file, jsCLIConfig(ns.ClientURL(), "relay", ""))
	out.Reset()
	require.Equal(t, exitOK, m.Run(context.Background(), []string{"status", "--config", file}), errb.String())
	assert.Contains(t, out.String(), `store: jetstream "relay", 4 partitions`+"\n")
	assert.Contains(t, out.String(), "leader: replica-a, epoch")
	assert.Contains(t, out.String(), "replicas: replica-a, replica-b")
	assert.NotContains(t, out.String(), "not live")
	hooks.mu.Lock()
	t.Logf("before the leader stops: webhook redeliveries %d (partitions handed over to the second replica)", hooks.dups)
	hooks.mu.Unlock()
	// The leader goes; the follower takes over polling and delivery.
	stopped := time.Now()
	a.stop(t)
	require.Eventually(t, func() bool { return b.r.JetStream().IsLeader() }, 10*time.Second, 20*time.Millisecond, "the follower takes the lease")
	took := time.Since(stopped)
	require.Eventually(t, func() bool { return len(b.r.JetStream().Role().Owned) == 4 }, 15*time.Second, 50*time.Millisecond, "the survivor delivers every partition")
	for i := 0; i < 20; i++ {
		world.Step(3)
		time.Sleep(50 * time.Millisecond)
	}
	world.SetFaults(sim.Faults{})
	logs := world.Logs()

	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return hooks.logCount() >= len(logs) && streamCount(t, js) >= uint64(len(logs))
	}, 60*time.Second, 50*time.Millisecond, "all %d logs delivered (webhook %d)", len(logs), hooks.count())
	// The world's edits without a log are events too: every event.
	head, err := b.r.Store().Head()
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		head, err = b.r.Store().Head()
		return err == nil && uint64(hooks.total()) == head && streamCount(t, js) == head
	}, 20*time.Second, 50*time.Millisecond, "every event delivered (webhook %d, stream %d, head %d)", hooks.total(), streamCount(t, js), head)
	code, body = b.get(t, "/readyz")
	assert.Equal(t, http.StatusOK, code, "the new leader is ready: %s", body)

	bus := newReceived()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, "INCS", jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	n := streamCount(t, js)
	for i := uint64(0); i < n; i++ {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		require.NoError(t, err)
		bus.add(m.Data())
	}
	bus.checkAgainst(t, "nats", logs)
	hooks.checkAgainst(t, "webhook", logs)

	// Offsets are dense and the same at every sink: 1..N, one event each.
	offsets := map[uint64]string{}
	for id, ev := range hooks.events {
		if prev, ok := offsets[ev.Offset]; ok {
			t.Errorf("offset %d carried by %s and %s", ev.Offset, prev, id)
		}
		offsets[ev.Offset] = id
		assert.Equal(t, ev.Offset, bus.events[id].Offset, "event %s: same offset at every sink", id)
	}
	for off := uint64(1); off <= head; off++ {
		assert.Contains(t, offsets, off, "offset %d", off)
	}
	assert.Equal(t, uint64(hooks.total()), head)
	t.Logf("%d logs; failover (stop to new leader) %s with a 2s lease; webhook redeliveries %d, nats %d", len(logs), took.Round(time.Millisecond), hooks.dups, bus.dups)
}

// TestAdminPage_Replicas loads a follower's admin page in headless
// Chromium: the Replicas section names the leader and its lease, and which
// replica delivers which partitions; the polling line says the page's
// replica follows.
func TestAdminPage_Replicas(t *testing.T) {
	if os.Getenv("INCS_RELAY_NO_BROWSER") == "1" {
		t.Skip("INCS_RELAY_NO_BROWSER=1: the headless-browser test is opted out")
	}
	chrome := chromiumPath(t)
	world := sim.New(sim.Options{Token: "tok", Tasks: 10, Seed: 5})
	api := httptest.NewServer(world)
	defer api.Close()
	ns := runNATS(t)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer hook.Close()
	cfg := replicaConfig(t, api.URL, ns.ClientURL(), hook.URL)
	cfg.Sinks = cfg.Sinks[1:]
	_, b := startPair(t, cfg, cfg)
	// The page shows the partitions this replica delivers: those
	// assigned to it once the leader handed them over (a fenced handoff,
	// which takes a moment after the join).
	var mine []string
	require.Eventually(t, func() bool {
		role := b.r.JetStream().Role()
		assigned := role.Assignments["replica-b"]
		return len(assigned) > 0 && slices.Equal(assigned, role.Owned)
	}, 15*time.Second, 20*time.Millisecond, "replica-b delivers what is assigned to it")
	for _, p := range b.r.JetStream().Role().Owned {
		mine = append(mine, strconv.Itoa(p))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bctx, fail := headless(t, ctx, chrome)
	fail(chromedp.Do(bctx,
		chromedp.Navigate("http://"+b.r.AdminAddr()+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#replicas tbody tr[data-replica="replica-a"]`)),
	), "load the follower's admin page")
	leader, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`#leader`)))
	fail(err, "read the leader line")
	assert.Contains(t, leader, "leader replica-a, epoch")
	assert.Contains(t, leader, "lease 2s, expires in")
	// The page refreshes the table every few seconds; the handoff may
	// land after its first load.
	var rows [][]string
	for deadline := time.Now().Add(10 * time.Second); ; {
		rows, err = chromedp.Run(bctx, chromedp.Evaluate[[][]string](
			`[...document.querySelectorAll('#replicas tbody tr')].map(tr => [...tr.querySelectorAll('td')].map(td => td.textContent.trim()))`))
		fail(err, "read the replicas table")
		if (len(rows) == 2 && len(rows[1]) > 2 && rows[1][2] == strings.Join(mine, ", ")) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.Len(t, rows, 2)
	assert.Equal(t, []string{"replica-a", "leader"}, rows[0][:2])
	assert.Equal(t, []string{"replica-b (this one)", "follower"}, rows[1][:2])
	assert.Equal(t, strings.Join(mine, ", "), rows[1][2], "the partitions this replica delivers")
	fail(chromedp.Do(bctx, chromedp.WaitVisible(chromedp.CSS(`#poll[data-loaded]`))), "load the polling line")
	poll, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`#poll`)))
	fail(err, "read the polling line")
	assert.Contains(t, poll, "this replica follows: replica-a polls")
}

// TestReplicas_NkeyAndTLS: the store and a NATS sink connect to a server
// that requires TLS (its CA from store.tls.ca) and an nkey (store.nkey);
// without the nkey the relay does not start, and no error quotes the seed.
func TestReplicas_NkeyAndTLS(t *testing.T) {
	dir := t.TempDir()
	user, err := nkeys.CreateUser()
	require.NoError(t, err)
	pub, err := user.PublicKey()
	require.NoError(t, err)
	seed, err := user.Seed()
	require.NoError(t, err)
	nk := filepath.Join(dir, "user.nk")
	require.NoError(t, os.WriteFile(nk, seed, 0o600))
	ca, srvCert, srvKey := writeServerTLS(t, dir)
	tlsCfg, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: srvCert, KeyFile: srvKey})
	require.NoError(t, err)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: t.TempDir(),
		Nkeys: []*server.NkeyUser{{Nkey: pub}}, TLS: true, TLSConfig: tlsCfg})
	require.NoError(t, err)
	go ns.Start()
	require.True(t, ns.ReadyForConnections(10*time.Second))
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	url := "tls://" + ns.Addr().String()

	world := sim.New(sim.Options{Token: "tok", Tasks: 10, Seed: 9})
	api := httptest.NewServer(world)
	defer api.Close()
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer hook.Close()
	cfg := replicaConfig(t, api.URL, url, hook.URL)
	auth := config.NATSAuth{NKey: nk, TLS: &config.TLSFile{CA: ca}}
	cfg.Store.NATSAuth = auth
	cfg.Sinks[0].NATSAuth = auth

	a := startReplica(t, cfg, "replica-a")
	logs := world.Logs()
	require.Eventually(t, func() bool {
		c, err := a.r.Store().Cursor("bus")
		return err == nil && c >= uint64(len(logs))
	}, 30*time.Second, 50*time.Millisecond, "every event published over the authenticated connection")
	a.stop(t)

	bad := *cfg
	bad.Store.NATSAuth = config.NATSAuth{TLS: &config.TLSFile{CA: ca}}
	_, err = admin.Open(context.Background(), &bad, zerolog.Nop(), relay.Options{ReplicaID: "x"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "connect")
	assert.NotContains(t, err.Error(), string(seed))
}

// writeServerTLS writes a CA and a server certificate for 127.0.0.1
// signed by it.
func writeServerTLS(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	return configtest.WriteCertPair(t, dir, "server", &x509.Certificate{Subject: pkix.Name{CommonName: "nats"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
}

// cutProxy forwards TCP connections to target until cut: then it drops
// every connection and refuses new ones until heal, as a network
// partition between one replica and the cluster would.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cutProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *cutProxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		d, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, d)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(d, c); d.Close() }()
		go func() { _, _ = io.Copy(c, d); c.Close() }()
	}
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *cutProxy) heal() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// TestReplicas_PartitionedLeader cuts the leader off the cluster while it
// polls a changing API: the follower takes the lease once it lapses and
// polls on; when the old leader's network heals, what it buffered is
// refused (fenced) and it follows. No event is lost or doubled: offsets
// stay dense, one event per log.
func TestReplicas_PartitionedLeader(t *testing.T) {
	world := sim.New(sim.Options{Token: "tok", Tasks: 40, Seed: 23, Extra: true})
	api := httptest.NewServer(world)
	defer api.Close()
	ns := runNATS(t)
	hooks := newReceived()
	hook := recordingHook(t, hooks, nil)
	cfg := replicaConfig(t, api.URL, ns.ClientURL(), hook.URL)
	cfg.Sinks = cfg.Sinks[1:]
	proxy := newCutProxy(t, ns.Addr().String())
	cfgA := *cfg
	cfgA.Store.URL = proxy.url()

	a, b := startPair(t, &cfgA, cfg)
	for i := 0; i < 10; i++ {
		world.Step(3)
		time.Sleep(50 * time.Millisecond)
	}

	cutAt := time.Now()
	proxy.cut()
	go func() { // the world keeps changing through the failover
		for i := 0; i < 40; i++ {
			world.Step(2)
			time.Sleep(50 * time.Millisecond)
		}
	}()
	require.Eventually(t, func() bool { return b.r.JetStream().IsLeader() }, 15*time.Second, 20*time.Millisecond, "the follower takes the lapsed lease")
	failover := time.Since(cutAt)
	require.Eventually(t, func() bool { return !a.r.JetStream().IsLeader() }, 10*time.Second, 20*time.Millisecond, "the cut-off leader steps down")
	// The new leader is ready once its first poll completed.
	assert.Eventually(t, func() bool { code, _ := b.get(t, "/readyz"); return code == http.StatusOK }, 10*time.Second, 50*time.Millisecond,
		"the new leader is ready within 10s of winning the lease")

	time.Sleep(2 * time.Second)
	proxy.heal()
	require.Eventually(t, func() bool { return a.r.JetStream().Connected() && a.r.JetStream().Role().Leader == "replica-b" }, 15*time.Second, 50*time.Millisecond,
		"the old leader reconnects and follows")
	assert.True(t, b.r.JetStream().IsLeader(), "the lease stays with the new leader")
	time.Sleep(time.Second) // the world's last changes
	logs := world.Logs()
	require.Eventually(t, func() bool { return hooks.logCount() >= len(logs) }, 30*time.Second, 50*time.Millisecond,
		"all %d logs delivered (webhook %d)", len(logs), hooks.logCount())
	var head uint64
	require.Eventually(t, func() bool {
		h, err := b.r.Store().Head()
		head = h
		return err == nil && uint64(hooks.total()) == h
	}, 20*time.Second, 50*time.Millisecond, "every event delivered (webhook %d, head %d)", hooks.total(), head)
	stored, err := b.r.Store().Read(context.Background(), 1, 1<<20)
	require.NoError(t, err)
	assert.Len(t, stored, int(head), "one event per log or edit: nothing appended twice")
	hooks.checkAgainst(t, "webhook", logs)
	hooks.mu.Lock()
	for off := uint64(1); off <= head; off++ {
		found := false
		for _, ev := range hooks.events {
			if ev.Offset == off {
				found = true
				break
			}
		}
		assert.True(t, found, "offset %d delivered", off)
	}
	hooks.mu.Unlock()
	t.Logf("%d logs; failover after a cut %s with a 2s lease", len(logs), failover.Round(time.Millisecond))
}

// TestReplicas_PauseAndResume: a webhook answering 410 Gone pauses the
// sink's partitions on both replicas, the stored state says paused, and
// neither replica is ready; one POST resume on the leader's admin API
// resumes the sink on both (the follower follows the stored state), and
// every event arrives.
func TestReplicas_PauseAndResume(t *testing.T) {
	world := sim.New(sim.Options{Token: "tok", Tasks: 30, Seed: 31})
	api := httptest.NewServer(world)
	defer api.Close()
	ns := runNATS(t)
	hooks := newReceived()
	var gone sync.Mutex
	isGone := true
	hook := recordingHook(t, hooks, func() bool {
		gone.Lock()
		defer gone.Unlock()
		return isGone
	})
	cfg := replicaConfig(t, api.URL, ns.ClientURL(), hook.URL)
	cfg.Sinks = cfg.Sinks[1:]
	a := startReplica(t, cfg, "replica-a")
	require.Eventually(t, func() bool { return a.r.JetStream().IsLeader() }, 10*time.Second, 20*time.Millisecond)
	b := startReplica(t, cfg, "replica-b")
	require.Eventually(t, func() bool {
		return a.r.DeliveryState("hooks").Paused && b.r.DeliveryState("hooks").Paused
	}, 20*time.Second, 50*time.Millisecond, "both replicas' partitions pause on 410")
	require.Eventually(t, func() bool {
		ss, err := b.r.Store().SinkState("hooks")
		return err == nil && ss.Paused && a.r.PauseSaved("hooks") && b.r.PauseSaved("hooks")
	}, 10*time.Second, 50*time.Millisecond, "the pause is stored, by both replicas")
	code, body := b.get(t, "/readyz")
	assert.Equal(t, http.StatusOK, code, "a paused sink makes no replica unready: %s", body)

	gone.Lock()
	isGone = false
	gone.Unlock()
	resp, err := http.Post("http://"+a.r.AdminAddr()+"/v1/sinks/hooks/resume", "", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	logs := world.Logs()
	require.Eventually(t, func() bool { return hooks.count() >= len(logs) }, 30*time.Second, 50*time.Millisecond,
		"every event arrives once both replicas resumed (%d of %d)", hooks.count(), len(logs))
	assert.False(t, b.r.DeliveryState("hooks").Paused, "the follower followed the resume")
	ss, err := b.r.Store().SinkState("hooks")
	require.NoError(t, err)
	assert.False(t, ss.Paused, "no replica brought the pause back")
	hooks.checkAgainst(t, "webhook", logs)
}

// recordingHook is a webhook receiver that records every body it
// acknowledges in got; while gone (if not nil) reports true it answers 410
// Gone instead.
func recordingHook(t *testing.T, got *received, gone func() bool) *httptest.Server {
	t.Helper()
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if gone != nil && gone() {
			http.Error(w, "gone", http.StatusGone)
			return
		}
		body, _ := io.ReadAll(r.Body)
		got.add(body)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hook.Close)
	return hook
}

// smallReplicaConfig is replicaConfig on a simulated world of five tasks
// with the webhook sink only.
func smallReplicaConfig(t *testing.T) *config.Config {
	t.Helper()
	world := sim.New(sim.Options{Token: "tok", Tasks: 5, Seed: 1})
	api := httptest.NewServer(world)
	t.Cleanup(api.Close)
	ns := runNATS(t)
	hook := recordingHook(t, newReceived(), nil)
	cfg := replicaConfig(t, api.URL, ns.ClientURL(), hook.URL)
	cfg.Sinks = cfg.Sinks[1:]
	return cfg
}

// TestReplicas_ConfigMismatch: a replica whose config differs from the
// leader's in a key that cannot change while running (here
// upstream.timezone; a reloadable key such as poll.interval no longer
// counts, see TestReplicas_RollingReload) refuses to join: its Run returns an error
// naming the mismatch, so `run` exits 1, and it never polls.
func TestReplicas_ConfigMismatch(t *testing.T) {
	cfg := smallReplicaConfig(t)
	a := startReplica(t, cfg, "replica-a")
	require.Eventually(t, func() bool { return a.r.JetStream().IsLeader() }, 10*time.Second, 20*time.Millisecond)

	other := *cfg
	other.Poll.Interval = config.Duration(300 * time.Millisecond)
	require.Equal(t, cfg.Hash(), other.Hash(), "a reloadable key does not count")
	other.Upstream.Timezone = "UTC"
	require.NotEqual(t, cfg.Hash(), other.Hash())
	r, err := admin.Open(context.Background(), &other, zerolog.Nop(), relay.Options{ReplicaID: "replica-b"})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	select {
	case err := <-done:
		require.Error(t, err)
		assert.Contains(t, err.Error(), "config differs from the leader's")
	case <-time.After(15 * time.Second):
		t.Fatal("a replica with another config kept running")
	}
	assert.Zero(t, r.PollView().Cycles, "it never polled")
	assert.True(t, a.r.JetStream().IsLeader(), "the leader keeps the lease")
}

// TestReplicas_ReplayFromAnywhere: while events keep flowing, `replay`
// run as a one-off command (on no replica) rewinds the sink to offset 1;
// both replicas deliver every event of their partitions again: no running
// dispatcher puts its old position back over the rewind.
func TestReplicas_ReplayFromAnywhere(t *testing.T) {
	world := sim.New(sim.Options{Token: "tok", Tasks: 40, Seed: 41})
	api := httptest.NewServer(world)
	defer api.Close()
	ns := runNATS(t)
	var mu sync.Mutex
	seen := map[uint64]int{} // offset -> deliveries
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			Offset uint64 `json:"offset"`
		}
		_ = json.NewDecoder(r.Body).Decode(&ev)
		mu.Lock()
		seen[ev.Offset]++
		mu.Unlock()
		time.Sleep(2 * time.Millisecond) // a receiver that takes its time: partitions stay busy
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	cfg := replicaConfig(t, api.URL, ns.ClientURL(), hook.URL)
	cfg.Sinks = cfg.Sinks[1:]
	startPair(t, cfg, cfg)
	stepping := make(chan struct{})
	go func() {
		defer close(stepping)
		for i := 0; i < 60; i++ {
			world.Step(3)
			time.Sleep(50 * time.Millisecond)
		}
	}()
	time.Sleep(time.Second)

	dir := t.TempDir()
	file := filepath.Join(dir, "relay.yaml")
	writeFileT(t, file, jsCLIConfig(ns.ClientURL(), "relay", ""))
	mu.Lock() // what was delivered before the replay: all of it comes again
	before := map[uint64]int{}
	for off, n := range seen {
		before[off] = n
	}
	mu.Unlock()
	var out, errb strings.Builder
	m := &Main{Stdout: &out, Stderr: &errb, Getenv: func(k string) (string, bool) { return "tok", k == "INCS_TOKEN" }}
	require.Equal(t, exitOK, m.Run(context.Background(), []string{"replay", "--config", file, "--sink", "hooks", "--from", "1"}), errb.String())
	<-stepping
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for off, n := range before {
			if seen[off] <= n {
				return false
			}
		}
		return true
	}, 60*time.Second, 100*time.Millisecond, "every event delivered before the replay is delivered again")
	t.Logf("%d events delivered again after a replay from another process; %s", len(before), strings.TrimSpace(out.String()))
}

// startPair starts replica-a on cfgA, waits until it leads, then
// replica-b on cfgB, and waits until b delivers some partitions.
func startPair(t *testing.T, cfgA, cfgB *config.Config) (a, b *replica) {
	t.Helper()
	a = startReplica(t, cfgA, "replica-a")
	require.Eventually(t, func() bool { return a.r.JetStream().IsLeader() }, 10*time.Second, 20*time.Millisecond, "the first replica leads")
	b = startReplica(t, cfgB, "replica-b")
	require.Eventually(t, func() bool { return len(b.r.JetStream().Role().Assignments["replica-b"]) > 0 }, 15*time.Second, 50*time.Millisecond,
		"the second replica delivers some partitions")
	return a, b
}

// TestReplicas_TailErrors: a malformed message on the store's stream is
// skipped by every replica's tail and counted in
// incs_relay_replica_tail_errors_total; one leaves the follower ready, a
// run of them (its tail reads nothing) makes it not ready, saying why.
func TestReplicas_TailErrors(t *testing.T) {
	cfg := smallReplicaConfig(t)
	a, b := startPair(t, cfg, cfg)
	require.Eventually(t, func() bool { code, _ := b.get(t, "/readyz"); return code == http.StatusOK }, 15*time.Second, 50*time.Millisecond,
		"the follower is ready")

	nc, err := nats.Connect(cfg.Store.URL)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	bad := func() {
		t.Helper()
		_, err := js.Publish(context.Background(), jsstore.SubjectPrefix(cfg.Store.Name)+"seen.not-a-task", []byte("{}"))
		require.NoError(t, err)
	}
	errorsAt := func(rep *replica) float64 {
		_, expo := rep.get(t, "/metrics")
		return metricValue(t, expo, "incs_relay_replica_tail_errors_total")
	}

	bad()
	require.Eventually(t, func() bool { return errorsAt(b) == 1 && errorsAt(a) == 1 }, 10*time.Second, 20*time.Millisecond,
		"both tails count the bad message")
	code, body := b.get(t, "/readyz")
	assert.Equal(t, http.StatusOK, code, "one skipped message leaves the follower ready: %s", body)

	// A run of them: the follower's tail reads nothing. A commit of the
	// leader in between would end the run, so publish until it shows.
	require.Eventually(t, func() bool {
		for range jsstore.TailBrokenAfter {
			bad()
		}
		code, _ := b.get(t, "/readyz")
		return code == http.StatusServiceUnavailable
	}, 15*time.Second, 100*time.Millisecond, "a follower whose tail reads nothing is not ready")
	_, body = b.get(t, "/readyz")
	assert.Contains(t, body, "the store's tail cannot read the stream")
	assert.Contains(t, body, "seen.not-a-task seq ")
	assert.NotContains(t, body, "{}", "never a body")
	// The follower may turn unready before it read the last of the run
	// (the first bad message already counted towards it): the count
	// catches up.
	assert.Eventually(t, func() bool { return errorsAt(b) >= 1.0+jsstore.TailBrokenAfter }, 10*time.Second, 20*time.Millisecond,
		"every skipped message counted")
}
