// The handoff test: three replicas on a three-node cluster, each with a
// partitioned webhook delivery to one slow receiver, replicas leaving and
// joining (gracefully, or killed) while events flow.

package partition

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/diff/difftest"
	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/store/jsstore"
	"github.com/incs-relay/incs-relay/store/storetest"
)

// threeNodes starts an in-process three-node JetStream cluster on ports
// from storetest.FreePort and returns its client URLs, comma-separated.
func threeNodes(t *testing.T) string {
	t.Helper()
	var routePorts, clientPorts []int
	for range 3 {
		routePorts, clientPorts = append(routePorts, storetest.FreePort(t)), append(clientPorts, storetest.FreePort(t))
	}
	var urls []string
	for i := range 3 {
		var routes []*url.URL
		for j, p := range routePorts {
			if j != i {
				routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
			}
		}
		srv, err := server.NewServer(&server.Options{ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: clientPorts[i],
			NoLog: true, NoSigs: true, JetStream: true, StoreDir: t.TempDir(), Routes: routes,
			Cluster: server.ClusterOpts{Name: "handoff", Host: "127.0.0.1", Port: routePorts[i]}})
		require.NoError(t, err)
		srv.Start()
		t.Cleanup(srv.Shutdown)
		require.True(t, srv.ReadyForConnections(20*time.Second), "node %d ready", i+1)
		urls = append(urls, srv.ClientURL())
	}
	return strings.Join(urls, ",")
}

// receiver is a webhook endpoint that answers a share of its requests
// slowly and records every request it got: its event id, body and order
// of arrival.
type receiver struct {
	mu     sync.Mutex
	rnd    *rand.Rand
	slow   float64
	got    map[string][][]byte // event id -> bodies, in arrival order
	first  map[string]int      // event id -> arrival number of its first request
	n      int
	srv    *httptest.Server
	closed atomic.Bool
}

func newReceiver(t *testing.T, slow float64) *receiver {
	r := &receiver{rnd: rand.New(rand.NewPCG(21, 21)), slow: slow, got: map[string][][]byte{}, first: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		id := req.Header.Get("Webhook-Id")
		r.mu.Lock()
		r.n++
		if _, ok := r.first[id]; !ok {
			r.first[id] = r.n
		}
		r.got[id] = append(r.got[id], body)
		wait := r.rnd.Float64() < r.slow
		r.mu.Unlock()
		if wait && !r.closed.Load() {
			select {
			case <-time.After(2 * time.Second):
			case <-req.Context().Done():
			}
		}
	}))
	t.Cleanup(func() { r.closed.Store(true); r.srv.Close() })
	return r
}

// has reports whether every id got at least one request.
func (r *receiver) has(ids []string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if _, ok := r.got[id]; !ok {
			return false
		}
	}
	return true
}

// killable is a sink that, once killed, sends nothing more: every later
// Deliver blocks until its context ends, as a process killed with -9 does
// (an attempt already sent stays sent).
type killable struct {
	sink.Sink
	id   string
	dead atomic.Bool
}

func (k *killable) Deliver(ctx context.Context, ev *diff.Event) error {
	if k.dead.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	sent.Lock()
	sent.m[ev.ID] = append(sent.m[ev.ID], fmt.Sprintf("%s@%s", k.id, time.Now().Format("05.000")))
	sent.Unlock()
	return k.Sink.Deliver(ctx, ev)
}

var sent = struct {
	sync.Mutex
	m map[string][]string
}{m: map[string][]string{}}

// relayNode is one replica: its store, its partitioned webhook delivery.
type relayNode struct {
	id        string
	st        *jsstore.Store
	nc        *nats.Conn
	hook      *killable
	stopStore func()
	stopDisp  func()
}

