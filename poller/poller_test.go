package poller_test

// Tests of the poll loop (poller.go): cycles, handler errors, queries,
// Trigger and faults of the API.

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/poller/sim"
)

// handler records what a Poller hands it; its funcs, when set, decide the
// outcome.
type handler struct {
	mu         sync.Mutex
	pages      int
	tasks      int
	done       []poller.SweepStats
	handlePage func(ctx context.Context, tasks []diff.Task) error
	sweepDone  func(ctx context.Context, s poller.SweepStats) error
}

func (h *handler) HandlePage(ctx context.Context, tasks []diff.Task) error {
	h.mu.Lock()
	h.pages++
	h.tasks += len(tasks)
	f := h.handlePage
	h.mu.Unlock()
	if f != nil {
		return f(ctx, tasks)
	}
	return nil
}

func (h *handler) SweepDone(ctx context.Context, s poller.SweepStats) error {
	h.mu.Lock()
	h.done = append(h.done, s)
	f := h.sweepDone
	h.mu.Unlock()
	if f != nil {
		return f(ctx, s)
	}
	return nil
}

func (h *handler) counts() (pages, done int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pages, len(h.done)
}

// runPoller starts p.Run and returns a function that stops it and reports
// Run's error.
func runPoller(t *testing.T, p *poller.Poller) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(10 * time.Second):
				err = errors.New("Run did not return")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func newPoller(t *testing.T, srv http.Handler, h poller.Handler, mods ...func(*poller.Config)) *poller.Poller {
	t.Helper()
	s := newServer(t, srv)
	cfg := testConfig(s)
	cfg.Interval = 10 * time.Millisecond
	for _, m := range mods {
		m(&cfg)
	}
	log := zerolog.New(zerolog.NewTestWriter(t))
	return poller.New(poller.NewClient(cfg, log), cfg, h, log)
}

// TestPoller_Run checks that the loop goes on through failures and calls
// SweepDone only after complete sweeps.
func TestPoller_Run(t *testing.T) {
	s := sim.New(sim.Options{Tasks: 250, Seed: 1, Token: token, Location: shanghai, Now: func() time.Time { return fixedNow }})
	var failing atomic.Bool
	failing.Store(true)
	srv := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() && r.URL.Query().Get("page") == "2" {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		s.ServeHTTP(w, r)
	})
	h := &handler{}
	p := newPoller(t, srv, h, func(cfg *poller.Config) { cfg.Retries = -1 })
	stop := runPoller(t, p)

	require.Eventually(t, func() bool { return p.Status().ConsecutiveFailures >= 3 }, 5*time.Second, time.Millisecond)
	pages, done := h.counts()
	assert.GreaterOrEqual(t, pages, 3, "page 1 of every failed sweep was handled")
	assert.Zero(t, done, "no SweepDone after a failed sweep")
	st := p.Status()
	assert.Contains(t, st.LastError, "incsapp: GET /external/tasks page 2: HTTP 500")
	assert.NotContains(t, st.LastError, token)
	assert.False(t, st.LastFailure.IsZero())
	assert.True(t, st.LastSuccess.IsZero())
	assert.Equal(t, 2, st.Requests)

	failing.Store(false)
	require.Eventually(t, func() bool { _, done := h.counts(); return done >= 2 }, 5*time.Second, time.Millisecond)
	st = p.Status()
	assert.Zero(t, st.ConsecutiveFailures)
	assert.False(t, st.LastSuccess.IsZero())
	require.NoError(t, stop())

	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ds := range h.done {
		assert.Equal(t, 250, ds.Tasks)
		assert.Equal(t, 3, ds.Pages)
	}
}

func TestPoller_HandlerErrors(t *testing.T) {
	tests := []struct {
		name string
		h    *handler
		want string
	}{
		{name: "HandlePage", want: "incsapp: sweep page 1: disk full",
			h: &handler{handlePage: func(context.Context, []diff.Task) error { return errors.New("disk full") }}},
		{name: "SweepDone", want: "poller: sweep done: disk full",
			h: &handler{sweepDone: func(context.Context, poller.SweepStats) error { return errors.New("disk full") }}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, srv := newSimServer(t, sim.Options{Tasks: 10, Seed: 1})
			p := newPoller(t, srv.Config.Handler, tt.h)
			stop := runPoller(t, p)
			require.Eventually(t, func() bool { return p.Status().ConsecutiveFailures >= 2 }, 5*time.Second, time.Millisecond)
			require.NoError(t, stop())
			assert.Equal(t, tt.want, p.Status().LastError)
		})
	}
}

