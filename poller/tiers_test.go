package poller_test

// Tests of the Tiered strategy against the simulator: the first sweep,
// skipping, the tiers and follow-ups, failed cycles, the saved state, the
// lookback window and daylight-saving changes.

import (
	"context"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/poller/sim"
	"github.com/incs-relay/incs-relay/store"
)

const interval = 10 * time.Second

// runCycles runs n cycles of r, one interval apart from the clock's
// current cycle start, calling between(k, from, to) before cycle k to make
// changes in (from, to).
func runCycles(t *testing.T, r *relay, start time.Time, first, n int, between func(k int, from, to time.Time)) {
	t.Helper()
	for k := first; k < first+n; k++ {
		next := start.Add(time.Duration(k) * interval)
		require.True(t, r.w.clock.Now().Before(next) || k == 0, "cycle %d overran the interval", k)
		if between != nil && k > 0 {
			between(k, r.w.clock.Now(), next)
		}
		r.w.clock.Set(next)
		r.cycle(t)
	}
}

// TestTiered_PageShift drives the tiered poller while the list moves under
// it, under each order the API might list tasks in. While it sweeps, new
// tasks are created (at the head of the list, or its tail in id order) and
// tasks change (a status change moves a task between status lists; any
// change moves it to the head in updated_at order). Small pages make many
// page boundaries. No change may be missed, and none may be found later
// than its tier's period plus one cycle: a page shift hides a task for at
// most one extra cycle.
func TestTiered_PageShift(t *testing.T) {
	tests := []struct {
		name  string
		order sim.Order
	}{
		{name: "id ascending", order: sim.IDAsc},
		{name: "id descending", order: sim.IDDesc},
		{name: "updated_at descending", order: sim.UpdatedDesc},
	}
	const fullSweep = 2 * time.Minute
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, sim.Options{Tasks: 1000, Seed: 11, OpenFraction: 0.3, Order: tt.order}, fixedNow)
			r := newRelay(t, "tiered", w, true, nil, func(cfg *poller.Config) {
				cfg.PageSize = 20
				cfg.FullSweep = fullSweep
			})
			r.during = func(n int) {
				switch n % 4 {
				case 1:
					w.sim.NewTask()
				case 3:
					w.sim.Step(1)
				}
				w.record()
			}
			shifts := 0
			cycles := 2*int(fullSweep/interval) + 4
			drain := int(fullSweep/interval) + 2
			runCycles(t, r, fixedNow, 0, cycles+drain, func(k int, from, to time.Time) {
				shifts += r.p.Status().Tiers.PageShifts
				if k < cycles {
					w.change(from, to, 8, 2)
				} else {
					r.during = nil
				}
			})
			open, finished, missed := r.latencies(fixedNow.Add(time.Duration(cycles) * interval))
			assert.Empty(t, missed, "changes never found")
			require.NotEmpty(t, open)
			require.NotEmpty(t, finished)
			// The latest a change may be found: its tier's period, one
			// extra cycle for a page shift, and the cycle's own run time.
			slack := time.Second
			assert.LessOrEqual(t, open[len(open)-1], 2*interval+interval+slack, "slowest open change")
			assert.LessOrEqual(t, finished[len(finished)-1], fullSweep+interval+slack, "slowest finished change")
			assert.Positive(t, shifts, "the test made pages shift")
			t.Logf("%d open and %d finished changes; slowest %s and %s; %d sweeps saw a page shift; requests %s",
				len(open), len(finished), open[len(open)-1], finished[len(finished)-1], shifts, kindsString(r.kinds))
		})
	}
}

// queryLog records the queries a relay sends.
type queryLog struct{ qs []url.Values }

func (l *queryLog) taskIDs() []int64 {
	var ids []int64
	for _, q := range l.qs {
		if v := q.Get("task_id"); v != "" {
			id, _ := strconv.ParseInt(v, 10, 64)
			ids = append(ids, id)
		}
	}
	return ids
}

// newLoggedRelay is a tiered relay whose queries are kept.
func newLoggedRelay(t *testing.T, w *world, state poller.StateStore, mod func(*poller.Config)) (*relay, *queryLog) {
	t.Helper()
	r := newRelay(t, "tiered", w, true, state, mod)
	l := &queryLog{}
	r.seen = func(q url.Values) { l.qs = append(l.qs, q) }
	return r, l
}

