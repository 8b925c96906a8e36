package poller_test

// The simulation harness the Tiered tests share: a settable clock, a
// simulated world, an in-process relay with a store, and the measures the
// simulations report.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/poller/sim"
)

// simClock is a settable clock shared by a simulator and its pollers: a
// simulated cycle takes no real time.
type simClock struct{ ns atomic.Int64 }

func newSimClock(t time.Time) *simClock {
	c := &simClock{}
	c.Set(t)
	return c
}

func (c *simClock) Now() time.Time                  { return time.Unix(0, c.ns.Load()) }
func (c *simClock) Set(t time.Time)                 { c.ns.Store(t.UnixNano()) }
func (c *simClock) Add(d time.Duration)             { c.ns.Add(int64(d)) }
func (c *simClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// inproc is an http.RoundTripper that serves each request with h in the
// calling goroutine: no sockets, no real time. before, when set, sees every
// request first.
type inproc struct {
	h      http.Handler
	before func(r *http.Request)
}

func (tr *inproc) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	if tr.before != nil {
		tr.before(r)
	}
	w := &memWriter{h: make(http.Header), code: http.StatusOK}
	tr.h.ServeHTTP(w, r)
	return &http.Response{
		StatusCode: w.code, Status: http.StatusText(w.code), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: w.h, Body: io.NopCloser(bytes.NewReader(w.buf.Bytes())), ContentLength: int64(w.buf.Len()), Request: r,
	}, nil
}

type memWriter struct {
	h    http.Header
	code int
	buf  bytes.Buffer
}

func (w *memWriter) Header() http.Header         { return w.h }
func (w *memWriter) WriteHeader(code int)        { w.code = code }
func (w *memWriter) Write(p []byte) (int, error) { return w.buf.Write(p) }

// queryKind names what a request asks for, for counting.
func queryKind(r *http.Request) string {
	q := r.URL.Query()
	switch {
	case q.Has("task_id"):
		return "task_id"
	case q.Has("status"):
		return "status"
	case q.Has("end_at"):
		return "range"
	}
	return "open-ended"
}

// world is a simulated API under a simulated clock, and the ground truth of
// when each log was made.
type world struct {
	sim   *sim.Sim
	clock *simClock
	rng   *rand.Rand
	seen  int                 // logs of sim.Logs recorded
	made  map[int64]time.Time // log id → when it was made
	open  map[int64]bool      // log id → made on an open task (or a new one)
	first int                 // logs that existed before the run
}

func newWorld(tb testing.TB, o sim.Options, start time.Time) *world {
	tb.Helper()
	clock := newSimClock(start)
	o.Now = clock.Now
	if o.Location == nil {
		o.Location = shanghai
	}
	w := &world{sim: sim.New(o), clock: clock, rng: rand.New(rand.NewPCG(uint64(o.Seed), 7)),
		made: make(map[int64]time.Time), open: make(map[int64]bool)}
	w.record()
	w.first = w.seen
	return w
}

// record notes the logs made since the last call as made now.
func (w *world) record() {
	now := w.clock.Now()
	for _, l := range w.sim.LogsFrom(w.seen) {
		w.made[l.LogID] = now
		w.open[l.LogID] = l.PreStatus == diff.StatusNotStarted || l.PreStatus == diff.StatusInProgress
		w.seen++
	}
}

// change applies n random changes and finished comments finished-task
// comments at random times in (from, to), in time order.
func (w *world) change(from, to time.Time, n, finished int) {
	span := to.Sub(from)
	if span <= 0 {
		return
	}
	type ev struct {
		at       time.Duration
		finished bool
	}
	evs := make([]ev, 0, n+finished)
	for i := range n + finished {
		evs = append(evs, ev{at: time.Duration(1 + w.rng.Int64N(int64(span)-1)), finished: i >= n})
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].at < evs[j].at })
	for _, e := range evs {
		w.clock.Set(from.Add(e.at))
		if e.finished {
			w.sim.StepFinished(1)
		} else {
			w.sim.Step(1)
		}
		w.record()
	}
}

// relay is one poller over a world, recording when it first handed on
// each log.
type relay struct {
	name     string
	w        *world
	p        *poller.Poller
	tiered   *poller.Tiered
	found    map[int64]time.Time // log id → first handed on
	requests atomic.Int64        // requests sent
	kinds    map[string]int      // requests by query kind
	perCycle []int               // requests per cycle
	// during, when set, is called before each request of a cycle, with the
	// request's number in the cycle.
	during func(n int)
	n      int
	// srv serves the requests; default the world's simulator.
	srv http.Handler
	// seen, when set, is called with each request's query.
	seen func(q url.Values)
	// handle, when set, sees each page first; its error fails the page.
	handle func(ctx context.Context, tasks []diff.Task) error
}

