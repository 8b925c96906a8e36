package poller_test

// TestSimulation_TieredVsNaive: the tiered and the naive strategy side by
// side over the same simulated world, and what each costs.

import (
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/poller/sim"
)

// TestSimulation_TieredVsNaive runs the Tiered strategy and the naive full
// sweep (Lookback) against one simulated world of 10 % open tasks, with
// changes arriving at random times on open and finished tasks between
// cycles and, every 25th request of the tiered poller, while it sweeps. It
// measures requests per cycle and how long after a change the change was
// handed on, and checks that no change is missed.
//
// The world has 100,000 tasks; 5,000 under the race detector or with
// -short. The table for the README:
//
//	go test ./poller -run TestSimulation_TieredVsNaive -v
func TestSimulation_TieredVsNaive(t *testing.T) {
	tasks, naiveCycles := 100_000, 3
	switch {
	case testing.Short():
		tasks, naiveCycles = 5_000, 2
	case raceEnabled:
		tasks, naiveCycles = 5_000, 2
	}
	const (
		interval  = 10 * time.Second
		fullSweep = 10 * time.Minute
	)
	perInterval, finishedPer := max(tasks/2000, 5), max(tasks/10000, 2)
	cycles := 2*int(fullSweep/interval) + 10
	drain := int(fullSweep/interval) + 2

	w := newWorld(t, sim.Options{Tasks: tasks, Seed: 42, OpenFraction: 0.1}, fixedNow)
	tiered := newRelay(t, "tiered", w, true, nil, nil)
	naive := newRelay(t, "naive", w, false, nil, nil)
	tiered.during = func(n int) {
		if n%25 == 24 {
			w.sim.Step(1)
			w.record()
		}
	}

	var tieredCPU, naiveCPU time.Duration
	var naiveLast time.Time
	for k := range cycles + drain {
		if k > 0 {
			next := fixedNow.Add(time.Duration(k) * interval)
			require.True(t, w.clock.Now().Before(next), "cycle %d overran the interval", k)
			if k < cycles {
				w.change(w.clock.Now(), next, perInterval, finishedPer)
			}
			w.clock.Set(next)
		}
		cpu := cpuTime()
		tiered.cycle(t)
		if k > 0 && k < cycles {
			tieredCPU += cpuTime() - cpu
		}
		if k < naiveCycles {
			naiveLast = w.clock.Now()
			cpu = cpuTime()
			naive.cycle(t)
			naiveCPU += cpuTime() - cpu
		}
	}
	changesEnd := fixedNow.Add(time.Duration(cycles) * interval)

	tOpen, tFin, tMissed := tiered.latencies(changesEnd)
	nOpen, nFin, nMissed := naive.latencies(naiveLast)
	steady := tiered.perCycle[1:cycles]
	tReq, nReq := mean(steady), mean(naive.perCycle)
	st := tiered.p.Status()

	t.Logf("world: %d tasks, 10%% open, interval %s, full sweep %s; %d changes and %d finished-task comments per interval, 1 more every 25 tiered requests",
		tasks, interval, fullSweep, perInterval, finishedPer)
	t.Logf("%-7s | %-22s | %-19s | %-19s | %s", "", "requests/cycle", "open p50 / p99", "finished p50 / p99", "missed")
	t.Logf("%-7s | %8.1f (max %5d)   | %7s / %-9s | %7s / %-9s | %d of %d",
		"naive", nReq, slicesMax(naive.perCycle), iv(quantile(nOpen, .5)), iv(quantile(nOpen, .99)),
		iv(quantile(nFin, .5)), iv(quantile(nFin, .99)), len(nMissed), len(nOpen)+len(nFin)+len(nMissed))
	t.Logf("%-7s | %8.1f (max %5d)   | %7s / %-9s | %7s / %-9s | %d of %d",
		"tiered", tReq, slicesMax(steady), iv(quantile(tOpen, .5)), iv(quantile(tOpen, .99)),
		iv(quantile(tFin, .5)), iv(quantile(tFin, .99)), len(tMissed), len(tOpen)+len(tFin)+len(tMissed))
	t.Logf("tiered: first cycle (full sweep) %d requests; %.1fx fewer requests per cycle than naive; requests by kind: %s",
		tiered.perCycle[0], nReq/tReq, kindsString(tiered.kinds))
	t.Logf("cpu per cycle, simulator included: naive %s, tiered %s",
		(naiveCPU / time.Duration(naiveCycles)).Round(time.Millisecond), (tieredCPU / time.Duration(cycles-1)).Round(100*time.Microsecond))
	t.Logf("tiered status: max unseen age %s, %+v", st.MaxUnseenAge, st.Tiers)

	assert.Empty(t, tMissed, "tiered missed changes")
	assert.Empty(t, nMissed, "naive missed changes")
	require.NotEmpty(t, tOpen)
	require.NotEmpty(t, tFin)
	assert.LessOrEqual(t, quantile(tOpen, .99), 2*interval, "open p99")
	assert.LessOrEqual(t, quantile(tFin, .99), fullSweep, "finished p99")
	assert.LessOrEqual(t, st.MaxUnseenAge, fullSweep+interval)
	want := 10.0 // at 100,000 tasks; smaller worlds have fewer full pages to save
	if tasks < 100_000 {
		want = 4
	}
	assert.GreaterOrEqual(t, nReq/tReq, want, "request ratio naive/tiered")
}

func iv(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }

func slicesMax(xs []int) int {
	m := 0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// cpuTime returns the CPU time (user and system) the process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
