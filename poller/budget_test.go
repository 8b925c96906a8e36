package poller_test

// Tests of Tiered's budget (tiers_budget.go): simulated worlds read within
// Config.Budget, the ceilings kept when it falls short, and the head scan's
// page cap.

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/poller/sim"
)

// budgetRun drives r over its world for cycles cycles of interval, with
// perInterval changes and finishedPer comments on finished tasks between
// two cycles, one more change every 25th request while it sweeps, then
// drain cycles without changes. It returns the stats of the steady cycles
// (from the third on, while the world changes) and the detection
// latencies.
func budgetRun(t *testing.T, r *relay, interval time.Duration, cycles, drain, perInterval, finishedPer int) (steady []poller.TierStats, open, fin []time.Duration) {
	t.Helper()
	w := r.w
	start := w.clock.Now()
	r.during = func(n int) {
		if n%25 == 24 {
			w.sim.Step(1)
			w.record()
		}
	}
	for k := range cycles + drain {
		if k > 0 {
			next := start.Add(time.Duration(k) * interval)
			require.True(t, w.clock.Now().Before(next), "cycle %d overran the interval", k)
			if k < cycles {
				w.change(w.clock.Now(), next, perInterval, finishedPer)
			} else {
				r.during = nil
			}
			w.clock.Set(next)
		}
		r.cycle(t)
		if k >= 2 && k < cycles {
			steady = append(steady, r.p.Status().Tiers)
		}
	}
	changesEnd := start.Add(time.Duration(cycles) * interval)
	open, fin, missed := r.latencies(changesEnd)
	assert.Empty(t, missed, "%s missed changes", r.name)
	require.NotEmpty(t, open)
	require.NotEmpty(t, fin)
	return steady, open, fin
}

// tierMean is the mean of f over the cycles' stats.
func tierMean(sts []poller.TierStats, f func(poller.TierStats) float64) float64 {
	sum := 0.0
	for _, st := range sts {
		sum += f(st)
	}
	return sum / float64(max(len(sts), 1))
}

func requestsOf(sts []poller.TierStats) []int {
	out := make([]int, len(sts))
	for i, st := range sts {
		out[i] = st.Requests
	}
	return out
}

// TestSimulation_SmallWorldDefaults is the new user's setup: 3,000 tasks
// listed newest id first, changing all the time, and nothing about polling
// set but the interval and the rate limit. The default budget (80 % of what
// the rate limit allows in an interval) pays for reading the whole world
// every cycle or two, so a comment on a finished task is found as fast as a
// change to an open one. The simulated clock does not run the rate
// limiter's real one: the limit is checked on the requests of each cycle,
// which spans one interval.
func TestSimulation_SmallWorldDefaults(t *testing.T) {
	for _, tc := range []struct {
		name      string
		interval  time.Duration
		rateLimit float64
		budget    int // the default the rate limit gives
		p99       time.Duration
	}{
		{"50/s every 1s", time.Second, 50, 40, 4 * time.Second},
		{"5/s every 10s", 10 * time.Second, 5, 40, 20 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			budget := poller.DefaultBudget(tc.rateLimit, tc.interval)
			require.Equal(t, tc.budget, budget)
			w := newWorld(t, sim.Options{Tasks: 3000, Seed: 11}, fixedNow)
			r := newRelay(t, "defaults", w, true, nil, func(c *poller.Config) {
				c.Interval, c.FullSweep, c.OpenSweep, c.Budget = tc.interval, 0, 0, budget
			})
			cycles := 60
			if raceEnabled || testing.Short() {
				cycles = 30
			}
			sts, open, fin := budgetRun(t, r, tc.interval, cycles, 6, 10, 5)
			steady := requestsOf(sts)
			st := r.p.Status()
			t.Logf("3,000 tasks, %s, budget %d: requests/cycle mean %.1f max %d; open p50 %s p99 %s; finished p50 %s p99 %s (%d + %d logs); by kind: %s",
				tc.name, budget, mean(steady), slicesMax(steady), iv(quantile(open, .5)), iv(quantile(open, .99)),
				iv(quantile(fin, .5)), iv(quantile(fin, .99)), len(open), len(fin), kindsString(r.kinds))
			limit := int(tc.rateLimit * tc.interval.Seconds())
			assert.LessOrEqual(t, slicesMax(steady), limit, "requests per interval within the rate limit")
			assert.LessOrEqual(t, slicesMax(steady), budget+budget/10, "within the budget")
			assert.LessOrEqual(t, quantile(open, .99), tc.p99, "open p99")
			assert.LessOrEqual(t, quantile(fin, .99), tc.p99, "finished p99")
			assert.False(t, st.Tiers.BudgetShort)
			assert.LessOrEqual(t, st.FinishedAge, tc.p99)
		})
	}
}