// TestPoller_Query checks the query of the default strategy: start_at is
// now minus Lookback in the API's zone, and there is no end_at.
func TestPoller_Query(t *testing.T) {
	queries := make(chan url.Values, 10)
	s := sim.New(sim.Options{Tasks: 5, Seed: 1, Token: token})
	srv := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case queries <- r.URL.Query():
		default:
		}
		s.ServeHTTP(w, r)
	})
	h := &handler{}
	p := newPoller(t, srv, h, func(cfg *poller.Config) {
		cfg.Lookback = 48 * time.Hour
		cfg.Now = func() time.Time { return time.Date(2026, 4, 8, 1, 0, 0, 0, time.UTC) }
		cfg.Interval = time.Hour
	})
	stop := runPoller(t, p)
	var q url.Values
	select {
	case q = <-queries:
	case <-time.After(5 * time.Second):
		t.Fatal("no request")
	}
	require.NoError(t, stop())
	assert.Equal(t, url.Values{"start_at": {"2026-04-06 09:00:00"}, "page": {"1"}, "page_size": {"100"}}, q)
}

func TestPoller_Trigger(t *testing.T) {
	_, srv := newSimServer(t, sim.Options{Tasks: 5, Seed: 1})
	h := &handler{}
	p := newPoller(t, srv.Config.Handler, h, func(cfg *poller.Config) { cfg.Interval = time.Hour })
	runPoller(t, p)
	require.Eventually(t, func() bool { return p.Status().Cycles == 1 }, 5*time.Second, time.Millisecond, "first cycle at once")
	assert.Never(t, func() bool { return p.Status().Cycles > 1 }, 50*time.Millisecond, 5*time.Millisecond)
	p.Trigger()
	require.Eventually(t, func() bool { return p.Status().Cycles == 2 }, 5*time.Second, time.Millisecond)
}

// TestPoller_RunWaitsForHandler checks that Run returns only after the page
// handler in flight has returned.
func TestPoller_RunWaitsForHandler(t *testing.T) {
	_, srv := newSimServer(t, sim.Options{Tasks: 5, Seed: 1})
	entered := make(chan struct{})
	release := make(chan struct{})
	h := &handler{handlePage: func(context.Context, []diff.Task) error {
		close(entered)
		<-release
		return nil
	}}
	p := newPoller(t, srv.Config.Handler, h)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	<-entered
	cancel()
	assert.Never(t, func() bool { return len(errc) > 0 }, 50*time.Millisecond, 5*time.Millisecond)
	close(release)
	select {
	case err := <-errc:
		assert.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	_, done := h.counts()
	assert.Zero(t, done)
	assert.Zero(t, p.Status().ConsecutiveFailures, "shutdown is not a failure")
}

// TestPoller_Faults runs the poller against a simulator that fails a third
// of its requests in every way and keeps evolving; the poller must keep
// completing sweeps.
func TestPoller_Faults(t *testing.T) {
	s := sim.New(sim.Options{Tasks: 300, Seed: 8, Token: token, Location: shanghai,
		Faults: sim.Faults{Rate: 0.3, SlowDelay: time.Second,
			Kinds: []sim.FaultKind{sim.Status429, sim.Status500, sim.Status503, sim.ErrorEnvelope, sim.Truncated, sim.NotJSON, sim.Slow}}})
	h := &handler{}
	p := newPoller(t, s, h, func(cfg *poller.Config) {
		cfg.Timeout = 100 * time.Millisecond
		cfg.Retries = 3
		cfg.Now = time.Now
	})
	stop := runPoller(t, p)
	require.Eventually(t, func() bool { _, done := h.counts(); return done >= 3 }, 20*time.Second, 5*time.Millisecond)
	require.NoError(t, stop())
	assert.Positive(t, p.Status().Cycles)
}
