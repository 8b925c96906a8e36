package sim_test

// Tests of serving (server.go): the envelope, extra members, auth, the
// filters and their index, pagination, bad requests and wall-clock
// filtering; and a benchmark of serving a page.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/poller/sim"
)

func TestSim_Envelope(t *testing.T) {
	s := newSim(t, sim.Options{Tasks: 30, Seed: 1})
	rec := get(s, "page_size=5")
	require.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "application/json; charset=utf-8", rec.Header().Get("Content-Type"))
	body := rec.Body.Bytes()
	assert.True(t, utf8.Valid(body))

	var top map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(body, &top))
	assert.ElementsMatch(t, []string{"status", "code", "message", "data", "error"}, keys(top))
	assert.JSONEq(t, `{}`, string(top["error"]))
	assert.JSONEq(t, `""`, string(top["message"]))
	var data map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(top["data"], &data))
	assert.ElementsMatch(t, []string{"total", "data"}, keys(data))
	assert.JSONEq(t, `30`, string(data["total"]))

	var tasks []map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(data["data"], &tasks))
	require.Len(t, tasks, 5)
	taskKeys := []string{"id", "creation_id", "auth_id", "name", "description", "type", "user_name", "user_phone",
		"assignee_username", "status", "created_at", "updated_at", "logs"}
	logKeys := []string{"id", "type", "status", "pre_status", "assignee_username", "comment", "created_at", "updated_at"}
	for _, task := range tasks {
		assert.ElementsMatch(t, taskKeys, keys(task))
		var logs []map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(task["logs"], &logs))
		require.NotEmpty(t, logs)
		for _, l := range logs {
			assert.ElementsMatch(t, logKeys, keys(l))
		}
	}
	// The first member is "status", as on the vendor page.
	assert.True(t, bytes.HasPrefix(body, []byte(`{"status":"success","code":200,"message":"","data":{"total":30,"data":[{"id":30,`)))

	// Non-ASCII text appears somewhere in a world of this size.
	full := list(t, s, "page_size=100")
	var nonASCII bool
	for _, task := range full.Data {
		if hasNonASCII(task.Name + task.Description + task.UserName) {
			nonASCII = true
		}
		for _, l := range task.Logs {
			if hasNonASCII(l.Comment) {
				nonASCII = true
			}
		}
	}
	assert.True(t, nonASCII)
}

func TestSim_Extra(t *testing.T) {
	s := newSim(t, sim.Options{Tasks: 3, Seed: 1, Extra: true})
	rec := get(s, "")
	require.Equal(t, http.StatusOK, rec.Code)
	assert.Contains(t, rec.Body.String(), `"priority":`)
	assert.Contains(t, rec.Body.String(), `"source":"web"`)
}

func hasNonASCII(s string) bool {
	for _, r := range s {
		if r > 127 {
			return true
		}
	}
	return false
}

func keys(m map[string]json.RawMessage) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestSim_Auth(t *testing.T) {
	s := newSim(t, sim.Options{Tasks: 1, Seed: 1})
	tests := []struct {
		name   string
		header string
		want   int
	}{
		{name: "right", header: "Bearer " + token, want: http.StatusOK},
		{name: "wrong", header: "Bearer nope", want: http.StatusUnauthorized},
		{name: "no scheme", header: token, want: http.StatusUnauthorized},
		{name: "missing", header: "", want: http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := get(s, "", "Authorization", tt.header)
			assert.Equal(t, tt.want, rec.Code)
			if tt.want != http.StatusOK {
				var env envelope
				require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &env))
				assert.Equal(t, "error", env.Status)
				assert.Equal(t, 401, env.Code)
				assert.NotContains(t, rec.Body.String(), token)
			}
		})
	}

	open := sim.New(sim.Options{Tasks: 1, Seed: 1})
	rec := httptest.NewRecorder()
	open.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, poller.TasksPath, nil))
	assert.Equal(t, http.StatusOK, rec.Code, "empty Token accepts any request")
}

func TestSim_Filters(t *testing.T) {
	t.Run("in order", func(t *testing.T) {
		s := newSim(t, sim.Options{Tasks: 400, Seed: 7})
		s.Step(200)
		testFilters(t, s)
	})
	t.Run("clock went back", func(t *testing.T) {
		// New tasks created before older ones: ids no longer follow
		// creation time, so time filters cannot rely on id order.
		now := fixedNow
		s := newSim(t, sim.Options{Tasks: 400, Seed: 7, Now: func() time.Time { return now }})
		now = fixedNow.Add(-10 * 24 * time.Hour)
		s.Step(200)
		testFilters(t, s)
	})
}