// TestSimulation_Budget is the large world with a budget of a tenth of a
// full sweep (100 requests per 10 s cycle at 100,000 tasks), listed by id
// and, in a second world, by updated_at. By id, the cycle spends the
// budget within 10 %: the ceilings first, the rest on finished bands, so
// finished tasks are read as often as the spare requests pay for. By
// updated_at the head scan finds every change within a cycle or two, and
// the spare budget is not spent.
//
// The budget rows need the 100,000-task world: under the race detector
// they are skipped; .ci/run runs them without it.
//
//	go test ./poller -run TestSimulation_Budget -v
func TestSimulation_Budget(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("100,000 tasks: run without -race and -short (.ci/run does)")
	}
	const (
		tasks     = 100_000
		interval  = 10 * time.Second
		fullSweep = 10 * time.Minute
		budget    = tasks / 100 / 10 // a tenth of a full sweep
		cycles    = 60
	)
	for _, tc := range []struct {
		name   string
		order  sim.Order
		budget int
	}{{"id_desc", sim.IDDesc, budget}, {"updated_desc", sim.UpdatedDesc, budget}, {"id_desc short", sim.IDDesc, 40}} {
		t.Run(tc.name, func(t *testing.T) {
			budget := tc.budget
			w := newWorld(t, sim.Options{Tasks: tasks, Seed: 42, OpenFraction: 0.1, Order: tc.order}, fixedNow)
			state := memState{}
			var pcfg poller.Config
			r := newRelay(t, tc.name, w, true, state, func(c *poller.Config) { c.Budget = budget; pcfg = *c })
			sts, open, fin := budgetRun(t, r, interval, cycles, int(fullSweep/interval)+2, tasks/2000, tasks/10000)
			steady := requestsOf(sts)
			st := r.p.Status()
			ordered := tierMean(sts, func(s poller.TierStats) float64 { return map[bool]float64{true: 1}[s.Ordered] })
			ceilings := tierMean(sts, func(s poller.TierStats) float64 { return float64(s.Requests - s.BudgetRequests) })
			// A full read of a band reads its open tasks too: the
			// finished tier costs a page per 100 tasks of the window.
			pages := float64(st.Tiers.Tasks) / 100
			spare := float64(budget) - ceilings
			t.Logf("%s: budget %d, requests/cycle mean %.1f (max %d), ceilings %.1f; open p50 %s p99 %s; finished p50 %s p99 %s; head scan ordered in %.0f%% of cycles; by kind %s",
				tc.name, budget, mean(steady), slicesMax(steady), ceilings, iv(quantile(open, .5)), iv(quantile(open, .99)),
				iv(quantile(fin, .5)), iv(quantile(fin, .99)), 100*ordered, kindsString(r.kinds))
			t.Logf("status: open age %s, finished age %s", st.OpenAge, st.FinishedAge)
			assert.LessOrEqual(t, quantile(open, .99), 2*interval, "open p99")
			assert.LessOrEqual(t, st.FinishedAge, fullSweep+interval, "the full-sweep ceiling holds")
			if tc.order == sim.UpdatedDesc {
				assert.Greater(t, ordered, 0.8, "the head scan saw the order")
				assert.LessOrEqual(t, quantile(fin, .99), 2*interval, "finished p99 through the head scan")
				assert.Less(t, mean(steady), float64(budget), "the order saves the budget")
				return
			}
			assert.Zero(t, ordered, "an id order is never taken for updated_at")
			if budget < 60 {
				// The default budget at rate_limit 5: the ceilings need more.
				// They are kept, and the shortfall is reported.
				assert.True(t, st.Tiers.BudgetShort, "budget below what the ceilings need is reported")
				est, ok := poller.EstimateCeilings(pcfg, state) // what check-config says
				require.True(t, ok)
				t.Logf("check-config's estimate from the saved state: %.1f requests per cycle; measured %.1f", est, ceilings)
				assert.InEpsilon(t, ceilings, est, 0.25, "the estimate is near what the ceilings cost")
				assert.False(t, st.FullSweepMissed)
				assert.LessOrEqual(t, quantile(fin, .99), fullSweep, "finished p99 within the full_sweep ceiling")
				return
			}
			assert.InDelta(t, float64(budget), mean(steady), 0.1*float64(budget), "requests per cycle within 10 %% of the budget")
			require.Greater(t, spare, 0.0)
			paid := time.Duration((pages/spare + 1) * float64(interval))
			assert.LessOrEqual(t, quantile(fin, .99), paid, "finished p99 within what the budget pays for (%.0f pages / %.1f spare a cycle)", pages, spare)
		})
	}
}

// TestTiered_HeadScanCappedPages: an API that serves 50 tasks a page when
// asked for 100 must not make the head scan take its first page for the
// end of the list, find the order "complete" and skip the budget while
// changes wait on the second page.
func TestTiered_HeadScanCappedPages(t *testing.T) {
	const interval = 10 * time.Second
	w := newWorld(t, sim.Options{Tasks: 3000, Seed: 8, OpenFraction: 0.2, Order: sim.UpdatedDesc}, fixedNow)
	r := newRelay(t, "capped", w, true, nil, func(c *poller.Config) { c.Budget = 20 })
	r.srv = http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		q := req.URL.Query()
		q.Set("page_size", "50")
		req.URL.RawQuery = q.Encode()
		w.sim.ServeHTTP(rw, req)
	})
	sts, open, fin := budgetRun(t, r, interval, 30, 4, 150, 30)
	ordered := tierMean(sts, func(s poller.TierStats) float64 { return map[bool]float64{true: 1}[s.Ordered] })
	t.Logf("capped pages: ordered in %.0f%% of cycles; open p99 %s, finished p99 %s; by kind %s",
		100*ordered, iv(quantile(open, .99)), iv(quantile(fin, .99)), kindsString(r.kinds))
	assert.Greater(t, ordered, 0.5, "the order is still seen")
	assert.LessOrEqual(t, quantile(fin, .99), 2*interval, "finished p99")
}