// relayConfig is the poller configuration of the simulations: rate limit
// off (requests are counted, not paced), the simulated clock.
func relayConfig(w *world, tr http.RoundTripper) poller.Config {
	return poller.Config{
		BaseURL:    "http://incsapp.invalid",
		Token:      token,
		Location:   shanghai,
		RateLimit:  -1,
		Timeout:    time.Minute,
		RetryWait:  time.Millisecond,
		HTTPClient: &http.Client{Transport: tr},
		Now:        w.clock.Now,
		Interval:   10 * time.Second,
		Lookback:   720 * time.Hour,
		FullSweep:  10 * time.Minute,
	}
}

// newRelay makes a relay over w; tiered selects the strategy. mod may
// change the configuration.
func newRelay(tb testing.TB, name string, w *world, tiered bool, state poller.StateStore, mod func(*poller.Config)) *relay {
	tb.Helper()
	r := &relay{name: name, w: w, found: make(map[int64]time.Time), kinds: make(map[string]int)}
	r.srv = w.sim
	tr := &inproc{h: http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) { r.srv.ServeHTTP(rw, req) }), before: func(req *http.Request) {
		r.requests.Add(1)
		r.kinds[queryKind(req)]++
		if r.seen != nil {
			r.seen(req.URL.Query())
		}
		w.clock.Add(2 * time.Millisecond) // a request takes some time
		if r.during != nil {
			r.during(r.n)
		}
		r.n++
	}}
	cfg := relayConfig(w, tr)
	if mod != nil {
		mod(&cfg)
	}
	log := testLog(tb)
	r.p = poller.New(poller.NewClient(cfg, log), cfg, r, log)
	if tiered {
		r.tiered = poller.NewTiered(cfg, state, log)
		r.p.Strategy = r.tiered
	}
	return r
}

// testLog logs warnings and errors to the test's output.
func testLog(tb testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(tb)).Level(zerolog.WarnLevel)
}

// memState is an in-memory StateStore.
type memState map[string][]byte

func (m memState) Meta(key string) ([]byte, error) {
	v, ok := m[key]
	if !ok {
		return nil, fmt.Errorf("meta %q: not found", key)
	}
	return slices.Clone(v), nil
}

func (m memState) SetMeta(key string, v []byte) error {
	m[key] = slices.Clone(v)
	return nil
}

func (r *relay) HandlePage(ctx context.Context, tasks []diff.Task) error {
	if r.handle != nil {
		if err := r.handle(ctx, tasks); err != nil {
			return err
		}
	}
	now := r.w.clock.Now()
	for i := range tasks {
		for _, l := range tasks[i].Logs {
			if _, ok := r.found[l.ID]; !ok {
				r.found[l.ID] = now
			}
		}
	}
	return nil
}

func (r *relay) SweepDone(context.Context, poller.SweepStats) error { return nil }

// cycle runs one poll cycle now and records its requests.
func (r *relay) cycle(tb testing.TB) {
	tb.Helper()
	before := r.requests.Load()
	r.n = 0
	require.NoError(tb, r.p.RunOnce(context.Background()), r.name)
	r.perCycle = append(r.perCycle, int(r.requests.Load()-before))
}

// latencies returns the detection latencies of the logs made on open and
// on finished tasks from the run's start until before, and the logs made
// before it that were never found.
func (r *relay) latencies(before time.Time) (open, finished []time.Duration, missed []int64) {
	for id, at := range r.w.made {
		if !at.Before(before) {
			continue
		}
		f, ok := r.found[id]
		switch {
		case !ok:
			missed = append(missed, id)
		case id <= int64(r.w.first):
			// A log of the initial world: found by the first sweep.
		case r.w.open[id]:
			open = append(open, f.Sub(at))
		default:
			finished = append(finished, f.Sub(at))
		}
	}
	slices.Sort(open)
	slices.Sort(finished)
	slices.Sort(missed)
	return open, finished, missed
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(int(q*float64(len(d))), len(d)-1)]
}

func mean(xs []int) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := 0
	for _, x := range xs {
		s += x
	}
	return float64(s) / float64(len(xs))
}

// kindsString formats request counts by kind in a stable order.
func kindsString(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%d ", k, m[k])
	}
	return strings.TrimSpace(b.String())
}