func testFilters(t *testing.T, s *sim.Sim) {
	every := all(t, s, "")
	require.Greater(t, len(every), 400)
	pick := every[len(every)/2]
	created := func(task diff.Task) time.Time {
		ts, err := diff.ParseTime(task.CreatedAt, shanghai)
		require.NoError(t, err)
		return ts
	}
	startAt := created(every[len(every)/3])
	endAt := created(every[len(every)/4])
	name := strings.Fields(pick.Name)[0]

	tests := []struct {
		name  string
		query url.Values
		keep  func(diff.Task) bool
	}{
		{name: "task_id", query: url.Values{"task_id": {fmt.Sprint(pick.ID)}}, keep: func(x diff.Task) bool { return x.ID == pick.ID }},
		{name: "creation_id", query: url.Values{"creation_id": {fmt.Sprint(pick.CreationID)}}, keep: func(x diff.Task) bool { return x.CreationID == pick.CreationID }},
		{name: "type", query: url.Values{"type": {"3"}}, keep: func(x diff.Task) bool { return x.Type == 3 }},
		{name: "status 0", query: url.Values{"status": {"0"}}, keep: func(x diff.Task) bool { return x.Status == 0 }},
		{name: "status 2", query: url.Values{"status": {"2"}}, keep: func(x diff.Task) bool { return x.Status == 2 }},
		{name: "name substring", query: url.Values{"name": {name}}, keep: func(x diff.Task) bool { return strings.Contains(x.Name, name) }},
		{name: "start_at inclusive", query: url.Values{"start_at": {startAt.Format(diff.TimeLayout)}}, keep: func(x diff.Task) bool { return !created(x).Before(startAt) }},
		{name: "end_at inclusive", query: url.Values{"end_at": {endAt.Format(diff.TimeLayout)}}, keep: func(x diff.Task) bool { return !created(x).After(endAt) }},
		{name: "range and status", query: url.Values{"start_at": {startAt.Format(diff.TimeLayout)}, "end_at": {endAt.Format(diff.TimeLayout)}, "status": {"1"}},
			keep: func(x diff.Task) bool {
				return !created(x).Before(startAt) && !created(x).After(endAt) && x.Status == 1
			}},
		{name: "no match", query: url.Values{"task_id": {"999999"}}, keep: func(diff.Task) bool { return false }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := []int64{}
			for _, x := range every {
				if tt.keep(x) {
					want = append(want, x.ID)
				}
			}
			if tt.name != "no match" {
				require.NotEmpty(t, want)
			}
			got := ids(all(t, s, tt.query.Encode()))
			assert.Equal(t, want, got)
		})
	}
}

func TestSim_Pagination(t *testing.T) {
	s := newSim(t, sim.Options{Tasks: 250, Seed: 3})
	tests := []struct {
		name      string
		query     string
		wantLen   int
		wantFirst int64
	}{
		{name: "defaults", query: "", wantLen: 20, wantFirst: 250},
		{name: "page 2 default size", query: "page=2", wantLen: 20, wantFirst: 230},
		{name: "page 0 is page 1", query: "page=0", wantLen: 20, wantFirst: 250},
		{name: "size capped at 100", query: "page_size=500", wantLen: 100, wantFirst: 250},
		{name: "size 0 is default", query: "page_size=0", wantLen: 20, wantFirst: 250},
		{name: "last partial page", query: "page=3&page_size=100", wantLen: 50, wantFirst: 50},
		{name: "past the end", query: "page=9&page_size=100", wantLen: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pd := list(t, s, tt.query)
			assert.Equal(t, 250, pd.Total)
			require.Len(t, pd.Data, tt.wantLen)
			if tt.wantLen > 0 {
				assert.Equal(t, tt.wantFirst, pd.Data[0].ID)
			}
		})
	}

	got := ids(all(t, s, ""))
	assert.True(t, slices.IsSortedFunc(got, func(a, b int64) int { return int(b - a) }), "IDDesc")
	assert.Len(t, got, 250)
	assert.Len(t, slices.Compact(slices.Clone(got)), 250, "no duplicates")

	asc := newSim(t, sim.Options{Tasks: 250, Seed: 3, Order: sim.IDAsc})
	assert.True(t, slices.IsSorted(ids(all(t, asc, ""))), "IDAsc")

	upd := newSim(t, sim.Options{Tasks: 250, Seed: 3, Order: sim.UpdatedDesc})
	upd.Step(50)
	tasks := all(t, upd, "")
	assert.True(t, slices.IsSortedFunc(tasks, func(a, b diff.Task) int { return strings.Compare(b.UpdatedAt, a.UpdatedAt) }), "UpdatedDesc")
}

