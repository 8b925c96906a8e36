package poller_test

// Tests of sweeping (sweep.go): paging, fetching ahead, retries, page
// shifts and cancellation.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/poller/sim"
)

// collector is a sweep fn that keeps what it was handed.
type collector struct {
	mu    sync.Mutex
	pages []*poller.Page
	ids   []int64
}

func (c *collector) fn(_ context.Context, p *poller.Page) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pages = append(c.pages, p)
	for _, t := range p.Tasks {
		c.ids = append(c.ids, t.ID)
	}
	return nil
}

func (c *collector) numbers() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for _, p := range c.pages {
		out = append(out, p.Number)
	}
	return out
}

func TestClient_Sweep(t *testing.T) {
	tests := []struct {
		name      string
		tasks     int
		pageSize  int
		wantPages []int
		wantReqs  int
	}{
		{name: "partial last page", tasks: 250, pageSize: 100, wantPages: []int{1, 2, 3}, wantReqs: 3},
		{name: "exact multiple stops by total", tasks: 200, pageSize: 100, wantPages: []int{1, 2}, wantReqs: 2},
		{name: "small pages", tasks: 95, pageSize: 20, wantPages: []int{1, 2, 3, 4, 5}, wantReqs: 5},
		{name: "empty", tasks: 0, pageSize: 100, wantPages: nil, wantReqs: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, srv := newSimServer(t, sim.Options{Tasks: tt.tasks, Seed: 1})
			c := newClient(t, srv, func(cfg *poller.Config) { cfg.PageSize = tt.pageSize })
			var col collector
			st, err := c.Sweep(context.Background(), poller.Query{StartAt: fixedNow.Add(-720 * time.Hour)}, col.fn)
			require.NoError(t, err)
			assert.Equal(t, tt.wantPages, col.numbers())
			assert.Equal(t, tt.wantReqs, st.Requests)
			assert.Equal(t, int64(tt.wantReqs), s.Requests())
			assert.Equal(t, tt.tasks, st.Tasks)
			assert.Equal(t, tt.tasks, st.Total)
			assert.Equal(t, tt.pageSize, st.PageSize)
			assert.False(t, st.PageShift())
			assert.Zero(t, st.Retries)
			assert.Len(t, col.ids, tt.tasks)
			assert.True(t, slices.IsSortedFunc(col.ids, func(a, b int64) int { return int(b - a) }))
			for _, p := range col.pages {
				assert.NotEmpty(t, p.Tasks, "fn is never called with an empty page")
			}
		})
	}
}

// TestClient_SweepPrefetch checks that the next page is fetched while fn
// handles one, and never more than one page ahead.
func TestClient_SweepPrefetch(t *testing.T) {
	s, srv := newSimServer(t, sim.Options{Tasks: 500, Seed: 1})
	c := newClient(t, srv)
	release := make(chan struct{})
	var calls atomic.Int32
	fn := func(ctx context.Context, p *poller.Page) error {
		if calls.Add(1) == 1 {
			<-release
		}
		return nil
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Sweep(context.Background(), poller.Query{}, fn)
		done <- err
	}()
	require.Eventually(t, func() bool { return s.Requests() == 2 }, 5*time.Second, time.Millisecond, "page 2 is fetched while page 1 is handled")
	assert.Never(t, func() bool { return s.Requests() > 2 }, 100*time.Millisecond, 5*time.Millisecond, "at most one page ahead")
	close(release)
	require.NoError(t, <-done)
	assert.Equal(t, int32(5), calls.Load())
	assert.Equal(t, int64(5), s.Requests())
}

// pageRouter sends requests for one page number to a faulty handler and
// the rest to a good one.
func pageRouter(page int, good, bad http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("page") == strconv.Itoa(page) {
			bad.ServeHTTP(w, r)
			return
		}
		good.ServeHTTP(w, r)
	})
}

