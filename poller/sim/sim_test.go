package sim_test

// Tests of the simulator: the envelope, auth, filters, pagination, faults,
// changes and their indexes, and determinism.

import (
	"bytes"
	"context"
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
	"go.uber.org/goleak"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/poller/sim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "tok-sim-test"

var (
	shanghai = mustLoad("Asia/Shanghai")
	fixedNow = time.Date(2026, 4, 8, 17, 30, 0, 0, shanghai)
)

func mustLoad(name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		return time.FixedZone("CST", 8*3600)
	}
	return loc
}

func newSim(t testing.TB, o sim.Options) *sim.Sim {
	t.Helper()
	if o.Token == "" {
		o.Token = token
	}
	if o.Now == nil {
		o.Now = func() time.Time { return fixedNow }
	}
	if o.Location == nil {
		o.Location = shanghai
	}
	return sim.New(o)
}

type envelope struct {
	Status  string          `json:"status"`
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
	Error   json.RawMessage `json:"error"`
}

type pageData struct {
	Total int         `json:"total"`
	Data  []diff.Task `json:"data"`
}

// get serves one request for the query string q and returns the recorder.
func get(s *sim.Sim, q string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, poller.TasksPath+"?"+q, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec
}

// list serves q and decodes a successful page.
func list(t testing.TB, s *sim.Sim, q string) pageData {
	t.Helper()
	rec := get(s, q)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	var env envelope
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &env))
	require.Equal(t, "success", env.Status)
	require.Equal(t, 200, env.Code)
	var pd pageData
	require.NoError(t, json.Unmarshal(env.Data, &pd))
	return pd
}

// all pages through q at page_size 100 and returns every task.
func all(t testing.TB, s *sim.Sim, q string) []diff.Task {
	t.Helper()
	var out []diff.Task
	for page := 1; page <= 1000; page++ {
		pd := list(t, s, fmt.Sprintf("%s&page=%d&page_size=100", q, page))
		out = append(out, pd.Data...)
		if len(pd.Data) < 100 {
			require.Len(t, out, pd.Total)
			return out
		}
	}
	t.Fatal("too many pages")
	return nil
}

func ids(ts []diff.Task) []int64 {
	out := make([]int64, len(ts), len(ts)+1)
	for i := range ts {
		out[i] = ts[i].ID
	}
	return out
}

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

func TestSim_FaultKinds(t *testing.T) {
	tests := []struct {
		kind       sim.FaultKind
		wantStatus int
		check      func(t *testing.T, rec *httptest.ResponseRecorder)
	}{
		{kind: sim.Status401, wantStatus: 401},
		{kind: sim.Status429, wantStatus: 429, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			assert.Empty(t, rec.Header().Get("Retry-After"))
		}},
		{kind: sim.Status429RetryAfter, wantStatus: 429, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			assert.Equal(t, "1", rec.Header().Get("Retry-After"))
		}},
		{kind: sim.Status500, wantStatus: 500},
		{kind: sim.Status503, wantStatus: 503, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			assert.Contains(t, rec.Body.String(), "<html>")
		}},
		{kind: sim.ErrorEnvelope, wantStatus: 200, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			var env envelope
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &env))
			assert.True(t, env.Status != "success" || env.Code != 200, rec.Body.String())
		}},
		{kind: sim.Truncated, wantStatus: 200, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			assert.False(t, json.Valid(rec.Body.Bytes()))
			assert.True(t, strings.HasPrefix(rec.Body.String(), `{"status":"success"`))
		}},
		{kind: sim.NotJSON, wantStatus: 200, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			assert.False(t, json.Valid(rec.Body.Bytes()))
			assert.Equal(t, "text/html", rec.Header().Get("Content-Type"))
		}},
		{kind: sim.Slow, wantStatus: 200, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			assert.True(t, json.Valid(rec.Body.Bytes()))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.kind.String(), func(t *testing.T) {
			s := newSim(t, sim.Options{Tasks: 10, Seed: 1, Faults: sim.Faults{Rate: 1, Kinds: []sim.FaultKind{tt.kind}, SlowDelay: 20 * time.Millisecond}})
			start := time.Now()
			rec := get(s, "")
			assert.Equal(t, tt.wantStatus, rec.Code)
			if tt.kind == sim.Slow {
				assert.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond)
			}
			if tt.check != nil {
				tt.check(t, rec)
			}
		})
	}
}