func TestSim_BadRequest(t *testing.T) {
	s := newSim(t, sim.Options{Tasks: 1, Seed: 1})
	for _, q := range []string{"task_id=abc", "page=x", "status=1.5", "start_at=2026-04-07", "end_at=yesterday"} {
		t.Run(q, func(t *testing.T) {
			rec := get(s, q)
			assert.Equal(t, http.StatusBadRequest, rec.Code)
			var env envelope
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &env))
			assert.Equal(t, 400, env.Code)
		})
	}
	req := httptest.NewRequest(http.MethodGet, "/other", nil)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	assert.Equal(t, http.StatusNotFound, rec.Code)
	req = httptest.NewRequest(http.MethodPost, poller.TasksPath, nil)
	rec = httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	assert.Equal(t, http.StatusMethodNotAllowed, rec.Code)
}

// TestSim_StatusIndex checks that status filters, served from an index,
// keep matching the tasks' statuses through random and arbitrary status
// changes, in every order.
func TestSim_StatusIndex(t *testing.T) {
	for _, order := range []sim.Order{sim.IDDesc, sim.IDAsc, sim.UpdatedDesc} {
		s := newSim(t, sim.Options{Tasks: 300, Seed: 9, Order: order})
		s.Step(300)
		for id := int64(1); id <= 300; id += 7 {
			require.True(t, s.SetStatus(id, int(id%4)))
		}
		every := all(t, s, "")
		for status := range 4 {
			var want []int64
			for _, task := range every {
				if task.Status == status {
					want = append(want, task.ID)
				}
			}
			got := ids(all(t, s, fmt.Sprintf("status=%d", status)))
			assert.Equal(t, want, got, "order %d status %d", order, status)
		}
	}
}

// TestSim_WallClockFilter checks that start_at and end_at compare
// wall-clock times, also in a zone that repeats an hour.
func TestSim_WallClockFilter(t *testing.T) {
	ny := mustLoad("America/New_York")
	now := time.Date(2026, 11, 1, 1, 20, 0, 0, ny) // first pass of the repeated hour
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := newSim(t, sim.Options{Tasks: 50, Seed: 3, Now: clock, Location: ny})
	first := s.NewTask()
	mu.Lock()
	now = now.Add(time.Hour) // 01:20 again, an hour later
	mu.Unlock()
	second := s.NewTask()
	for _, id := range []int64{first, second} {
		task := all(t, s, fmt.Sprintf("task_id=%d", id))
		require.Len(t, task, 1)
		assert.Equal(t, "2026-11-01 01:20:00", task[0].CreatedAt)
	}
	got := ids(all(t, s, url.Values{"start_at": {"2026-11-01 01:20:00"}}.Encode()))
	assert.Equal(t, []int64{second, first}, got)
	got = ids(all(t, s, url.Values{"start_at": {"2026-11-01 01:00:00"}, "end_at": {"2026-11-01 01:19:59"}}.Encode()))
	assert.Empty(t, got)
}

// BenchmarkSim_ServePage serves 100-task pages of a 20,000-task world, the
// way a sweep asks for them.
func BenchmarkSim_ServePage(b *testing.B) {
	s := newSim(b, sim.Options{Tasks: 20000, Seed: 1})
	require.GreaterOrEqual(b, len(s.Logs()), 70000)
	start := fixedNow.Add(-720 * time.Hour).Format(diff.TimeLayout)
	reqs := make([]*http.Request, 200)
	for i := range reqs {
		q := url.Values{"start_at": {start}, "page": {fmt.Sprint(i + 1)}, "page_size": {"100"}}
		reqs[i] = httptest.NewRequest(http.MethodGet, poller.TasksPath+"?"+q.Encode(), nil)
		reqs[i].Header.Set("Authorization", "Bearer "+token)
	}
	w := &discard{h: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		w.n = 0
		s.ServeHTTP(w, reqs[i%len(reqs)])
		if w.code != http.StatusOK {
			b.Fatalf("status %d", w.code)
		}
	}
	b.SetBytes(int64(w.n))
}

type discard struct {
	h    http.Header
	code int
	n    int
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) WriteHeader(code int)        { d.code = code }
func (d *discard) Write(p []byte) (int, error) { d.n += len(p); return len(p), nil }