// TestClient_SweepFailure checks each failure kind on page 2: the sweep ends
// with the typed error and fn saw page 1 only, complete.
func TestClient_SweepFailure(t *testing.T) {
	tests := []struct {
		fault    sim.FaultKind
		kind     poller.ErrorKind
		wantReqs int // with Retries 2
	}{
		{fault: sim.Status401, kind: poller.KindUnauthorized, wantReqs: 2},
		{fault: sim.ErrorEnvelope, kind: poller.KindEnvelope, wantReqs: 2},
		{fault: sim.Status429, kind: poller.KindRateLimited, wantReqs: 4},
		{fault: sim.Status500, kind: poller.KindServer, wantReqs: 4},
		{fault: sim.Status503, kind: poller.KindServer, wantReqs: 4},
		{fault: sim.Truncated, kind: poller.KindDecode, wantReqs: 4},
		{fault: sim.NotJSON, kind: poller.KindDecode, wantReqs: 4},
		{fault: sim.Slow, kind: poller.KindTimeout, wantReqs: 4},
	}
	for _, tt := range tests {
		t.Run(tt.fault.String(), func(t *testing.T) {
			o := sim.Options{Tasks: 300, Seed: 4, Token: token, Location: shanghai, Now: func() time.Time { return fixedNow }}
			good := sim.New(o)
			o.Faults = sim.Faults{Rate: 1, Kinds: []sim.FaultKind{tt.fault}, SlowDelay: 5 * time.Second}
			bad := sim.New(o)
			srv := newServer(t, pageRouter(2, good, bad))
			c := newClient(t, srv, func(cfg *poller.Config) {
				cfg.Retries = 2
				cfg.Timeout = 150 * time.Millisecond
			})
			var col collector
			st, err := c.Sweep(context.Background(), poller.Query{}, col.fn)
			var ae *poller.APIError
			require.ErrorAs(t, err, &ae)
			assert.Equal(t, tt.kind, ae.Kind, err.Error())
			assert.Equal(t, 2, ae.Page)
			assert.NotContains(t, err.Error(), token)
			assert.Equal(t, []int{1}, col.numbers(), "only the complete page 1 was handed on")
			require.Len(t, col.pages, 1)
			assert.Len(t, col.pages[0].Tasks, 100)
			assert.Equal(t, tt.wantReqs, st.Requests)
			assert.Equal(t, tt.wantReqs-2, st.Retries)
			assert.Equal(t, 1, st.Pages)
			assert.Equal(t, int64(tt.wantReqs-1), bad.Requests())
		})
	}
}

// TestClient_SweepRetry checks that transient failures are retried,
// honouring Retry-After, and the sweep then completes.
func TestClient_SweepRetry(t *testing.T) {
	s, _ := newSimServer(t, sim.Options{Tasks: 150, Seed: 1})
	var (
		n     atomic.Int32
		mu    sync.Mutex
		times []time.Time
	)
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		switch n.Add(1) {
		case 2:
			w.WriteHeader(http.StatusBadGateway)
		case 3:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		default:
			s.ServeHTTP(w, r)
		}
	}))
	c := newClient(t, srv)
	var col collector
	st, err := c.Sweep(context.Background(), poller.Query{}, col.fn)
	require.NoError(t, err)
	assert.Equal(t, []int{1, 2}, col.numbers())
	assert.Equal(t, 4, st.Requests)
	assert.Equal(t, 2, st.Retries)
	assert.Equal(t, 150, st.Tasks)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, times, 4)
	assert.GreaterOrEqual(t, times[3].Sub(times[2]), time.Second, "Retry-After honoured")
}

// TestClient_SweepLongRetryAfter checks that a long Retry-After ends the
// sweep at once and still holds back the next request.
func TestClient_SweepLongRetryAfter(t *testing.T) {
	var n atomic.Int32
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	c := newClient(t, srv)
	st, err := c.Sweep(context.Background(), poller.Query{}, func(context.Context, *poller.Page) error { return nil })
	var ae *poller.APIError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, 2*time.Minute, ae.RetryAfter)
	assert.Equal(t, "incsapp: GET /external/tasks page 1: HTTP 429 (retry after 2m0s)", err.Error())
	assert.Equal(t, 1, st.Requests)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = c.List(ctx, poller.Query{})
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, poller.KindTimeout, ae.Kind)
	assert.Equal(t, int32(1), n.Load(), "no request before Retry-After passed")
}