// openTask returns a task of w with the given status, created before the
// newest window.
func openTask(t *testing.T, w *world, status int) int64 {
	t.Helper()
	for id := int64(1); id < 1000; id++ {
		if st, ok := w.sim.TaskStatus(id); ok && st == status {
			return id
		}
	}
	t.Fatalf("no task with status %d", status)
	return 0
}

func TestTiered_FirstCycleSweepsInFull(t *testing.T) {
	w := newWorld(t, sim.Options{Tasks: 1000, Seed: 3, OpenFraction: 0.3}, fixedNow)
	r, l := newLoggedRelay(t, w, nil, nil)
	runCycles(t, r, fixedNow, 0, 1, nil)
	assert.Equal(t, 10, r.perCycle[0], "ceil(1000/100) pages")
	for _, q := range l.qs {
		assert.Equal(t, "2026-03-09 17:30:00", q.Get("start_at"), "lookback in the API's zone")
		assert.False(t, q.Has("status") || q.Has("end_at"))
	}
	st := r.p.Status()
	assert.True(t, st.Tiers.Ready)
	assert.Equal(t, 1000, st.Tiers.Tasks)
	assert.Positive(t, st.Tiers.Slices)
	assert.True(t, fixedNow.Equal(st.SeenThrough), "seen through %s", st.SeenThrough)
	assert.Len(t, r.found, len(w.made), "every log of the world handed on")
}

// TestTiered_SkipsUnchanged checks that tasks read again unchanged are not
// decoded nor handed on, and that Forget hands one on again.
func TestTiered_SkipsUnchanged(t *testing.T) {
	w := newWorld(t, sim.Options{Tasks: 1000, Seed: 3, OpenFraction: 0.3}, fixedNow)
	r := newRelay(t, "tiered", w, true, nil, nil)
	var pages int
	handed := map[int64]int{}
	r.handle = func(_ context.Context, tasks []diff.Task) error {
		pages++
		for _, task := range tasks {
			handed[task.ID]++
		}
		return nil
	}
	runCycles(t, r, fixedNow, 0, 1, nil)
	require.Len(t, handed, 1000)
	clear(handed)
	pages = 0
	runCycles(t, r, fixedNow, 1, 5, nil)
	assert.Zero(t, pages, "no page handed on in a world without changes")
	st := r.p.Status().LastSweep
	assert.Positive(t, st.Tasks)
	assert.Equal(t, st.Tasks, st.Skipped)

	id := openTask(t, w, diff.StatusInProgress)
	r.tiered.Forget(id)
	runCycles(t, r, fixedNow, 6, 2, nil)
	assert.Equal(t, map[int64]int{id: 1}, handed, "a forgotten task is handed on once more")
}

// TestTiered_LeavesOpenTier checks that a task that completes between two
// cycles is fetched by task_id, and its status change found, within the
// open period, long before the next full read of its band.
func TestTiered_LeavesOpenTier(t *testing.T) {
	w := newWorld(t, sim.Options{Tasks: 3000, Seed: 5, OpenFraction: 0.2}, fixedNow)
	r, l := newLoggedRelay(t, w, nil, nil)
	runCycles(t, r, fixedNow, 0, 3, nil)
	id := openTask(t, w, diff.StatusInProgress)
	before := w.sim.LogCount()
	w.clock.Add(time.Second)
	require.True(t, w.sim.SetStatus(id, diff.StatusCompleted))
	w.record()
	logID := w.sim.LogsFrom(before)[0].LogID
	l.qs = nil
	runCycles(t, r, fixedNow, 3, 2, nil)
	found, ok := r.found[logID]
	require.True(t, ok, "status change found within two cycles")
	assert.LessOrEqual(t, found.Sub(w.made[logID]), 2*interval)
	assert.Contains(t, l.taskIDs(), id, "fetched by task_id")
}

