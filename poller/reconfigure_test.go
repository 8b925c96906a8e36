package poller_test

// Tests of changing the settings while the poller runs (Reconfigure on a
// Client, a Poller and a Tiered strategy): what changes when, and that
// what is held in memory is kept.

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/poller/sim"
)

// newToken is the token a reconfigured client sends; as unusual as token.
const newToken = "rotated-token-5c1e9d04b8a3f"

// TestClient_Reconfigure checks that the next request sends the new token
// and page size, against a simulator that accepts the new token only, and
// that neither token is logged.
func TestClient_Reconfigure(t *testing.T) {
	s := sim.New(sim.Options{Tasks: 30, Seed: 1, Token: newToken, Location: shanghai, Now: func() time.Time { return fixedNow }})
	var (
		mu    sync.Mutex
		auths []string
		sizes []string
	)
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths = append(auths, r.Header.Get("Authorization"))
		sizes = append(sizes, r.URL.Query().Get("page_size"))
		mu.Unlock()
		s.ServeHTTP(w, r)
	}))
	var logs bytes.Buffer // written by the calls below, read once they returned
	cfg := testConfig(srv)
	c := poller.NewClient(cfg, zerolog.New(&logs).Level(zerolog.DebugLevel))

	_, err := c.List(context.Background(), poller.Query{})
	var ae *poller.APIError
	require.ErrorAs(t, err, &ae, "the simulator wants the new token")
	assert.Equal(t, poller.KindUnauthorized, ae.Kind)

	cfg.Token, cfg.PageSize = newToken, 7
	cfg.BaseURL = "http://ignored.invalid" // cannot change: ignored
	c.Reconfigure(cfg)
	p, err := c.List(context.Background(), poller.Query{})
	require.NoError(t, err)
	assert.Len(t, p.Tasks, 7)
	assert.Equal(t, 30, p.Total)

	st, err := c.Sweep(context.Background(), poller.Query{}, func(context.Context, *poller.Page) error { return nil })
	require.NoError(t, err)
	assert.Equal(t, 5, st.Pages, "30 tasks in pages of 7")
	assert.Equal(t, 7, st.PageSize)

	mu.Lock()
	assert.Equal(t, "Bearer "+token, auths[0])
	assert.Equal(t, "100", sizes[0])
	for i := 1; i < len(auths); i++ {
		assert.Equal(t, "Bearer "+newToken, auths[i], "request %d", i)
		assert.Equal(t, "7", sizes[i], "request %d", i)
	}
	mu.Unlock()
	assert.Contains(t, logs.String(), "client reconfigured")
	assert.NotContains(t, logs.String(), token)
	assert.NotContains(t, logs.String(), newToken)
}

// TestClient_ReconfigureInFlight checks that a request in flight keeps
// the token it was sent with and the next one sends the new token, with
// requests running while the client is reconfigured (for -race).
func TestClient_ReconfigureInFlight(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var (
		mu    sync.Mutex
		auths []string
		first atomic.Bool
	)
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths = append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
		if first.CompareAndSwap(false, true) {
			entered <- struct{}{}
			<-release
		}
		fmt.Fprint(w, `{"status":"success","code":200,"message":"","data":{"total":0,"data":[]},"error":{}}`)
	}))
	c := newClient(t, srv)
	errc := make(chan error, 1)
	go func() {
		_, err := c.List(context.Background(), poller.Query{})
		errc <- err
	}()
	<-entered
	cfg := testConfig(srv)
	cfg.Token = newToken
	c.Reconfigure(cfg)
	close(release)
	require.NoError(t, <-errc)

	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if i%2 == 0 {
				c.Reconfigure(cfg)
				return
			}
			_, err := c.List(context.Background(), poller.Query{})
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, auths, 5)
	assert.Equal(t, "Bearer "+token, auths[0], "the request in flight keeps its token")
	for _, a := range auths[1:] {
		assert.Equal(t, "Bearer "+newToken, a)
	}
}