// startNode opens the store as replica id on urls (three replicas of
// everything, lease 2s, 12 partitions), runs it and its delivery to rcv.
func startNode(t *testing.T, urls, id string, rcv *receiver) *relayNode {
	t.Helper()
	st, nc := openOpts(t, urls, jsstore.Options{Name: "relay", Replicas: 3, Lease: 2 * time.Second, Partitions: 12, ReplicaID: id})
	wh, err := sink.NewWebhook(sink.WebhookConfig{Name: "hook", URL: rcv.srv.URL, Secrets: []string{"whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
	require.NoError(t, err)
	n := &relayNode{id: id, st: st, nc: nc, hook: &killable{Sink: wh, id: id}}
	n.stopStore = background(t, id+": store Run", st.Run)
	d := New(Config{
		Dispatcher: sink.DispatcherConfig{Sink: n.hook, MaxInFlight: 96,
			Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Str("r", id).Logger()},
		Assignment: st,
		Outbox:     func(p int) sink.Outbox { return st.Partition(p) },
		Changes:    st.Changes(),
	})
	n.stopDisp = background(t, id+": delivery Run", d.Run)
	return n
}

// leave stops n as SIGTERM does: its delivery drains and stops, then its
// store releases what it holds.
func (n *relayNode) leave() {
	n.stopDisp()
	n.stopStore()
	n.st.Close()
	n.nc.Close()
}

// kill stops n as kill -9 does: it sends nothing more and its connection
// drops; nothing of it is stopped or released.
func (n *relayNode) kill() {
	n.hook.dead.Store(true)
	n.nc.Close()
}

// feed ingests a round of tasks on whichever node leads, each round adding
// one log to each of nTasks tasks, until stop is closed; it returns the
// rounds stored.
func feed(t *testing.T, nodes func() []*relayNode, nTasks int, stop <-chan struct{}) (rounds func() int) {
	var done atomic.Int64
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(750 * time.Millisecond)
		defer tick.Stop()
		for r := 1; ; {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			var tasks []diff.Task
			for i := range nTasks {
				var one []diff.Task
				if err := json.Unmarshal(difftest.TasksJSON(int64(i+1), 1, r, int64(i+1)*100000), &one); err != nil {
					t.Errorf("tasks: %v", err)
					return
				}
				tasks = append(tasks, one...)
			}
			for _, n := range nodes() {
				if !n.st.IsLeader() {
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := n.st.Ingest(ctx, tasks, time.UTC, true)
				cancel()
				if err == nil {
					done.Store(int64(r))
					r++
				}
				break
			}
		}
	}()
	return func() int { <-finished; return int(done.Load()) }
}

// handoffFigures are what the receiver got, against the store's events.
type handoffFigures struct {
	events, requests, duplicates, differing, lost, outOfOrder int
}

// figures compares what rcv got with every event stored (read on st).
func figures(t *testing.T, st *jsstore.Store, rcv *receiver) handoffFigures {
	t.Helper()
	var evs []diff.Event
	for p := range 12 {
		part, err := st.Partition(p).Read(context.Background(), 0, 1<<20)
		require.NoError(t, err)
		evs = append(evs, part...)
	}
	slices.SortFunc(evs, func(a, b diff.Event) int { return int(a.Offset) - int(b.Offset) })
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	f := handoffFigures{events: len(evs)}
	lastFirst := map[int64]int{} // task -> arrival of its last event's first request
	for _, ev := range evs {
		bodies := rcv.got[ev.ID]
		if len(bodies) == 0 {
			f.lost++
			continue
		}
		f.requests += len(bodies)
		if len(bodies) > 1 && f.duplicates < 5 {
			sent.Lock()
			t.Logf("dup %s off %d: %v", ev.ID, ev.Offset, sent.m[ev.ID])
			sent.Unlock()
		}
		f.duplicates += len(bodies) - 1
		for _, b := range bodies[1:] {
			if string(b) != string(bodies[0]) {
				f.differing++
			}
		}
		if at := rcv.first[ev.ID]; at < lastFirst[ev.Data.TaskID] {
			f.outOfOrder++
		} else {
			lastFirst[ev.Data.TaskID] = at
		}
	}
	return f
}

// handoffTasks is how many tasks get a new log every round (750ms): a
// task has one delivery under way at a time, so with 15% of them taking
// 2 s the receiver keeps up.
const handoffTasks = 90

// handoffRun runs three replicas while events flow, and cycles times
// through: one replica goes (by leave, or by kill), another joins in its
// place. It returns the figures once every event reached the receiver.
func handoffRun(t *testing.T, cycles int, kill bool) handoffFigures {
	t0 := time.Now()
	t.Cleanup(func() { t.Logf("cleanup from %s", time.Since(t0).Round(time.Millisecond)) })
	urls := threeNodes(t)
	t.Logf("cluster up after %s", time.Since(t0).Round(time.Millisecond))
	rcv := newReceiver(t, 0.15)
	var mu sync.Mutex
	var live []*relayNode
	for i := range 3 {
		live = append(live, startNode(t, urls, fmt.Sprintf("r%d", i+1), rcv))
	}
	nodes := func() []*relayNode { mu.Lock(); defer mu.Unlock(); return slices.Clone(live) }
	stop := make(chan struct{})
	rounds := feed(t, nodes, handoffTasks, stop)
	time.Sleep(3 * time.Second)
	started := time.Now()
	for c := range cycles {
		mu.Lock()
		victim := live[c%3]
		live = slices.Delete(live, c%3, c%3+1)
		mu.Unlock()
		if kill {
			victim.kill()
		} else {
			victim.leave()
		}
		time.Sleep(1500 * time.Millisecond)
		n := startNode(t, urls, fmt.Sprintf("r%d-%d", c%3+1, c+1), rcv)
		mu.Lock()
		live = slices.Insert(live, c%3, n)
		mu.Unlock()
		time.Sleep(3 * time.Second)
	}
	close(stop)
	r := rounds()
	t.Logf("%d cycles in %s, %d rounds of %d tasks ingested", cycles, time.Since(started).Round(time.Millisecond), r, handoffTasks)
	st := nodes()[0].st
	require.Eventually(t, func() bool {
		head, _ := st.Head()
		return head == uint64(handoffTasks*r)
	}, 20*time.Second, 50*time.Millisecond, "every round stored and read")
	var ids []string
	for p := range 12 {
		evs, err := st.Partition(p).Read(context.Background(), 0, 1<<20)
		require.NoError(t, err)
		for _, ev := range evs {
			ids = append(ids, ev.ID)
		}
	}
	require.Eventually(t, func() bool { return rcv.has(ids) }, 60*time.Second, 100*time.Millisecond, "every event reached the receiver")
	t.Logf("all delivered after %s", time.Since(t0).Round(time.Millisecond))
	time.Sleep(time.Second) // anything still under way
	f := figures(t, st, rcv)
	t.Logf("%d events, %d requests, %d duplicates (%d differing), %d lost, %d out of order",
		f.events, f.requests, f.duplicates, f.differing, f.lost, f.outOfOrder)
	return f
}

// handoffCycles is how many leave/join cycles the handoff tests run: six,
// or two under the race detector.
func handoffCycles(t *testing.T) int {
	if testing.Short() {
		t.Skip("three replicas on a three-node cluster for a minute: skipped with -short")
	}
	if raceEnabled {
		t.Log("race detector: two cycles instead of six")
		return 2
	}
	return 6
}

// TestHandoff_Graceful: replicas leave (as on SIGTERM) and join six times
// while events flow to a receiver that answers 15% of deliveries after
// 2 s: nothing is lost, each task's events first arrive in offset order,
// and nothing arrives twice.
func TestHandoff_Graceful(t *testing.T) {
	f := handoffRun(t, handoffCycles(t), false)
	require.Zero(t, f.lost, "lost")
	require.Zero(t, f.outOfOrder, "first deliveries out of offset order")
	require.Zero(t, f.duplicates, "delivered twice")
}

// TestHandoff_Kill: as TestHandoff_Graceful, but each replica that goes
// is killed (kill -9: its connection drops, it sends nothing more, it
// releases nothing); its partitions move once its membership lapsed.
// Nothing is lost, order holds, and what arrives twice (what was in
// flight, or acknowledged after the killed replica's last cursor write)
// is byte-identical.
func TestHandoff_Kill(t *testing.T) {
	cycles := handoffCycles(t)
	f := handoffRun(t, cycles, true)
	require.Zero(t, f.lost, "lost")
	require.Zero(t, f.outOfOrder, "first deliveries out of offset order")
	require.Zero(t, f.differing, "a duplicate differs from the first delivery")
	t.Logf("%d duplicates after %d kills (%.1f%% of %d events)", f.duplicates, cycles, 100*float64(f.duplicates)/float64(f.events), f.events)
}