// TestTiered_CreatedAndFinishedBetweenCycles checks that a task created
// and finished between two cycles, never open when a cycle looked, is found
// at the next cycle.
func TestTiered_CreatedAndFinishedBetweenCycles(t *testing.T) {
	w := newWorld(t, sim.Options{Tasks: 3000, Seed: 5, OpenFraction: 0.2}, fixedNow)
	r := newRelay(t, "tiered", w, true, nil, nil)
	runCycles(t, r, fixedNow, 0, 3, nil)
	before := w.sim.LogCount()
	w.clock.Add(time.Second)
	id := w.sim.NewTask()
	require.True(t, w.sim.SetStatus(id, diff.StatusInProgress))
	require.True(t, w.sim.SetStatus(id, diff.StatusTerminated))
	w.record()
	runCycles(t, r, fixedNow, 3, 1, nil)
	logs := w.sim.LogsFrom(before)
	require.Len(t, logs, 3)
	for _, lg := range logs {
		assert.Contains(t, r.found, lg.LogID, "log %d of the new task", lg.LogID)
	}
}

// TestTiered_Budget checks the requests of a quiet world: after the full
// sweep, every cycle reads the newest window, half of the open tasks and a
// share of the finished ones, and every task is read within FullSweep.
func TestTiered_Budget(t *testing.T) {
	w := newWorld(t, sim.Options{Tasks: 5000, Seed: 9, OpenFraction: 0.1}, fixedNow)
	r := newRelay(t, "tiered", w, true, nil, nil)
	const fullSweep = 10 * time.Minute
	runCycles(t, r, fixedNow, 0, int(fullSweep/interval)+1, nil)
	assert.Equal(t, 50, r.perCycle[0])
	steady := r.perCycle[1:]
	// head scan 1 + newest 1 + half the ~500 open tasks (2.5 pages, 2
	// status lists) + 4500 finished tasks over 60 cycles (0.75 pages). No
	// budget is set (no rate limit): nothing beyond the ceilings is read.
	t.Logf("requests per cycle: mean %.1f, max %d; by kind: %s", mean(steady), slicesMax(steady), kindsString(r.kinds))
	assert.LessOrEqual(t, mean(steady), 7.5)
	assert.LessOrEqual(t, slicesMax(steady), 13)
	st := r.p.Status()
	assert.Zero(t, st.Tiers.Fetches)
	assert.LessOrEqual(t, st.MaxUnseenAge, fullSweep)
	assert.False(t, st.Tiers.FinishedSeenThrough.Before(w.clock.Now().Add(-fullSweep)))
	assert.False(t, st.Tiers.OpenSeenThrough.Before(w.clock.Now().Add(-2*interval)))
}

// TestTiered_FailedCycle checks that a cycle that fails part way commits
// nothing: the next one reads again what was not read in full.
func TestTiered_FailedCycle(t *testing.T) {
	w := newWorld(t, sim.Options{Tasks: 3000, Seed: 5, OpenFraction: 0.2}, fixedNow)
	r := newRelay(t, "tiered", w, true, nil, nil)
	runCycles(t, r, fixedNow, 0, 3, nil)
	before := r.p.Status().Tiers

	n := 0
	r.srv = http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		if n++; n == 3 {
			rw.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.sim.ServeHTTP(rw, req)
	})
	id := openTask(t, w, diff.StatusInProgress)
	logs := w.sim.LogCount()
	w.clock.Add(time.Second)
	require.True(t, w.sim.Comment(id))
	w.record()
	w.clock.Set(fixedNow.Add(3 * interval))
	require.Error(t, r.p.RunOnce(context.Background()))
	assert.Equal(t, before, r.p.Status().Tiers, "a failed cycle leaves the stats of the last good one")

	r.srv = w.sim
	runCycles(t, r, fixedNow, 4, 2, nil)
	for _, lg := range w.sim.LogsFrom(logs) {
		assert.Contains(t, r.found, lg.LogID)
	}
	assert.Zero(t, r.p.Status().ConsecutiveFailures)
}

