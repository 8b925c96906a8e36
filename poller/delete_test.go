package poller_test

// Tests of deletions (delete.go): a seen task that is gone, confirmed by a
// task_id look-up that lists nothing, reaches a Deleter, with the Tiered
// strategy and with the naive Lookback one; ageing out of the lookback
// window is no deletion; a failing look-up is retried, never taken for a
// deletion; the mass-deletion guard holds and then releases. The API is a
// small httptest handler of this file's own.

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller"
)

// delTask is one task of delAPI.
type delTask struct {
	id      int64
	created time.Time
	status  int
}

// delAPI serves GET /external/tasks from a set of tasks: task_id, status,
// start_at and end_at (creation times), page and page_size, newest id
// first. Tasks in gone are not served; failing task_id look-ups answer
// 500; with hide set no task is served at all (a token whose scope
// changed).
type delAPI struct {
	mu      sync.Mutex
	loc     *time.Location
	tasks   map[int64]*delTask
	gone    map[int64]bool
	failing map[int64]bool
	hide    bool
	lookups map[int64]int // task_id requests per task
}

func newDelAPI(loc *time.Location) *delAPI {
	return &delAPI{loc: loc, tasks: map[int64]*delTask{}, gone: map[int64]bool{}, failing: map[int64]bool{},
		lookups: map[int64]int{}}
}

// add makes n tasks from id first on, created every step back from at.
func (a *delAPI) add(first int64, n int, at time.Time, step time.Duration, status int) []int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ids []int64
	for i := range n {
		id := first + int64(i)
		a.tasks[id] = &delTask{id: id, created: at.Add(-time.Duration(i) * step), status: status}
		ids = append(ids, id)
	}
	return ids
}

func (a *delAPI) set(f func(a *delAPI)) {
	a.mu.Lock()
	f(a)
	a.mu.Unlock()
}

func (a *delAPI) lookupsOf(id int64) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lookups[id]
}

func (a *delAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	q := r.URL.Query()
	wall := func(t time.Time) string { return t.In(a.loc).Format(diff.TimeLayout) }
	var list []*delTask
	if s := q.Get("task_id"); s != "" {
		id, _ := strconv.ParseInt(s, 10, 64)
		a.lookups[id]++
		if a.failing[id] {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		if t := a.tasks[id]; t != nil && !a.gone[id] && !a.hide {
			list = append(list, t)
		}
	} else if !a.hide {
		for _, t := range a.tasks {
			c := wall(t.created)
			if a.gone[t.id] || (q.Get("start_at") != "" && c < q.Get("start_at")) ||
				(q.Get("end_at") != "" && c > q.Get("end_at")) ||
				(q.Get("status") != "" && strconv.Itoa(t.status) != q.Get("status")) {
				continue
			}
			list = append(list, t)
		}
	}
	slices.SortFunc(list, func(x, y *delTask) int { return cmp.Compare(y.id, x.id) })
	page, _ := strconv.Atoi(q.Get("page"))
	size, _ := strconv.Atoi(q.Get("page_size"))
	page, size = max(page, 1), cmp.Or(size, 100)
	from, to := min((page-1)*size, len(list)), min(page*size, len(list))
	body := fmt.Appendf(nil, `{"status":"success","code":200,"data":{"total":%d,"data":[`, len(list))
	for i, t := range list[from:to] {
		if i > 0 {
			body = append(body, ',')
		}
		c := wall(t.created)
		body = fmt.Appendf(body, `{"id":%d,"status":%d,"name":"t%d","created_at":%q,"updated_at":%q,`+
			`"logs":[{"id":%d,"content":"created","created_at":%q,"updated_at":%q}]}`,
			t.id, t.status, t.id, c, c, t.id*10, c, c)
	}
	body = append(body, "]}}"...)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// delHandler is a Handler, Deleter and Tracker that records: the tasks it
// was handed (by creation time, as a store tracks them), the deletions
// reported, and fails HandleDeleted while fail is set.
type delHandler struct {
	mu      sync.Mutex
	loc     *time.Location
	seen    map[int64]time.Time
	deleted []int64
	calls   int
	fail    error
}

func newDelHandler(loc *time.Location) *delHandler {
	return &delHandler{loc: loc, seen: map[int64]time.Time{}}
}

func (h *delHandler) HandlePage(_ context.Context, tasks []diff.Task) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range tasks {
		c, err := diff.ParseTime(tasks[i].CreatedAt, h.loc)
		if err != nil {
			return err
		}
		h.seen[tasks[i].ID] = c
	}
	return nil
}

func (h *delHandler) SweepDone(context.Context, poller.SweepStats) error { return nil }

func (h *delHandler) HandleDeleted(_ context.Context, ids []int64, _ time.Time) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fail != nil {
		return h.fail
	}
	h.calls++
	for _, id := range ids {
		if _, ok := h.seen[id]; ok {
			h.deleted = append(h.deleted, id)
			delete(h.seen, id)
		}
	}
	return nil
}