func TestSim_FaultRate(t *testing.T) {
	s := newSim(t, sim.Options{Tasks: 5, Seed: 11, Faults: sim.Faults{Rate: 0.3, Kinds: []sim.FaultKind{sim.Status500, sim.Status429}}})
	const n = 2000
	counts := map[int]int{}
	for range n {
		counts[get(s, "").Code]++
	}
	failed := counts[500] + counts[429]
	assert.Equal(t, n, counts[200]+failed, "only the chosen kinds: %v", counts)
	assert.InDelta(t, 0.3, float64(failed)/n, 0.04)
	assert.InDelta(t, counts[500], counts[429], n*0.06, "kinds picked evenly")
	assert.Equal(t, int64(n), s.Requests())

	s.SetFaults(sim.Faults{})
	for range 50 {
		assert.Equal(t, http.StatusOK, get(s, "").Code)
	}
}

// TestSim_Step checks the world's invariants after many changes against
// what the API serves and what Logs reports.
func TestSim_Step(t *testing.T) {
	now := fixedNow
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := newSim(t, sim.Options{Tasks: 300, Seed: 5, Now: clock})
	before := len(s.Logs())
	for i := range 20 {
		mu.Lock()
		now = now.Add(time.Duration(i%3) * time.Second) // sometimes several steps in one second
		mu.Unlock()
		s.Step(40)
	}
	truth := s.Logs()
	require.Greater(t, len(truth), before)

	// Log ids are global and increasing.
	for i := 1; i < len(truth); i++ {
		require.Greater(t, truth[i].LogID, truth[i-1].LogID)
	}

	served := map[int64]diff.Log{}
	taskOf := map[int64]int64{}
	types := map[int]int{}
	tasks := all(t, s, "")
	assert.True(t, slices.IsSortedFunc(ids(tasks), func(a, b int64) int { return int(b - a) }))
	for _, task := range tasks {
		require.NotEmpty(t, task.Logs, "task %d", task.ID)
		assert.Equal(t, diff.LogCreated, task.Logs[0].Type, "task %d starts with a created log", task.ID)
		assert.Equal(t, task.CreatedAt, task.Logs[0].CreatedAt)
		status, assignee := 0, ""
		for i, l := range task.Logs {
			served[l.ID] = l
			taskOf[l.ID] = task.ID
			types[l.Type]++
			ts, err := diff.ParseTime(l.CreatedAt, shanghai)
			require.NoError(t, err)
			assert.False(t, ts.After(now), "log %d in the future", l.ID)
			if i > 0 {
				assert.Greater(t, l.ID, task.Logs[i-1].ID)
				assert.GreaterOrEqual(t, l.CreatedAt, task.Logs[i-1].CreatedAt, "task %d log %d", task.ID, l.ID)
			}
			switch l.Type {
			case diff.LogCreated:
				assert.Zero(t, i)
			case diff.LogAssigned:
				assert.NotEmpty(t, l.AssigneeUsername)
				assert.NotEqual(t, assignee, l.AssigneeUsername)
				assignee = l.AssigneeUsername
			case diff.LogStatusChanged:
				assert.Equal(t, status, l.PreStatus, "task %d log %d", task.ID, l.ID)
				valid := map[[2]int]bool{{0, 1}: true, {0, 3}: true, {1, 2}: true, {1, 3}: true}
				assert.True(t, valid[[2]int{l.PreStatus, l.Status}], "transition %d→%d", l.PreStatus, l.Status)
				status = l.Status
			case diff.LogCommented:
				assert.NotEmpty(t, l.Comment)
			case sim.LogUnknown:
			default:
				t.Errorf("task %d log %d: type %d", task.ID, l.ID, l.Type)
			}
			if l.Type != diff.LogCreated {
				assert.Equal(t, status, l.Status, "log %d carries the status", l.ID)
			}
		}
		assert.Equal(t, status, task.Status, "task %d status", task.ID)
		assert.Equal(t, assignee, task.AssigneeUsername, "task %d assignee", task.ID)
		assert.GreaterOrEqual(t, task.UpdatedAt, task.Logs[len(task.Logs)-1].CreatedAt)
	}
	require.Len(t, served, len(truth))
	for _, ref := range truth {
		l, ok := served[ref.LogID]
		require.True(t, ok, "log %d", ref.LogID)
		assert.Equal(t, ref.TaskID, taskOf[ref.LogID])
		assert.Equal(t, ref.Type, l.Type)
		assert.Equal(t, ref.CreatedAt, l.CreatedAt)
		assert.Equal(t, ref.PreStatus, l.PreStatus, "log %d", ref.LogID)
	}
	for _, typ := range []int{1, 2, 3, 4, sim.LogUnknown} {
		assert.Positive(t, types[typ], "log type %d occurs", typ)
	}
	var open int
	for _, task := range tasks {
		if task.Status <= 1 {
			open++
		}
	}
	assert.InDelta(t, 0.3, float64(open)/float64(len(tasks)), 0.15, "open fraction")
}