// TestTiered_State checks that a restarted relay resumes from the state
// its predecessor saved in the store, without a full sweep, and finds what
// changed while it was down.
func TestTiered_State(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "relay.db"), store.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, db.Close()) })

	w := newWorld(t, sim.Options{Tasks: 3000, Seed: 5, OpenFraction: 0.2}, fixedNow)
	a := newRelay(t, "first", w, true, db, nil)
	runCycles(t, a, fixedNow, 0, 8, nil) // saved after the full sweep and a minute later
	saved, err := db.Meta(poller.StateKey)
	require.NoError(t, err)
	assert.NotEmpty(t, saved)

	// While no relay runs: an open task completes, a new one appears.
	logs := w.sim.LogCount()
	w.clock.Add(time.Minute)
	done := openTask(t, w, diff.StatusInProgress)
	require.True(t, w.sim.SetStatus(done, diff.StatusCompleted))
	w.sim.NewTask()
	w.record()
	changed := w.sim.LogsFrom(logs)
	require.Len(t, changed, 2)

	b := newRelay(t, "second", w, true, db, nil)
	restart := fixedNow.Add(10 * interval)
	for k := range 2 {
		w.clock.Set(restart.Add(time.Duration(k) * interval))
		b.cycle(t)
	}
	assert.Less(t, b.perCycle[0], 30, "no full sweep (30 pages) after a restart")
	for _, lg := range changed {
		assert.Contains(t, b.found, lg.LogID)
	}
	assert.True(t, b.p.Status().Tiers.Ready)

	t.Run("unreadable", func(t *testing.T) {
		require.NoError(t, db.SetMeta(poller.StateKey, []byte("incs-tiers\x01garbage")))
		c := newRelay(t, "third", w, true, db, nil)
		w.clock.Add(interval)
		c.cycle(t)
		assert.GreaterOrEqual(t, c.perCycle[0], 30, "a full sweep")
	})
	t.Run("other zone", func(t *testing.T) {
		c := newRelay(t, "fourth", w, true, db, nil)
		w.clock.Add(interval)
		c.cycle(t) // saves a good state
		d := newRelay(t, "fifth", w, true, db, func(cfg *poller.Config) { cfg.Location = time.UTC })
		w.clock.Add(interval)
		d.cycle(t)
		assert.GreaterOrEqual(t, d.perCycle[0], 30, "a state made for another zone is not used")
	})
}

// TestTiered_Lookback checks that tasks that fall out of the lookback
// window are forgotten, and that a longer lookback after a restart sweeps
// the part of the window no band covers.
func TestTiered_Lookback(t *testing.T) {
	w := newWorld(t, sim.Options{Tasks: 1400, Seed: 5, OpenFraction: 0.2}, fixedNow) // ~100 a day over two weeks
	state := memState{}
	week := func(cfg *poller.Config) { cfg.Lookback = 7 * 24 * time.Hour }
	r, l := newLoggedRelay(t, w, state, week)
	runCycles(t, r, fixedNow, 0, 2, nil)
	known := r.p.Status().Tiers.Tasks
	assert.InDelta(t, 700, known, 60)

	// A day later, a day's tasks fell out.
	w.clock.Set(fixedNow.Add(24 * time.Hour))
	l.qs = nil
	r.cycle(t)
	assert.InDelta(t, known-100, r.p.Status().Tiers.Tasks, 30)
	for _, q := range l.qs {
		if from := q.Get("start_at"); from != "" {
			assert.GreaterOrEqual(t, from, "2026-04-02 17:30:00", "nothing before the lookback")
		}
	}

	// Restarted with a lookback of 30 days: the part before the old window
	// is swept, not the whole window.
	r2, l2 := newLoggedRelay(t, w, state, nil)
	w.clock.Add(interval)
	lb := poller.WallTimeOf(w.clock.Now().Add(-720*time.Hour), shanghai).String()
	r2.cycle(t)
	var gap bool
	scanned := 0
	for _, q := range l2.qs {
		if q.Get("start_at") == lb && !q.Has("end_at") {
			scanned++ // the head scan; not a full sweep
		}
		gap = gap || (q.Get("start_at") == lb && q.Get("end_at") >= "2026-04-02 17:29:59")
	}
	assert.True(t, gap, "the new part is swept: %v", l2.qs)
	assert.Less(t, scanned, 10, "no full sweep of the 30-day window: %v", l2.qs)
	assert.GreaterOrEqual(t, r2.p.Status().Tiers.Tasks, 800, "the tasks of the added week are known")
}

