package relay

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/diff/difftest"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/store"
)

// recordingForgetter records what the Ingester tells the tiers to forget.
type recordingForgetter struct {
	mu  sync.Mutex
	ids []int64
}

func (f *recordingForgetter) Forget(ids ...int64) {
	f.mu.Lock()
	f.ids = append(f.ids, ids...)
	f.mu.Unlock()
}

// TestIngester_CommitsBehind: HandlePage returns before its page is
// committed and reports the previous page's outcome; a failed commit is
// reported by the next call, its tasks are forgotten so that they are read
// again, and nothing of the page is stored until it is handed over again.
func TestIngester_CommitsBehind(t *testing.T) {
	db, err := store.Open(t.TempDir()+"/relay.db", store.Options{NoSync: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	tiers := &recordingForgetter{}
	ing := &Ingester{db: db, loc: poller.DefaultLocation(), log: zerolog.Nop(), tiers: tiers}
	// No snapshot boundary: every log becomes an event.
	ctx := context.Background()
	head := func() uint64 {
		h, err := db.Head()
		require.NoError(t, err)
		return h
	}

	p1, p2, p3 := pageOf(t, 1, 100, 4), pageOf(t, 101, 100, 4), pageOf(t, 201, 100, 4)
	require.NoError(t, ing.HandlePage(ctx, p1))
	require.NoError(t, ing.HandlePage(ctx, p2), "the first page committed")
	require.NoError(t, ing.SweepDone(ctx, poller.SweepStats{}), "SweepDone waits for the last page")
	assert.Equal(t, uint64(800), head())
	assert.Equal(t, int64(1), ing.sweeps.Load())

	// A commit that fails (here: its context ended first) fails the sweep
	// at the next call, and its tasks are forgotten.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	require.NoError(t, ing.HandlePage(cancelled, p3), "nothing was under way")
	err = ing.SweepDone(ctx, poller.SweepStats{})
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, int64(1), ing.sweeps.Load(), "a failed sweep is not counted")
	assert.Equal(t, uint64(800), head(), "nothing of the failed page stored")
	assert.Equal(t, taskIDs(p3), tiers.ids, "the failed page's tasks are read again")

	// Read again, the page is stored once.
	require.NoError(t, ing.HandlePage(ctx, p3))
	require.NoError(t, ing.HandlePage(ctx, p3), "the same page twice: the second adds nothing")
	require.NoError(t, ing.flush())
	assert.Equal(t, uint64(1200), head())
	require.NoError(t, ing.flush(), "nothing under way")
}

// pageOf decodes n vendor-shaped tasks from id first on, each with
// logsPer logs, as the poller decodes a page.
func pageOf(t *testing.T, first int64, n, logsPer int) []diff.Task {
	var tasks []diff.Task
	require.NoError(t, json.Unmarshal(difftest.TasksJSON(first, n, logsPer, first*int64(logsPer)), &tasks))
	return tasks
}

func taskIDs(tasks []diff.Task) []int64 {
	ids := make([]int64, len(tasks))
	for i := range tasks {
		ids[i] = tasks[i].ID
	}
	return slices.Clip(ids)
}

// deleteStore records the deletions handed to the store, failing them
// with err.
type deleteStore struct {
	store.Store
	ids []int64
	err error
}

func (s *deleteStore) Delete(_ context.Context, ids []int64, _ time.Time) (store.IngestResult, error) {
	if s.err != nil {
		return store.IngestResult{}, s.err
	}
	s.ids = append(s.ids, ids...)
	return store.IngestResult{Events: len(ids), Types: map[string]int{"task.deleted": len(ids)}}, nil
}

// TestIngester_HandleDeleted: the poller's deletions reach store.Delete
// once the pages before committed, and a failed Delete is returned (the
// poller then looks the tasks up again) and counts nothing.
func TestIngester_HandleDeleted(t *testing.T) {
	db, err := store.Open(t.TempDir()+"/relay.db", store.Options{NoSync: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	ds := &deleteStore{Store: db}
	m := newMetrics(testRelay(&config.Config{}))
	ing := &Ingester{db: ds, loc: poller.DefaultLocation(), log: zerolog.Nop(), metrics: m}
	ctx := context.Background()

	require.NoError(t, ing.HandlePage(ctx, pageOf(t, 1, 3, 1)))
	require.NoError(t, ing.HandleDeleted(ctx, []int64{2, 3}, time.Now()))
	assert.Nil(t, ing.pending, "the page before was committed first")
	assert.Equal(t, []int64{2, 3}, ds.ids)
	assert.Equal(t, 2.0, value(t, m.deletions))

	ds.err = errors.New("disk full")
	require.ErrorIs(t, ing.HandleDeleted(ctx, []int64{1}, time.Now()), ds.err)
	assert.Equal(t, 2.0, value(t, m.deletions), "a failed deletion is not counted")
}

// gatedStore counts IngestAfter calls and their tasks, and holds the
// first one's return until release is closed.
type gatedStore struct {
	store.Store
	release chan struct{}
	mu      sync.Mutex
	calls   []int
}

func (g *gatedStore) IngestAfter(ctx context.Context, tasks []diff.Task, loc *time.Location, boundary time.Time) (store.IngestResult, error) {
	g.mu.Lock()
	first := len(g.calls) == 0
	g.calls = append(g.calls, len(tasks))
	g.mu.Unlock()
	res, err := g.Store.IngestAfter(ctx, tasks, loc, boundary)
	if first {
		<-g.release // stored, but its commit seen as under way
	}
	return res, err
}

// gatedIngester returns an Ingester on a gatedStore over a new store.
func gatedIngester(t *testing.T) (*Ingester, *gatedStore, *store.DB) {
	t.Helper()
	db, err := store.Open(t.TempDir()+"/relay.db", store.Options{NoSync: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	g := &gatedStore{Store: db, release: make(chan struct{})}
	return &Ingester{db: g, loc: poller.DefaultLocation(), log: zerolog.Nop()}, g, db
}

// waitCalls waits until n IngestAfter calls began.
func (g *gatedStore) waitCalls(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.calls) == n }, 5*time.Second, time.Millisecond)
}

// TestIngester_GathersPages: pages handed over while a commit is under way
// are gathered, at most groupPages (or groupLogs logs), and stored in one
// Ingest once it ended (a jetstream store pays per atomic batch); every
// log is stored once, in page order.
func TestIngester_GathersPages(t *testing.T) {
	ing, g, db := gatedIngester(t)
	ctx := context.Background()
	var pages [][]diff.Task
	for i := range 6 {
		pages = append(pages, pageOf(t, int64(1+100*i), 100, 1)) // 100 logs: four pages pass no bound but groupPages
	}
	require.NoError(t, ing.HandlePage(ctx, pages[0]), "stored at once: nothing under way")
	g.waitCalls(t, 1)
	for _, p := range pages[1:4] {
		require.NoError(t, ing.HandlePage(ctx, p), "gathered: returns at once while the first commit waits")
	}
	time.AfterFunc(50*time.Millisecond, func() { close(g.release) })
	require.NoError(t, ing.HandlePage(ctx, pages[4]), "the fourth gathered page starts them, once the first commit ended")
	require.NoError(t, ing.HandlePage(ctx, pages[5]))
	require.NoError(t, ing.flush())
	g.mu.Lock()
	calls := slices.Clone(g.calls)
	g.mu.Unlock()
	assert.Equal(t, []int{100, 400, 100}, calls, "every page stored once: pages 2-5 in one Ingest")
	h, err := db.Head()
	require.NoError(t, err)
	assert.Equal(t, uint64(600), h)
	evs, err := db.Read(ctx, 0, 2000)
	require.NoError(t, err)
	for i := 1; i < len(evs); i++ {
		require.LessOrEqual(t, evs[i-1].Data.TaskID, evs[i].Data.TaskID, "in page order")
	}
}

// TestIngester_GathersFewLogs: pages of many logs are not gathered past
// groupLogs: the second page of half of it waits, the third starts both.
func TestIngester_GathersFewLogs(t *testing.T) {
	ing, g, _ := gatedIngester(t)
	ctx := context.Background()
	per := groupLogs / 200 // logs a task: a page of 100 tasks is half of groupLogs
	require.NoError(t, ing.HandlePage(ctx, pageOf(t, 1, 100, per)))
	g.waitCalls(t, 1)
	require.NoError(t, ing.HandlePage(ctx, pageOf(t, 101, 100, per)), "half of groupLogs: gathered")
	time.AfterFunc(50*time.Millisecond, func() { close(g.release) })
	require.NoError(t, ing.HandlePage(ctx, pageOf(t, 201, 100, per)), "groupLogs reached: stored")
	require.NoError(t, ing.flush())
	g.mu.Lock()
	defer g.mu.Unlock()
	assert.Equal(t, []int{100, 200}, g.calls)
}

// TestIngester_LongPagesInParts: a page of long histories is stored in
// parts of whole tasks of at most chunkLogs logs (a longer task alone),
// every log once and each task's in order; a part with a task that does
// not diff is committed without it and the task is reported and
// forgotten; a part that fails stops the parts after the one under way,
// and every task of the page is read again.
func TestIngester_LongPagesInParts(t *testing.T) {
	ctx := context.Background()
	long := func(tasks int) []diff.Task {
		return append(pageOf(t, 1, tasks, 100), pageOf(t, int64(tasks)+1, 1, chunkLogs+500)...)
	}

	ing, g, db := gatedIngester(t)
	close(g.release)
	forgot := &recordingForgetter{}
	ing.tiers = forgot
	page := long(30)
	page[25].Logs[3].CreatedAt = "not a time" // task 26, in the second part
	require.NoError(t, ing.HandlePage(ctx, page))
	require.NoError(t, ing.flush(), "a task that does not diff does not fail the page")
	assert.ElementsMatch(t, []int{20, 10, 1}, g.calls, "parts of at most chunkLogs logs; the longer task alone")
	assert.Equal(t, []int64{26}, forgot.ids)
	head, err := db.Head()
	require.NoError(t, err)
	require.Equal(t, uint64(29*100+chunkLogs+500), head, "every other log once")
	evs, err := db.Read(ctx, 1, int(head))
	require.NoError(t, err)
	last := map[int64]int64{} // task -> its last log id read
	for _, ev := range evs {
		id, err := strconv.ParseInt(strings.TrimPrefix(ev.ID, "log-"), 10, 64)
		require.NoError(t, err)
		require.Greater(t, id, last[ev.Data.TaskID], "task %d's events in log order", ev.Data.TaskID)
		last[ev.Data.TaskID] = id
	}
	require.Len(t, last, 30)
	require.NotContains(t, last, int64(26))

	// A part that fails stops the page after the part under way (the
	// next one is prepared while one commits): the rest is not stored, and
	// the whole page is read again.
	db2, err := store.Open(t.TempDir()+"/relay.db", store.Options{NoSync: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = db2.Close() })
	fs := &failingStore{Store: db2, failFirst: 21, err: errors.New("disk full")}
	forgot = &recordingForgetter{}
	ing = &Ingester{db: fs, loc: poller.DefaultLocation(), log: zerolog.Nop(), tiers: forgot}
	page = long(50) // parts of 20, 20 and 10 tasks, then the long one
	require.NoError(t, ing.HandlePage(ctx, page))
	require.ErrorContains(t, ing.flush(), "disk full")
	assert.ElementsMatch(t, []int64{1, 21, 41}, fs.firsts(), "the part after the one that failed is not tried")
	assert.Equal(t, taskIDs(page), forgot.ids)
	head, err = db2.Head()
	require.NoError(t, err)
	require.Equal(t, uint64(30*100), head, "the first and third parts stay stored")
}

// TestIngester_PartsInFlightBounded: two pages of long histories handed
// over back to back (the second while the first's parts commit) prepare
// and commit at most partsInFlight parts at once between them, not two
// each; every log is still stored once, each task's in log order.
func TestIngester_PartsInFlightBounded(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(t.TempDir()+"/relay.db", store.Options{NoSync: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	cs := &concurrentStore{Store: db}
	ing := &Ingester{db: cs, loc: poller.DefaultLocation(), log: zerolog.Nop()}
	per := chunkLogs / 10 // ten tasks a part: each page is four parts
	require.NoError(t, ing.HandlePage(ctx, pageOf(t, 1, 40, per)))
	require.NoError(t, ing.HandlePage(ctx, pageOf(t, 41, 40, per)), "started while the first page's parts commit")
	require.NoError(t, ing.flush())
	assert.Equal(t, 8, cs.total, "eight parts")
	assert.LessOrEqual(t, cs.most, partsInFlight, "parts in flight over both pages")
	assert.Equal(t, partsInFlight, cs.most, "the bound is reached: parts of one page overlap")
	head, err := db.Head()
	require.NoError(t, err)
	require.Equal(t, uint64(80*per), head, "every log once")
}

// concurrentStore counts the IngestAfter calls under way at once, each
// held a few milliseconds so that calls which may overlap do.
type concurrentStore struct {
	store.Store
	mu        sync.Mutex
	now, most int
	total     int
}

func (c *concurrentStore) IngestAfter(ctx context.Context, tasks []diff.Task, loc *time.Location, boundary time.Time) (store.IngestResult, error) {
	c.mu.Lock()
	c.now++
	c.total++
	c.most = max(c.most, c.now)
	c.mu.Unlock()
	defer func() { c.mu.Lock(); c.now--; c.mu.Unlock() }()
	time.Sleep(20 * time.Millisecond)
	return c.Store.IngestAfter(ctx, tasks, loc, boundary)
}

// failingStore fails the IngestAfter of the part whose first task is
// failFirst with err, and records each call's first task.
type failingStore struct {
	store.Store
	failFirst int64
	err       error
	mu        sync.Mutex
	first     []int64
}

func (f *failingStore) IngestAfter(ctx context.Context, tasks []diff.Task, loc *time.Location, boundary time.Time) (store.IngestResult, error) {
	f.mu.Lock()
	f.first = append(f.first, tasks[0].ID)
	f.mu.Unlock()
	if tasks[0].ID == f.failFirst {
		return store.IngestResult{}, f.err
	}
	return f.Store.IngestAfter(ctx, tasks, loc, boundary)
}

func (f *failingStore) firsts() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.first)
}