func TestSim_Deterministic(t *testing.T) {
	a := newSim(t, sim.Options{Tasks: 200, Seed: 42})
	b := newSim(t, sim.Options{Tasks: 200, Seed: 42})
	c := newSim(t, sim.Options{Tasks: 200, Seed: 43})
	a.Step(100)
	b.Step(100)
	c.Step(100)
	// Requests and faults do not change the world.
	b.SetFaults(sim.Faults{Rate: 0.5, Kinds: []sim.FaultKind{sim.Status500}})
	for range 10 {
		get(b, "")
	}
	b.SetFaults(sim.Faults{})
	for _, q := range []string{"page_size=100", "page=2&page_size=100", "page=3&page_size=100"} {
		assert.Equal(t, get(a, q).Body.String(), get(b, q).Body.String())
	}
	assert.Equal(t, a.Logs(), b.Logs())
	assert.NotEqual(t, get(a, "page_size=100").Body.String(), get(c, "page_size=100").Body.String())
}

func TestSim_Concurrent(t *testing.T) {
	s := newSim(t, sim.Options{Tasks: 200, Seed: 9, Order: sim.UpdatedDesc})
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 30 {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s%s?page=%d&page_size=50", srv.URL, poller.TasksPath, i%5+1), nil)
				if !assert.NoError(t, err) {
					return
				}
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := srv.Client().Do(req)
				if !assert.NoError(t, err) {
					return
				}
				var env envelope
				assert.NoError(t, json.NewDecoder(resp.Body).Decode(&env), "goroutine %d", g)
				resp.Body.Close()
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			s.Step(5)
			s.SetFaults(sim.Faults{})
			_ = s.Logs()
		}
	})
	wg.Wait()
	assert.Equal(t, int64(120), s.Requests())
}

func TestSim_Run(t *testing.T) {
	s := sim.New(sim.Options{Token: token, Tasks: 10, Seed: 2, Tick: 5 * time.Millisecond, ChangesPerTick: 3})
	before := len(s.Logs())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	require.Eventually(t, func() bool { return len(s.Logs()) >= before+10 }, 5*time.Second, 5*time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
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

// TestSim_Mutations checks the targeted changes tests make: each adds the
// log the API would, with the task's status before it.
func TestSim_Mutations(t *testing.T) {
	now := fixedNow
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := newSim(t, sim.Options{Tasks: 200, Seed: 5, Now: clock})
	n := s.LogCount()
	require.Len(t, s.Logs(), n)
	assert.Nil(t, s.LogsFrom(n))

	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	id := s.NewTask()
	assert.Equal(t, int64(201), id)
	st, ok := s.TaskStatus(id)
	require.True(t, ok)
	assert.Equal(t, diff.StatusNotStarted, st)
	require.True(t, s.SetStatus(id, diff.StatusInProgress))
	require.True(t, s.SetStatus(id, diff.StatusCompleted))
	require.True(t, s.Comment(id))
	require.True(t, s.SetStatus(id, diff.StatusInProgress), "reopened, as an API might")
	assert.False(t, s.SetStatus(id, 7))
	assert.False(t, s.SetStatus(999, 1))
	assert.False(t, s.Comment(999))
	_, ok = s.TaskStatus(999)
	assert.False(t, ok)

	logs := s.LogsFrom(n)
	require.Len(t, logs, 5)
	wantTypes := []int{diff.LogCreated, diff.LogStatusChanged, diff.LogStatusChanged, diff.LogCommented, diff.LogStatusChanged}
	wantPre := []int{0, 0, 1, 2, 2}
	for i, l := range logs {
		assert.Equal(t, id, l.TaskID)
		assert.Equal(t, wantTypes[i], l.Type, "log %d", i)
		assert.Equal(t, wantPre[i], l.PreStatus, "log %d", i)
		assert.Equal(t, "2026-04-08 17:31:00", l.CreatedAt)
	}
	task := all(t, s, "task_id=201")
	require.Len(t, task, 1)
	assert.Equal(t, diff.StatusInProgress, task[0].Status)
	assert.Len(t, task[0].Logs, 5)

	n = s.LogCount()
	s.StepFinished(10)
	for _, l := range s.LogsFrom(n) {
		assert.Equal(t, diff.LogCommented, l.Type)
		assert.GreaterOrEqual(t, l.PreStatus, diff.StatusCompleted, "a comment on a finished task")
		st, _ := s.TaskStatus(l.TaskID)
		assert.GreaterOrEqual(t, st, diff.StatusCompleted)
	}
	assert.Len(t, s.LogsFrom(n), 10)
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