func TestClient_SweepHandlerError(t *testing.T) {
	_, srv := newSimServer(t, sim.Options{Tasks: 300, Seed: 1})
	c := newClient(t, srv)
	boom := errors.New("boom")
	var pages []int
	st, err := c.Sweep(context.Background(), poller.Query{}, func(ctx context.Context, p *poller.Page) error {
		pages = append(pages, p.Number)
		if p.Number == 2 {
			return boom
		}
		return nil
	})
	require.ErrorIs(t, err, boom)
	assert.Equal(t, "incsapp: sweep page 2: boom", err.Error())
	assert.Equal(t, []int{1, 2}, pages)
	assert.Equal(t, 2, st.Pages)
}

func TestClient_SweepCancel(t *testing.T) {
	_, srv := newSimServer(t, sim.Options{Tasks: 300, Seed: 1})
	c := newClient(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var pages int
	_, err := c.Sweep(ctx, poller.Query{}, func(ctx context.Context, p *poller.Page) error {
		pages++
		cancel()
		return nil
	})
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 1, pages)
}

// fakeList serves a list of task ids, newest first, the way the API pages;
// before serving a page it calls shift, which may change the list.
type fakeList struct {
	mu    sync.Mutex
	ids   []int64
	cap   int // largest page served, 0 for 100
	shift func(page int, ids []int64) []int64
}

func (f *fakeList) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	size, _ := strconv.Atoi(r.URL.Query().Get("page_size"))
	if f.cap > 0 {
		size = min(size, f.cap)
	}
	f.mu.Lock()
	if f.shift != nil {
		f.ids = f.shift(page, f.ids)
	}
	ids := f.ids
	f.mu.Unlock()
	var parts []string
	for i := (page - 1) * size; i < min(page*size, len(ids)); i++ {
		parts = append(parts, fmt.Sprintf(`{"id":%d,"status":1,"logs":[{"id":%d,"type":1,"created_at":"2026-04-08 17:22:01"}]}`, ids[i], ids[i]*10))
	}
	fmt.Fprintf(w, `{"status":"success","code":200,"message":"","data":{"total":%d,"data":[%s]},"error":{}}`, len(ids), strings.Join(parts, ","))
}

func idRange(hi, lo int64) []int64 {
	var out []int64
	for id := hi; id >= lo; id-- {
		out = append(out, id)
	}
	return out
}

func TestClient_SweepPageShift(t *testing.T) {
	tests := []struct {
		name        string
		shift       func(page int, ids []int64) []int64
		wantChanged bool
		wantDups    int
		wantTasks   int
	}{
		{name: "stable", wantTasks: 250},
		{name: "new tasks push the list down", wantChanged: true, wantDups: 5, wantTasks: 255,
			shift: func(page int, ids []int64) []int64 {
				if page == 2 {
					return append(idRange(255, 251), ids...)
				}
				return ids
			}},
		{name: "deleted tasks pull the list up", wantChanged: true, wantTasks: 240,
			shift: func(page int, ids []int64) []int64 {
				if page == 2 {
					return slices.Delete(slices.Clone(ids), 10, 20)
				}
				return ids
			}},
		{name: "a task repeated without a count change", wantDups: 1, wantTasks: 250,
			shift: func(page int, ids []int64) []int64 {
				if page == 2 {
					// Task 200 moved from page 1 to the top of page 2.
					out := slices.DeleteFunc(slices.Clone(ids), func(id int64) bool { return id == 200 })
					return slices.Insert(out, 100, 200)
				}
				return ids
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, &fakeList{ids: idRange(250, 1), shift: tt.shift})
			var col collector
			st, err := newClient(t, srv).Sweep(context.Background(), poller.Query{}, col.fn)
			require.NoError(t, err)
			assert.Equal(t, tt.wantChanged, st.TotalChanged)
			assert.Equal(t, tt.wantDups, st.Duplicates)
			assert.Equal(t, tt.wantChanged || tt.wantDups > 0, st.PageShift())
			assert.Equal(t, tt.wantTasks, st.Tasks)
		})
	}
}