func (h *delHandler) Tracked(since int64, fn func(id, created int64) bool) error {
	h.mu.Lock()
	var ids, created []int64
	for id, c := range h.seen {
		if c.Unix() >= since {
			ids, created = append(ids, id), append(created, c.Unix())
		}
	}
	h.mu.Unlock()
	for i, id := range ids {
		if !fn(id, created[i]) {
			break
		}
	}
	return nil
}

func (h *delHandler) deletedIDs() []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := slices.Clone(h.deleted)
	slices.Sort(out)
	return out
}

// delRig is a poller over a delAPI under a settable clock.
type delRig struct {
	api   *delAPI
	h     *delHandler
	clock *simClock
	p     *poller.Poller
	tiers *poller.Tiered
}

// newDelRig makes a rig; tiered selects the strategy; mod may change the
// configuration (defaults otherwise, the rate limit off).
func newDelRig(t *testing.T, tiered bool, mod func(*poller.Config)) *delRig {
	t.Helper()
	rg := &delRig{api: newDelAPI(shanghai), h: newDelHandler(shanghai), clock: newSimClock(fixedNow)}
	srv := newServer(t, rg.api)
	cfg := testConfig(srv)
	cfg.Now = rg.clock.Now
	cfg.Retries = -1
	if mod != nil {
		mod(&cfg)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	rg.p = poller.New(poller.NewClient(cfg, log), cfg, rg.h, log)
	if tiered {
		rg.tiers = poller.NewTiered(cfg, nil, log)
		rg.p.Strategy = rg.tiers
	}
	return rg
}

// cycle advances the clock by d and runs a cycle.
func (rg *delRig) cycle(d time.Duration) error {
	rg.clock.Add(d)
	return rg.p.RunOnce(context.Background())
}

// bothStrategies runs f as a subtest under the Tiered strategy and the
// naive Lookback one.
func bothStrategies(t *testing.T, f func(t *testing.T, tiered bool)) {
	for _, tiered := range []bool{true, false} {
		t.Run(map[bool]string{true: "tiered", false: "full"}[tiered], func(t *testing.T) { f(t, tiered) })
	}
}

// TestDeletion_TieredWithinFullSweep: with the default interval and
// full_sweep, a finished task and an open task deleted upstream are
// reported once each within full_sweep plus an interval, and forgotten.
func TestDeletion_TieredWithinFullSweep(t *testing.T) {
	rg := newDelRig(t, true, nil)
	rg.api.add(1, 900, fixedNow.Add(-time.Hour), time.Minute, 2)
	rg.api.add(2001, 40, fixedNow.Add(-2*time.Hour), time.Minute, 1)
	require.NoError(t, rg.cycle(0))
	require.NoError(t, rg.cycle(poller.DefaultInterval))

	rg.api.set(func(a *delAPI) { a.gone[450], a.gone[2020] = true, true })
	deadline := rg.clock.Now().Add(poller.DefaultFullSweep + poller.DefaultInterval)
	for rg.clock.Now().Before(deadline) && len(rg.h.deletedIDs()) < 2 {
		require.NoError(t, rg.cycle(poller.DefaultInterval))
	}
	assert.Equal(t, []int64{450, 2020}, rg.h.deletedIDs(), "both found by %s", deadline)
	for range 70 {
		require.NoError(t, rg.cycle(poller.DefaultInterval))
	}
	assert.Equal(t, []int64{450, 2020}, rg.h.deletedIDs(), "reported once")
	assert.Equal(t, 938, rg.tiers.Stats().Tasks, "forgotten by the tiers")
	assert.LessOrEqual(t, rg.api.lookupsOf(450), 2, "not looked up again once reported")
	assert.Zero(t, rg.p.Status().DeletionsHeld)
	assert.Equal(t, 2, rg.p.Status().DeletionsReported)
}

// TestDeletion_AgeOutIsNoDeletion: tasks that leave poll.lookback are
// dropped without a deletion, by both strategies.
func TestDeletion_AgeOutIsNoDeletion(t *testing.T) {
	bothStrategies(t, func(t *testing.T, tiered bool) {
		rg := newDelRig(t, tiered, func(c *poller.Config) {
			c.Lookback, c.Interval, c.FullSweep = time.Hour, time.Minute, 5*time.Minute
		})
		rg.api.add(1, 50, fixedNow.Add(-50*time.Minute), 10*time.Second, 2)
		rg.api.add(101, 20, fixedNow.Add(-55*time.Minute), 10*time.Second, 1)
		rg.api.add(201, 30, fixedNow.Add(-10*time.Minute), 10*time.Second, 2)
		require.NoError(t, rg.cycle(0))
		for range 30 {
			require.NoError(t, rg.cycle(time.Minute))
		}
		assert.Empty(t, rg.h.deletedIDs(), "ageing out is no deletion")
		if tiered {
			assert.Equal(t, 30, rg.tiers.Stats().Tasks, "the aged-out tasks are forgotten")
		}
	})
}

// TestDeletion_FailedLookupRetried: a task_id look-up that fails fails the
// cycle and is no deletion; it is sent again next cycle, and the task is
// reported once the look-up answers with nothing.
func TestDeletion_FailedLookupRetried(t *testing.T) {
	bothStrategies(t, func(t *testing.T, tiered bool) {
		rg := newDelRig(t, tiered, nil)
		rg.api.add(1, 200, fixedNow.Add(-time.Hour), time.Minute, 1)
		require.NoError(t, rg.cycle(0))
		require.NoError(t, rg.cycle(poller.DefaultInterval))
		rg.api.set(func(a *delAPI) { a.gone[77], a.failing[77] = true, true })

		failed := 0
		for range 5 {
			if err := rg.cycle(poller.DefaultInterval); err != nil {
				failed++
			}
		}
		require.Positive(t, failed, "the look-up failed the cycle")
		assert.Empty(t, rg.h.deletedIDs(), "a failed look-up is no deletion")
		tries := rg.api.lookupsOf(77)
		assert.GreaterOrEqual(t, tries, 2, "retried in the next cycles")

		rg.api.set(func(a *delAPI) { a.failing[77] = false })
		require.NoError(t, rg.cycle(poller.DefaultInterval))
		assert.Equal(t, []int64{77}, rg.h.deletedIDs(), "reported at the next cycle")
	})
}

// TestDeletion_FailedDeleteKept: a deletion the handler fails to store is
// confirmed and reported again next cycle.
func TestDeletion_FailedDeleteKept(t *testing.T) {
	bothStrategies(t, func(t *testing.T, tiered bool) {
		rg := newDelRig(t, tiered, nil)
		rg.api.add(1, 200, fixedNow.Add(-time.Hour), time.Minute, 1)
		require.NoError(t, rg.cycle(0))
		rg.h.mu.Lock()
		rg.h.fail = fmt.Errorf("store down")
		rg.h.mu.Unlock()
		rg.api.set(func(a *delAPI) { a.gone[5] = true })
		for range 4 {
			require.NoError(t, rg.cycle(poller.DefaultInterval), "a failed Delete does not fail the cycle")
		}
		assert.Empty(t, rg.h.deletedIDs())
		before := rg.api.lookupsOf(5)
		assert.GreaterOrEqual(t, before, 2, "looked up again each cycle")
		rg.h.mu.Lock()
		rg.h.fail = nil
		rg.h.mu.Unlock()
		require.NoError(t, rg.cycle(poller.DefaultInterval))
		assert.Equal(t, []int64{5}, rg.h.deletedIDs())
	})
}

// TestDeletion_GuardHoldsAndReleases: more deletions in one cycle than
// max(10, 5 % of the tracked tasks) are held, also when the API lists
// nothing at all; held tasks still gone in a later cycle within the limit
// are reported then, and those that came back are not.
func TestDeletion_GuardHoldsAndReleases(t *testing.T) {
	bothStrategies(t, func(t *testing.T, tiered bool) {
		rg := newDelRig(t, tiered, func(c *poller.Config) { c.FullSweep = time.Minute })
		rg.api.add(1, 150, fixedNow.Add(-time.Hour), time.Minute, 2)
		require.NoError(t, rg.cycle(0))

		// The API lists nothing (a token whose scope changed).
		rg.api.set(func(a *delAPI) { a.hide = true })
		for range 8 {
			require.NoError(t, rg.cycle(poller.DefaultInterval))
		}
		assert.Empty(t, rg.h.deletedIDs(), "an API listing nothing deletes nothing")
		assert.Positive(t, rg.p.Status().DeletionsHeld)
		rg.api.set(func(a *delAPI) { a.hide = false })
		for range 8 {
			require.NoError(t, rg.cycle(poller.DefaultInterval))
		}
		assert.Empty(t, rg.h.deletedIDs())
		assert.Zero(t, rg.p.Status().DeletionsHeld, "released once all came back")

		// 30 tasks gone at once: over the limit of 10, held.
		rg.api.set(func(a *delAPI) {
			for id := int64(101); id <= 130; id++ {
				a.gone[id] = true
			}
		})
		for range 8 {
			require.NoError(t, rg.cycle(poller.DefaultInterval))
		}
		assert.Empty(t, rg.h.deletedIDs(), "a mass deletion is held")
		assert.Positive(t, rg.p.Status().DeletionsHeld)

		// 25 come back; the 5 still gone are within the limit: reported.
		rg.api.set(func(a *delAPI) {
			for id := int64(101); id <= 125; id++ {
				delete(a.gone, id)
			}
		})
		for range 8 {
			require.NoError(t, rg.cycle(poller.DefaultInterval))
		}
		assert.Equal(t, []int64{126, 127, 128, 129, 130}, rg.h.deletedIDs())
		assert.Zero(t, rg.p.Status().DeletionsHeld)
	})
}

// TestDeletion_FullSpreadsLookups: with the Lookback strategy, many tracked
// tasks missing from a sweep are looked up at most 100 a cycle, spread
// over cycles, within poll.budget when one is set.
func TestDeletion_FullSpreadsLookups(t *testing.T) {
	rg := newDelRig(t, false, func(c *poller.Config) { c.Budget = 30 })
	rg.api.add(1, 1000, fixedNow.Add(-time.Hour), time.Second, 2)
	require.NoError(t, rg.cycle(0))
	// 40 gone: within 5 % of 1000 (50), but more than one cycle's budget.
	rg.api.set(func(a *delAPI) {
		for id := int64(1); id <= 40; id++ {
			a.gone[id] = true
		}
	})
	require.NoError(t, rg.cycle(poller.DefaultInterval))
	st := rg.p.Status()
	assert.LessOrEqual(t, st.Requests, 30, "look-ups within the budget")
	got := len(rg.h.deletedIDs())
	assert.Positive(t, got)
	assert.Less(t, got, 40, "spread over cycles")
	for range 5 {
		require.NoError(t, rg.cycle(poller.DefaultInterval))
	}
	want := make([]int64, 40)
	for i := range want {
		want[i] = int64(i + 1)
	}
	assert.Equal(t, want, rg.h.deletedIDs())
}
