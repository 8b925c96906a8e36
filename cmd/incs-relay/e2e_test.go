package main

import (
	"context"
	"encoding/json"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/admin"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller/sim"
	"github.com/incs-relay/incs-relay/sink/consume"
)

const e2eSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// runNATS starts an in-process NATS server with JetStream on a random
// loopback port.
func runNATS(t testing.TB) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: t.TempDir()})
	require.NoError(t, err)
	go s.Start()
	require.True(t, s.ReadyForConnections(10*time.Second))
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// received is what one receiver got, by event id.
type received struct {
	mu     sync.Mutex
	bodies map[string][]byte  // first body per id
	order  map[int64][]uint64 // offsets per task, in arrival order of first receipt
	dups   int                // deliveries of an id already received
	differ []string           // ids received twice with different bodies
	events map[string]diff.Event
}

func newReceived() *received {
	return &received{bodies: map[string][]byte{}, order: map[int64][]uint64{}, events: map[string]diff.Event{}}
}

func (r *received) add(body []byte) {
	var ev diff.Event
	if err := json.Unmarshal(body, &ev); err != nil {
		panic(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if prev, ok := r.bodies[ev.ID]; ok {
		r.dups++
		if string(prev) != string(body) {
			r.differ = append(r.differ, ev.ID)
		}
		return
	}
	r.bodies[ev.ID] = append([]byte(nil), body...)
	r.events[ev.ID] = ev
	r.order[ev.Data.TaskID] = append(r.order[ev.Data.TaskID], ev.Offset)
}

// count returns the distinct events received.
func (r *received) count() int { return r.total() }

// logCount returns the log events received (ids "log-<n>"); the changes
// that leave no log (the simulator edits names and descriptions) and a
// rule's events are not counted.
func (r *received) logCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for id := range r.bodies {
		if isLogEvent(id) {
			n++
		}
	}
	return n
}

// total returns every distinct event received.
func (r *received) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.bodies)
}

// isLogEvent reports whether an event id is a log's ("log-<n>"), not a
// rule's or a change that left no log.
func isLogEvent(id string) bool { return strings.HasPrefix(id, "log-") }

// checkAgainst asserts that r holds exactly one event per log of the
// simulator, with the right type, in per-task offset order.
func (r *received) checkAgainst(t *testing.T, name string, logs []sim.LogRef) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	logEvents := 0
	for id := range r.bodies {
		if isLogEvent(id) {
			logEvents++
		} else {
			assert.True(t, strings.HasPrefix(id, "upd-") || strings.HasPrefix(id, "logupd-") || strings.HasPrefix(id, "del-") || strings.HasPrefix(id, "rule-"),
				"%s: event id %s", name, id)
		}
	}
	assert.Equal(t, len(logs), logEvents, "%s: one event per log", name)
	assert.Empty(t, r.differ, "%s: a redelivery must carry the identical body", name)
	validateBodies(t, maps.Values(r.bodies)) // every event matches its published schema
	for _, l := range logs {
		ev, ok := r.events[diff.EventID(l.LogID)]
		if !assert.True(t, ok, "%s: log %d of task %d never arrived", name, l.LogID, l.TaskID) {
			continue
		}
		assert.Equal(t, diff.TypeOf(l.Type), ev.Type, "%s: type of log %d", name, l.LogID)
		assert.Equal(t, l.TaskID, ev.Data.TaskID)
	}
	for task, offs := range r.order {
		for i := 1; i < len(offs); i++ {
			if !assert.Less(t, offs[i-1], offs[i], "%s: task %d events out of offset order: %v", name, task, offs) {
				break
			}
		}
	}
}