// TestClient_SweepCappedPageSize checks a sweep against an API that serves
// smaller pages than asked: it must not stop after the first page.
func TestClient_SweepCappedPageSize(t *testing.T) {
	srv := newServer(t, &fakeList{ids: idRange(120, 1), cap: 50})
	var col collector
	st, err := newClient(t, srv).Sweep(context.Background(), poller.Query{}, col.fn)
	require.NoError(t, err)
	assert.Equal(t, []int{1, 2, 3}, col.numbers())
	assert.Equal(t, idRange(120, 1), col.ids)
	assert.Equal(t, 50, st.PageSize)
}

// BenchmarkClient_Sweep sweeps a simulated API of 20,000 tasks (~80,000
// logs) at 100 tasks per page, with no rate limit, over loopback HTTP.
func BenchmarkClient_Sweep(b *testing.B) {
	s, srv := newSimServer(b, sim.Options{Tasks: 20000, Seed: 1})
	c := newClient(b, srv)
	q := poller.Query{StartAt: fixedNow.Add(-720 * time.Hour)}
	var logs int
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		logs = 0
		st, err := c.Sweep(context.Background(), q, func(ctx context.Context, p *poller.Page) error {
			for i := range p.Tasks {
				logs += len(p.Tasks[i].Logs)
			}
			return nil
		})
		if err != nil || st.Tasks != 20000 || st.Requests != 200 {
			b.Fatalf("sweep: %+v %v", st, err)
		}
	}
	b.StopTimer()
	if logs != len(s.Logs()) {
		b.Fatalf("%d logs, want %d", logs, len(s.Logs()))
	}
	b.ReportMetric(float64(logs), "logs/sweep")
}

// cancelSkipper holds the fetcher on the last head of page 2 (the page
// read whole) until fn cancelled the sweep, and then a little longer, so
// that the fetcher offers page 2 while the sweep already waits for it:
// both of the fetcher's select cases are ready.
type cancelSkipper struct {
	n        int
	atLast   chan struct{} // closed on page 2's last head
	canceled chan struct{} // closed by fn once it cancelled
}

func (s *cancelSkipper) Unchanged(*poller.TaskHead) bool {
	s.n++
	if s.n == 200 {
		close(s.atLast)
		<-s.canceled
		time.Sleep(5 * time.Millisecond)
	}
	return false
}

// TestClient_SweepNoPageAfterCancel: once fn cancelled the sweep's ctx,
// fn is not called again, even with the next page fetched and offered at
// that moment (before the fix, fn got page 2 in about half the rounds).
func TestClient_SweepNoPageAfterCancel(t *testing.T) {
	_, srv := newSimServer(t, sim.Options{Tasks: 300, Seed: 1})
	c := newClient(t, srv)
	for range 10 {
		ctx, cancel := context.WithCancel(context.Background())
		skip := &cancelSkipper{atLast: make(chan struct{}), canceled: make(chan struct{})}
		var pages []int
		_, err := c.SweepSkip(ctx, poller.Query{}, skip, func(ctx context.Context, p *poller.Page) error {
			pages = append(pages, p.Number)
			if p.Number == 1 {
				<-skip.atLast
				cancel()
				close(skip.canceled)
			}
			return nil
		})
		cancel()
		require.ErrorIs(t, err, context.Canceled)
		require.Equal(t, []int{1}, pages, "fn called after the sweep was cancelled")
	}
}