// TestTiered_DaylightSaving runs the tiered poller across both
// daylight-saving changes of America/New_York with an API that compares
// creation times as wall-clock values. Each interval a task is created and
// finished before the next cycle: it must be found at that cycle, also in
// the repeated hour of the fall-back, when new tasks get earlier creation
// times than older ones.
func TestTiered_DaylightSaving(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	tests := []struct {
		name   string
		start  time.Time
		cycles int
	}{
		{name: "fall back", start: time.Date(2026, 11, 1, 1, 15, 0, 0, ny), cycles: 120},    // the hour repeats at 45
		{name: "spring forward", start: time.Date(2026, 3, 8, 1, 30, 0, 0, ny), cycles: 60}, // an hour is skipped at 30
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const step = time.Minute
			w := newWorld(t, sim.Options{Tasks: 600, Seed: 2, OpenFraction: 0.2, Location: ny}, tt.start)
			r := newRelay(t, "tiered", w, true, nil, func(cfg *poller.Config) {
				cfg.Location = ny
				cfg.Interval = step
				cfg.FullSweep = 10 * time.Minute
			})
			var quick []int64 // logs of tasks created and finished between two cycles
			for k := range tt.cycles {
				now := tt.start.Add(time.Duration(k) * step)
				if k > 0 {
					w.change(w.clock.Now(), now.Add(-step/2), 3, 1)
					w.clock.Set(now.Add(-step / 2))
					logs := w.sim.LogCount()
					id := w.sim.NewTask()
					w.sim.SetStatus(id, diff.StatusTerminated)
					w.record()
					for _, lg := range w.sim.LogsFrom(logs) {
						quick = append(quick, lg.LogID)
					}
				}
				w.clock.Set(now)
				r.cycle(t)
			}
			for _, id := range quick {
				f, ok := r.found[id]
				if assert.True(t, ok, "log %d never found", id) {
					assert.LessOrEqual(t, f.Sub(w.made[id]), step, "log %d found late", id)
				}
			}
			_, _, missed := r.latencies(tt.start.Add(time.Duration(tt.cycles-10) * step))
			assert.Empty(t, missed)
		})
	}
}

// TestTiered_InitialSweepShift checks the first full sweep under each
// order while finished tasks that the sweep has not reached yet get a
// comment. In updated_at order such a task moves to the head of the list,
// which the sweep has passed: it must still be found in that first cycle.
func TestTiered_InitialSweepShift(t *testing.T) {
	tests := []struct {
		name      string
		order     sim.Order
		last      int64 // ids from here on are listed on the last pages
		headReads bool
	}{
		{name: "id ascending", order: sim.IDAsc, last: 950},
		{name: "id descending", order: sim.IDDesc, last: 10},
		{name: "updated_at descending", order: sim.UpdatedDesc, last: 10, headReads: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, sim.Options{Tasks: 1000, Seed: 4, OpenFraction: 0.2, Order: tt.order}, fixedNow)
			r := newRelay(t, "tiered", w, true, nil, nil)
			var commented []int64
			r.during = func(n int) {
				if n == 0 || n > 6 {
					return
				}
				// A finished task the sweep has not reached yet.
				for id := tt.last + int64(7*n); ; id++ {
					if st, _ := w.sim.TaskStatus(id); st >= diff.StatusCompleted {
						require.True(t, w.sim.Comment(id))
						commented = append(commented, id)
						break
					}
				}
				w.record()
			}
			runCycles(t, r, fixedNow, 0, 1, nil)
			require.Len(t, commented, 6)
			_, _, missed := r.latencies(w.clock.Now().Add(time.Second))
			assert.Empty(t, missed, "changes made during the first sweep, found in it")
			if tt.headReads {
				assert.Greater(t, r.perCycle[0], 10, "the head of the list read again")
			} else {
				assert.Equal(t, 10, r.perCycle[0], "no head read in id order")
			}
		})
	}
}

// TestTiered_Fetch checks that a task asked for with Fetch (a rule came
// due on it) is read by task_id in the next cycle, also a finished task no
// main query of that cycle reads, and that unknown ids are ignored.
func TestTiered_Fetch(t *testing.T) {
	w := newWorld(t, sim.Options{Tasks: 3000, Seed: 5, OpenFraction: 0.2}, fixedNow)
	r, l := newLoggedRelay(t, w, nil, nil)
	runCycles(t, r, fixedNow, 0, 2, nil)
	id := openTask(t, w, diff.StatusCompleted)
	l.qs = nil
	r.tiered.Fetch(id, 999_999)
	runCycles(t, r, fixedNow, 2, 1, nil)
	assert.Equal(t, []int64{id}, l.taskIDs(), "fetched by task_id in the next cycle")
	l.qs = nil
	runCycles(t, r, fixedNow, 3, 1, nil)
	assert.NotContains(t, l.taskIDs(), id, "once")
}