// TestClient_ReconfigureRateLimit checks the limiter after raising,
// lowering, lifting and defaulting the rate limit, and that a lifted limit
// lets requests through at once.
func TestClient_ReconfigureRateLimit(t *testing.T) {
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"status":"success","code":200,"message":"","data":{"total":0,"data":[]},"error":{}}`)
	}))
	cfg := testConfig(srv)
	cfg.RateLimit = 20
	c := poller.NewClient(cfg, zerolog.Nop())
	limit, burst := c.Limiter()
	assert.Equal(t, rate.Limit(20), limit)
	assert.Equal(t, 1, burst)

	for _, tc := range []struct {
		set  float64
		want rate.Limit
	}{
		{50, 50},                     // raised
		{0.5, 0.5},                   // lowered
		{-1, rate.Inf},               // no limit
		{math.Inf(1), rate.Inf},      // no limit
		{0, poller.DefaultRateLimit}, // the default
		{2, 2},
	} {
		cfg.RateLimit = tc.set
		c.Reconfigure(cfg)
		limit, burst := c.Limiter()
		assert.Equal(t, tc.want, limit, "RateLimit %v", tc.set)
		assert.Equal(t, 1, burst, "RateLimit %v", tc.set)
	}

	// At 0.01/s a second request would wait 100s; lifted, 20 go at once.
	cfg.RateLimit = 0.01
	c.Reconfigure(cfg)
	_, err := c.List(context.Background(), poller.Query{})
	require.NoError(t, err)
	cfg.RateLimit = -1
	c.Reconfigure(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 20 {
		_, err := c.List(ctx, poller.Query{})
		require.NoError(t, err)
	}
}

// TestPoller_ReconfigureInterval checks that a shorter interval starts the
// next cycle at once and makes cycles come faster, and a longer one
// slows them down, while Run runs (with a Tiered strategy, reconfigured
// concurrently, for -race).
func TestPoller_ReconfigureInterval(t *testing.T) {
	_, srv := newSimServer(t, sim.Options{Tasks: 50, Seed: 1})
	h := &handler{}
	var cfg poller.Config
	p := newPoller(t, srv.Config.Handler, h, func(c *poller.Config) {
		c.Interval = time.Hour
		cfg = *c
	})
	tiers := poller.NewTiered(cfg, nil, zerolog.Nop())
	p.Strategy = tiers
	runPoller(t, p)
	require.Eventually(t, func() bool { return p.Status().Cycles == 1 }, 5*time.Second, time.Millisecond, "first cycle at once")
	assert.Never(t, func() bool { return p.Status().Cycles > 1 }, 50*time.Millisecond, 5*time.Millisecond)

	cfg.Interval = 5 * time.Millisecond
	p.Reconfigure(cfg)
	require.Eventually(t, func() bool { return p.Status().Cycles >= 10 }, 20*time.Second, time.Millisecond,
		"cycles every 5ms after the reconfigure")
	st := p.Status()
	assert.True(t, st.Tiers.Ready)
	assert.Zero(t, st.ConsecutiveFailures)

	cfg.Interval = time.Hour
	p.Reconfigure(cfg)
	n := p.Status().Cycles
	// The cycle under way, if any, ends; none follows within the hour.
	assert.Never(t, func() bool { return p.Status().Cycles > n+1 }, 200*time.Millisecond, 5*time.Millisecond)
	m := p.Status().Cycles // a new variable: Never's last check may still read n
	p.Trigger()
	require.Eventually(t, func() bool { return p.Status().Cycles > m }, 5*time.Second, time.Millisecond, "Trigger still works")
}

// TestPoller_ReconfigureLookback checks that the default Lookback
// strategy sweeps the reconfigured window from the next cycle on.
func TestPoller_ReconfigureLookback(t *testing.T) {
	queries := make(chan url.Values, 10)
	s := sim.New(sim.Options{Tasks: 5, Seed: 1, Token: token})
	srv := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queries <- r.URL.Query()
		s.ServeHTTP(w, r)
	})
	var cfg poller.Config
	p := newPoller(t, srv, &handler{}, func(c *poller.Config) {
		c.Lookback = 48 * time.Hour
		c.Now = func() time.Time { return time.Date(2026, 4, 8, 1, 0, 0, 0, time.UTC) }
		c.Interval = time.Hour
		cfg = *c
	})
	require.NoError(t, p.RunOnce(context.Background()))
	assert.Equal(t, "2026-04-06 09:00:00", (<-queries).Get("start_at"))
	cfg.Lookback = 24 * time.Hour
	p.Reconfigure(cfg)
	require.NoError(t, p.RunOnce(context.Background()))
	assert.Equal(t, "2026-04-07 09:00:00", (<-queries).Get("start_at"))
	assert.Equal(t, 2, p.Status().Cycles)
}

// reconfigRelay is a tiered relay over a world of tasks, past its first
// full sweep, and the configuration it was made with.
func reconfigRelay(t *testing.T, tasks int, mod func(*poller.Config)) (*relay, poller.Config) {
	t.Helper()
	w := newWorld(t, sim.Options{Tasks: tasks, Seed: 11}, fixedNow)
	var cfg poller.Config
	r := newRelay(t, "reconfigure", w, true, nil, func(c *poller.Config) {
		mod(c)
		cfg = *c
	})
	return r, cfg
}

// TestTiered_ReconfigureBudget raises the budget of a world larger than
// the old budget reads: the cycles after the next one spend more, the
// stats show the new budget once that cycle ended, and the tier state is
// kept.
func TestTiered_ReconfigureBudget(t *testing.T) {
	r, cfg := reconfigRelay(t, 3000, func(c *poller.Config) { c.Budget = 6 })
	runCycles(t, r, fixedNow, 0, 8, func(_ int, from, to time.Time) { r.w.change(from, to, 5, 2) })
	before := r.p.Status().Tiers
	require.True(t, before.Ready)
	require.Equal(t, 6, before.Budget)
	low := r.perCycle[3:]

	cfg.Budget = 24
	r.p.Reconfigure(cfg)
	after := r.p.Status().Tiers
	assert.Equal(t, before, after, "the reconfigure itself changes no state")

	// A cycle with no change in the world: same tiers, same tasks.
	runCycles(t, r, fixedNow, 8, 1, nil)
	st := r.p.Status().Tiers
	assert.True(t, st.Ready, "no new full sweep")
	assert.Equal(t, before.Slices, st.Slices)
	assert.Equal(t, before.Tasks, st.Tasks)
	assert.Equal(t, before.Open, st.Open)
	assert.Equal(t, 24, st.Budget)

	runCycles(t, r, fixedNow, 9, 8, func(_ int, from, to time.Time) { r.w.change(from, to, 5, 2) })
	high := r.perCycle[len(r.perCycle)-6:]
	t.Logf("requests per cycle: budget 6 %v, budget 24 %v", low, high)
	assert.Greater(t, mean(high), mean(low)+6, "a larger budget reads more finished bands")
	assert.LessOrEqual(t, slicesMax(high), 24+24/5, "within the new budget")
	assert.False(t, r.p.Status().Tiers.BudgetShort)

	// No budget, under a rate limit whose default budget would be 8,000.
	cfg.Budget, cfg.RateLimit, cfg.Retries = -1, 1000, -1
	r.p.Reconfigure(cfg)
	runCycles(t, r, fixedNow, 17, 1, nil)
	assert.Zero(t, r.p.Status().Tiers.Budget)
}

// TestTiered_ReconfigureMidCycle checks that settings given while a cycle
// runs wait for the next cycle.
func TestTiered_ReconfigureMidCycle(t *testing.T) {
	r, cfg := reconfigRelay(t, 600, func(c *poller.Config) { c.Budget = 10 })
	runCycles(t, r, fixedNow, 0, 2, nil)
	next := cfg
	next.Budget, next.FullSweep = 30, 2*time.Minute
	var once sync.Once
	r.handle = func(context.Context, []diff.Task) error {
		once.Do(func() { r.p.Reconfigure(next) })
		return nil
	}
	r.w.sim.Step(20) // changed tasks make pages to handle
	runCycles(t, r, fixedNow, 2, 1, nil)
	st := r.p.Status().Tiers
	assert.Equal(t, 10, st.Budget, "the cycle under way keeps its settings")
	assert.Equal(t, 10*time.Minute+interval, st.FullSweepLimit)
	runCycles(t, r, fixedNow, 3, 1, nil)
	st = r.p.Status().Tiers
	assert.Equal(t, 30, st.Budget)
	assert.Equal(t, 2*time.Minute+interval, st.FullSweepLimit)
}

// TestTiered_ReconfigureShorterSweeps shortens FullSweep and OpenSweep
// with no budget: the next cycle reads what the new ceilings made due,
// every cycle after keeps them, and the reads spread out again instead of
// coming due all at once every FullSweep.
func TestTiered_ReconfigureShorterSweeps(t *testing.T) {
	r, cfg := reconfigRelay(t, 3000, func(c *poller.Config) {
		c.Budget = -1
		c.FullSweep = 20 * time.Minute
		c.OpenSweep = 6 * interval
	})
	runCycles(t, r, fixedNow, 0, 30, func(_ int, from, to time.Time) { r.w.change(from, to, 5, 2) })
	before := r.p.Status()
	require.True(t, before.Tiers.Ready)
	require.Greater(t, before.FinishedAge, 3*time.Minute, "bands read longer ago than the new FullSweep")

	const fullSweep = 2 * time.Minute
	cfg.FullSweep, cfg.OpenSweep = fullSweep, interval
	r.p.Reconfigure(cfg)
	k := 30
	runCycles(t, r, fixedNow, k, 1, func(_ int, from, to time.Time) { r.w.change(from, to, 5, 2) })
	k++
	catchUp := r.perCycle[len(r.perCycle)-1]
	st := r.p.Status()
	assert.LessOrEqual(t, st.FinishedAge, fullSweep, "every band read longer ago is read by the cycle after the reconfigure")
	assert.False(t, st.FullSweepMissed)
	assert.LessOrEqual(t, st.OpenAge, interval)
	assert.Equal(t, fullSweep+interval, st.Tiers.FullSweepLimit)
	assert.Equal(t, before.Tiers.Slices, st.Tiers.Slices)
	needAfter := st.Tiers.CeilingNeed

	cycles := 3 * int(fullSweep/interval)
	var later []int
	for range cycles {
		runCycles(t, r, fixedNow, k, 1, func(_ int, from, to time.Time) { r.w.change(from, to, 5, 2) })
		k++
		later = append(later, r.perCycle[len(r.perCycle)-1])
		st := r.p.Status()
		assert.LessOrEqual(t, st.FinishedAge, fullSweep+interval, "cycle %d", k)
		assert.LessOrEqual(t, st.OpenAge, interval, "cycle %d", k)
		assert.False(t, st.FullSweepMissed, "cycle %d", k)
	}
	t.Logf("requests: before %v; catching up %d; after %v; ceiling need %.1f, after the reconfigure %.1f, at the end %.1f",
		r.perCycle[20:30], catchUp, later, before.Tiers.CeilingNeed, needAfter, r.p.Status().Tiers.CeilingNeed)
	assert.Greater(t, needAfter, 1.5*before.Tiers.CeilingNeed, "the ceilings' cost corrected for the new ceilings")
	assert.InDelta(t, r.p.Status().Tiers.CeilingNeed, needAfter, 0.5*needAfter, "and close to what they cost")
	assert.Less(t, slicesMax(later[len(later)-2*int(fullSweep/interval):]), catchUp*3/4,
		"the finished tier's reads spread out over the cycles")
	_, _, missed := r.latencies(r.w.clock.Now().Add(-fullSweep - interval))
	assert.Empty(t, missed)
}

// TestTiered_ReconfigureLookback shortens the lookback window: the tasks
// that fall out of it are forgotten at the next cycle, the others kept.
func TestTiered_ReconfigureLookback(t *testing.T) {
	r, cfg := reconfigRelay(t, 1000, func(*poller.Config) {})
	runCycles(t, r, fixedNow, 0, 2, nil)
	before := r.p.Status().Tiers
	cfg.Lookback = 240 * time.Hour
	r.p.Reconfigure(cfg)
	runCycles(t, r, fixedNow, 2, 1, nil)
	st := r.p.Status().Tiers
	assert.True(t, st.Ready)
	assert.Less(t, st.Tasks, before.Tasks, "tasks older than 10 days are forgotten")
	assert.Positive(t, st.Tasks)
	t.Logf("tasks %d → %d, slices %d → %d", before.Tasks, st.Tasks, before.Slices, st.Slices)
}