// TestE2E_FaultyAPIAndSinks is the relay end to end: a simulated API that
// fails about 10% of requests in every way the contract lists, while its
// world keeps changing and new tasks push others across pages; embedded
// NATS with JetStream; a webhook receiver that fails about 10% of
// deliveries with 503 or 429. Every log must reach both sinks exactly once
// by id, typed right, in per-task offset order, validly signed.
func TestE2E_FaultyAPIAndSinks(t *testing.T) {
	world := sim.New(sim.Options{
		Token: "tok", Tasks: 150, Seed: 7, Extra: true,
		Faults: sim.Faults{Rate: 0.10, SlowDelay: 1500 * time.Millisecond},
	})
	api := httptest.NewServer(world)
	defer api.Close()

	ns := runNATS(t)

	verifier, err := consume.NewVerifier([]string{e2eSecret})
	require.NoError(t, err)
	hooks := newReceived()
	var rngMu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2))
	var badSig, failed int
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev, err := verifier.Verify(r)
		if err != nil {
			rngMu.Lock()
			badSig++
			rngMu.Unlock()
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		rngMu.Lock()
		roll := rng.Float64()
		if roll < 0.10 {
			failed++
		}
		rngMu.Unlock()
		switch {
		case roll < 0.05:
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		case roll < 0.10:
			w.Header().Set("Retry-After", "0")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		hooks.add(ev.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()

	dir := t.TempDir()
	cfg := config.Default()
	cfg.SetFile("e2e")
	cfg.Upstream.BaseURL = api.URL
	cfg.Upstream.Token = "tok"
	cfg.Upstream.RateLimit = 200
	cfg.Upstream.Timeout = config.Duration(time.Second)
	cfg.Poll.Interval = config.Duration(150 * time.Millisecond)
	cfg.Poll.FullSweep = config.Duration(time.Second)
	cfg.Poll.Initial = "replay"
	cfg.Store.Path = filepath.Join(dir, "relay.db")
	cfg.Admin.Addr = "127.0.0.1:0"
	cfg.Sinks = []config.SinkConfig{
		{Name: "bus", Type: config.SinkNATS, URL: ns.ClientURL(), Subject: "incs.tasks.{task_id}.{event}", JetStream: true,
			Stream: &config.StreamConfig{Name: "INCS", Subjects: []string{"incs.tasks.>"}}},
		{Name: "hooks", Type: config.SinkWebhook, URL: hook.URL + "/incs", Secret: e2eSecret, MaxInFlight: 8,
			Retry: &config.RetryConfig{Initial: config.Duration(5 * time.Millisecond), Max: config.Duration(50 * time.Millisecond), MaxElapsed: config.Duration(time.Minute)}},
	}
	require.NoError(t, cfg.Validate())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := admin.Open(ctx, &cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel), relay.Options{})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	// The world changes while the relay sweeps: ~2.5 s of changes.
	for i := 0; i < 50; i++ {
		world.Step(4)
		time.Sleep(50 * time.Millisecond)
	}
	world.SetFaults(sim.Faults{}) // let the last sweeps through
	logs := world.Logs()

	// Read JetStream's stream: what a durable consumer would get.
	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	bus := newReceived()
	require.Eventually(t, func() bool {
		return hooks.logCount() >= len(logs) && streamCount(t, js) >= uint64(len(logs))
	}, 60*time.Second, 50*time.Millisecond, "all %d logs delivered (webhook %d)", len(logs), hooks.logCount())

	cons, err := js.OrderedConsumer(ctx, "INCS", jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	inStream := streamCount(t, js)
	for range inStream {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		require.NoError(t, err)
		assert.Equal(t, "application/cloudevents+json", m.Headers().Get("Content-Type"))
		var ev diff.Event
		require.NoError(t, json.Unmarshal(m.Data(), &ev))
		assert.Equal(t, ev.ID, m.Headers().Get("Nats-Msg-Id"))
		assert.Equal(t, "incs.tasks."+ev.Subject+"."+diff.ShortType(ev.Type), m.Subject())
		bus.add(m.Data())
	}
	assert.Equal(t, inStream, uint64(bus.total()), "no duplicates in the stream")

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("relay did not stop within 20s of cancel")
	}

	bus.checkAgainst(t, "nats", logs)
	hooks.checkAgainst(t, "webhook", logs)
	assert.Zero(t, badSig, "every webhook delivery validly signed")
	assert.Greater(t, failed, 0, "the receiver did fail some deliveries")
	assert.Greater(t, world.Requests(), int64(10))
	t.Logf("%d logs; webhook failed %d deliveries and saw %d redeliveries; %d API requests", len(logs), failed, hooks.dups, world.Requests())
}

func streamCount(t testing.TB, js jetstream.JetStream) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "INCS")
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}
