package poller_test

// Tests of the Client's single requests (client.go, query.go): the query
// string, decoding, error kinds, Retry-After and the rate limit; and the
// test servers and configs the other tests share.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/poller/sim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// token is long and unusual so that a leak into any text is unmistakable.
const token = "secret-token-a06b3b2d7f762"

var (
	shanghai = poller.DefaultLocation()
	fixedNow = time.Date(2026, 4, 8, 17, 30, 0, 0, shanghai)
)

func newServer(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// newSimServer serves a simulated API with a fixed clock.
func newSimServer(t testing.TB, o sim.Options) (*sim.Sim, *httptest.Server) {
	t.Helper()
	o.Token = token
	o.Location = shanghai
	if o.Now == nil {
		o.Now = func() time.Time { return fixedNow }
	}
	s := sim.New(o)
	return s, newServer(t, s)
}

func testConfig(srv *httptest.Server) poller.Config {
	return poller.Config{
		BaseURL:    srv.URL,
		Token:      token,
		Location:   shanghai,
		RateLimit:  -1,
		Timeout:    2 * time.Second,
		RetryWait:  time.Millisecond,
		HTTPClient: srv.Client(),
		Now:        func() time.Time { return fixedNow },
	}
}

func newClient(t testing.TB, srv *httptest.Server, mods ...func(*poller.Config)) *poller.Client {
	t.Helper()
	cfg := testConfig(srv)
	for _, m := range mods {
		m(&cfg)
	}
	return poller.NewClient(cfg, zerolog.New(zerolog.NewTestWriter(t)))
}

// TestClient_KeptBodiesNotReused: pages whose every task changed keep
// their body (decodePageSkip); the next requests read into other buffers,
// so the tasks of a page handed over stay as decoded, whatever is
// fetched after it.
func TestClient_KeptBodiesNotReused(t *testing.T) {
	_, srv := newSimServer(t, sim.Options{Tasks: 300, Seed: 1})
	c := newClient(t, srv)
	ctx := context.Background()
	var pages []*poller.Page
	var raws [][]string
	for n := 1; n <= 3; n++ {
		for range 2 { // each page twice: a reused buffer would overwrite the first
			p, err := c.ListSkip(ctx, poller.Query{Page: n}, never{})
			require.NoError(t, err)
			require.Len(t, p.Tasks, 100)
			var r []string
			for i := range p.Tasks {
				r = append(r, string(p.Tasks[i].Raw))
			}
			pages, raws = append(pages, p), append(raws, r)
		}
	}
	for k, p := range pages {
		for i := range p.Tasks {
			require.Equal(t, raws[k][i], string(p.Tasks[i].Raw), "page %d task %d", p.Number, i)
			require.Contains(t, raws[k][i], fmt.Sprintf(`"id":%d,`, p.Tasks[i].ID))
		}
	}
}

func TestClient_List(t *testing.T) {
	s, srv := newSimServer(t, sim.Options{Tasks: 150, Seed: 1})
	c := newClient(t, srv)
	p, err := c.List(context.Background(), poller.Query{Page: 2})
	require.NoError(t, err)
	assert.Equal(t, 150, p.Total)
	assert.Equal(t, 2, p.Number)
	assert.Equal(t, 100, p.Size)
	require.Len(t, p.Tasks, 50)
	assert.Equal(t, int64(50), p.Tasks[0].ID)

	var logs int
	for _, task := range p.Tasks {
		assert.True(t, json.Valid(task.Raw))
		assert.NotEmpty(t, task.CreatedAt)
		for _, l := range task.Logs {
			assert.True(t, json.Valid(l.Raw))
			logs++
		}
	}
	var want int
	for _, ref := range s.Logs() {
		if ref.TaskID <= 50 {
			want++
		}
	}
	assert.Equal(t, want, logs)
}

func TestClient_ListRequest(t *testing.T) {
	var (
		mu   sync.Mutex
		seen *http.Request
	)
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = r.Clone(context.Background())
		mu.Unlock()
		fmt.Fprint(w, `{"status":"success","code":200,"message":"","data":{"total":0,"data":[]},"error":{}}`)
	}))
	c := newClient(t, srv)
	q := poller.Query{
		TaskID:     new(int64(237)),
		CreationID: new(int64(104)),
		Type:       new(3),
		Status:     new(0), // zero is a real status and must be sent
		Name:       "客户 回访+1",
		StartAt:    time.Date(2026, 4, 7, 9, 0, 0, 0, time.UTC),
		EndAt:      time.Date(2026, 4, 7, 10, 0, 0, 0, time.UTC),
		Page:       3,
		PageSize:   500,
	}
	_, err := c.List(context.Background(), q)
	require.NoError(t, err)

	last := func() *http.Request {
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
	got := last()
	assert.Equal(t, http.MethodGet, got.Method)
	assert.Equal(t, "/external/tasks", got.URL.Path)
	assert.Equal(t, "application/json", got.Header.Get("Content-Type"))
	assert.Equal(t, "Bearer "+token, got.Header.Get("Authorization"))
	assert.NotContains(t, got.URL.RawQuery, "+", "spaces are sent as %20")
	assert.Equal(t, url.Values{
		"task_id":     {"237"},
		"creation_id": {"104"},
		"type":        {"3"},
		"status":      {"0"},
		"name":        {"客户 回访+1"},
		"start_at":    {"2026-04-07 17:00:00"},
		"end_at":      {"2026-04-07 18:00:00"},
		"page":        {"3"},
		"page_size":   {"100"},
	}, got.URL.Query())

	_, err = c.List(context.Background(), poller.Query{})
	require.NoError(t, err)
	assert.Equal(t, url.Values{"page": {"1"}, "page_size": {"100"}}, last().URL.Query(), "zero values are omitted")
}

func TestClient_ListDecodesUnknown(t *testing.T) {
	const body = `{"status":"success","code":200,"message":"","trace_id":"abc",
	"data":{"total":1,"cursor":null,"data":[{"id":237,"creation_id":104,"auth_id":30058,"name":"4.8",
	"description":"1111","type":3,"user_name":"Erin","user_phone":"6281519140316",
	"assignee_username":"incs_1","status":3,"created_at":"2026-04-08 17:22:01","updated_at":"2026-04-08 17:28:54",
	"priority":{"level":2,"tags":["紧急"]},
	"logs":[{"id":531,"type":1,"status":0,"pre_status":0,"assignee_username":"","comment":"","created_at":"2026-04-08 17:22:01","updated_at":"2026-04-08 17:22:01"},
	{"id":535,"type":9,"status":3,"pre_status":3,"assignee_username":"incs_1","comment":"系统同步 🗂️","created_at":"2026-04-08 17:28:54","updated_at":"2026-04-08 17:28:54","source":{"app":"crm"}}]}]},
	"error":{}}`
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, body) }))
	p, err := newClient(t, srv).List(context.Background(), poller.Query{})
	require.NoError(t, err)
	require.Len(t, p.Tasks, 1)
	task := p.Tasks[0]
	assert.Equal(t, int64(237), task.ID)
	assert.Contains(t, string(task.Raw), `"priority":{"level":2,"tags":["紧急"]}`)
	require.Len(t, task.Logs, 2)
	assert.Equal(t, 9, task.Logs[1].Type)
	assert.Equal(t, "系统同步 🗂️", task.Logs[1].Comment)
	assert.Contains(t, string(task.Logs[1].Raw), `"source":{"app":"crm"}`)
}

// TestClient_ListErrors checks that every way the API misbehaves is a typed
// error, never a page, and that no error text contains the token.
func TestClient_ListErrors(t *testing.T) {
	const page = `{"status":"success","code":200,"message":"","data":{"total":1,"data":[{"id":1,"logs":[{"id":2,"type":1,"created_at":"2026-04-08 17:22:01"}]}]},"error":{}}`
	html := "<html><head><title>502 Bad Gateway</title></head><body>nginx " + token + "</body></html>"
	tests := []struct {
		name       string
		handler    http.HandlerFunc
		timeout    time.Duration
		kind       poller.ErrorKind
		status     int
		code       int
		retryAfter time.Duration
		text       string
	}{
		{name: "401", kind: poller.KindUnauthorized, status: 401, code: 401, text: "page 1: HTTP 401: bad token [redacted]",
			handler: func(w http.ResponseWriter, r *http.Request) {
				// A server that echoes the credentials it got.
				w.WriteHeader(401)
				fmt.Fprintf(w, `{"status":"error","code":401,"message":"bad token %s"}`, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
			}},
		{name: "403", kind: poller.KindUnauthorized, status: 403, text: "HTTP 403",
			handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(403) }},
		{name: "429", kind: poller.KindRateLimited, status: 429, text: "HTTP 429",
			handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(429) }},
		{name: "429 retry-after", kind: poller.KindRateLimited, status: 429, retryAfter: time.Second, text: "HTTP 429 (retry after 1s)",
			handler: func(w http.ResponseWriter, r *http.Request) { w.Header().Set("Retry-After", "1"); w.WriteHeader(429) }},
		{name: "500", kind: poller.KindServer, status: 500, code: 500, text: "HTTP 500: Server Error",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(500)
				fmt.Fprint(w, `{"status":"error","code":500,"message":"Server Error"}`)
			}},
		{name: "503 html", kind: poller.KindServer, status: 503, text: "incsapp: GET /external/tasks page 1: HTTP 503",
			handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503); fmt.Fprint(w, html) }},
		{name: "400", kind: poller.KindRequest, status: 400, code: 400, text: "HTTP 400: start_at",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(400)
				fmt.Fprint(w, `{"status":"error","code":400,"message":"start_at"}`)
			}},
		{name: "error envelope", kind: poller.KindEnvelope, status: 200, code: 500, text: `envelope status "error" code 500: 系统繁忙`,
			handler: func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, `{"status":"error","code":500,"message":"系统繁忙","data":[],"error":{"x":1}}`)
			}},
		{name: "code not 200", kind: poller.KindEnvelope, status: 200, code: 10001, text: `envelope status "success" code 10001: 查询失败`,
			handler: func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, `{"status":"success","code":10001,"message":"查询失败","data":{"total":0,"data":[]},"error":{}}`)
			}},
		{name: "message with token", kind: poller.KindEnvelope, status: 200, code: 401, text: "[redacted]",
			handler: func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, `{"status":"error","code":401,"message":"token %s expired"}`, token)
			}},
		{name: "truncated", kind: poller.KindDecode, status: 200, text: "decode: unexpected end of JSON input",
			handler: func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, page[:len(page)/2]) }},
		{name: "html", kind: poller.KindDecode, status: 200, text: "decode: invalid character '<'",
			handler: func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, html) }},
		{name: "empty body", kind: poller.KindDecode, status: 200, text: "decode",
			handler: func(w http.ResponseWriter, r *http.Request) {}},
		{name: "missing data", kind: poller.KindDecode, status: 200, text: "decode: missing data",
			handler: func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, `{"status":"success","code":200,"message":""}`)
			}},
		{name: "missing total", kind: poller.KindDecode, status: 200, text: "decode: missing data.total",
			handler: func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, `{"status":"success","code":200,"data":{"data":[]}}`)
			}},
		{name: "missing task list", kind: poller.KindDecode, status: 200, text: "decode: missing data.data",
			handler: func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, `{"status":"success","code":200,"data":{"total":5}}`)
			}},
		{name: "task without id", kind: poller.KindDecode, status: 200, text: "has no id",
			handler: func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, `{"status":"success","code":200,"data":{"total":1,"data":[{"name":"x","logs":[]}]}}`)
			}},
		{name: "wrong type", kind: poller.KindDecode, status: 200, text: "decode: json: cannot unmarshal",
			handler: func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, `{"status":"success","code":200,"data":{"total":1,"data":[{"id":"237","logs":[]}]}}`)
			}},
		{name: "slow", kind: poller.KindTimeout, timeout: 100 * time.Millisecond, text: "timeout after 100ms",
			handler: func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-time.After(5 * time.Second):
				}
			}},
		{name: "slow body", kind: poller.KindTimeout, status: 0, timeout: 100 * time.Millisecond, text: "timeout",
			handler: func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, page[:20])
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
				case <-time.After(5 * time.Second):
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, tt.handler)
			c := newClient(t, srv, func(cfg *poller.Config) {
				if tt.timeout > 0 {
					cfg.Timeout = tt.timeout
				}
			})
			p, err := c.List(context.Background(), poller.Query{})
			require.Error(t, err)
			assert.Nil(t, p)
			var ae *poller.APIError
			require.ErrorAs(t, err, &ae)
			assert.Equal(t, tt.kind, ae.Kind, err.Error())
			if tt.status != 0 {
				assert.Equal(t, tt.status, ae.StatusCode)
			}
			assert.Equal(t, tt.code, ae.Code)
			assert.Equal(t, tt.retryAfter, ae.RetryAfter)
			assert.Equal(t, 1, ae.Page)
			assert.True(t, strings.HasPrefix(err.Error(), "incsapp: GET /external/tasks page 1: "), err.Error())
			assert.Contains(t, err.Error(), tt.text)
			assert.NotContains(t, err.Error(), token)
			assert.NotContains(t, fmt.Sprintf("%+v %#v", err, ae), token)
			if tt.kind == poller.KindTimeout {
				assert.ErrorIs(t, err, context.DeadlineExceeded)
			}
		})
	}
}

func TestClient_ListNetwork(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	c := newClient(t, srv)
	srv.Close()
	_, err := c.List(context.Background(), poller.Query{Page: 4, Name: "x"})
	var ae *poller.APIError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, poller.KindNetwork, ae.Kind)
	assert.True(t, strings.HasPrefix(err.Error(), "incsapp: GET /external/tasks page 4: network: "), err.Error())
	assert.NotContains(t, err.Error(), "name=x", "no query string")
	assert.NotContains(t, err.Error(), token)
	assert.True(t, ae.Transient())
}

func TestClient_ListBadBaseURL(t *testing.T) {
	c := poller.NewClient(poller.Config{BaseURL: "http://[::1", Token: token, RateLimit: -1}, zerolog.Nop())
	_, err := c.List(context.Background(), poller.Query{Name: "x"})
	var ae *poller.APIError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, poller.KindRequest, ae.Kind)
	assert.Equal(t, "incsapp: GET /external/tasks page 1: invalid base URL", err.Error())
}

func TestClient_ListContext(t *testing.T) {
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	c := newClient(t, srv)

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err := c.List(ctx, poller.Query{})
	require.ErrorIs(t, err, context.Canceled)
	var ae *poller.APIError
	assert.False(t, errors.As(err, &ae), "cancellation is not an API failure")

	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = c.List(ctx, poller.Query{})
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, poller.KindTimeout, ae.Kind)
}

// TestClient_RetryAfter checks that after a 429 with Retry-After no request
// is sent before it has passed, across separate calls.
func TestClient_RetryAfter(t *testing.T) {
	tests := []struct {
		name   string
		status int
		value  func() string
		min    time.Duration
	}{
		{name: "429 seconds", status: 429, value: func() string { return "1" }, min: time.Second},
		{name: "503 http-date", status: 503, value: func() string {
			// HTTP dates have whole seconds: ask for 2s, expect more than 1s.
			return time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat)
		}, min: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				mu    sync.Mutex
				times []time.Time
			)
			srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				n := len(times)
				mu.Unlock()
				if n == 0 {
					w.Header().Set("Retry-After", tt.value())
					w.WriteHeader(tt.status)
				} else {
					fmt.Fprint(w, `{"status":"success","code":200,"message":"","data":{"total":0,"data":[]},"error":{}}`)
				}
				mu.Lock()
				times = append(times, time.Now())
				mu.Unlock()
			}))
			c := newClient(t, srv, func(cfg *poller.Config) { cfg.Now = time.Now })
			_, err := c.List(context.Background(), poller.Query{})
			var ae *poller.APIError
			require.ErrorAs(t, err, &ae)
			assert.Positive(t, ae.RetryAfter)

			_, err = c.List(context.Background(), poller.Query{})
			require.NoError(t, err)
			mu.Lock()
			defer mu.Unlock()
			require.Len(t, times, 2)
			assert.GreaterOrEqual(t, times[1].Sub(times[0]), tt.min)
		})
	}
}

func TestClient_RateLimit(t *testing.T) {
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"status":"success","code":200,"message":"","data":{"total":0,"data":[]},"error":{}}`)
	}))
	c := newClient(t, srv, func(cfg *poller.Config) { cfg.RateLimit = 20 })
	start := time.Now()
	for range 5 {
		_, err := c.List(context.Background(), poller.Query{})
		require.NoError(t, err)
	}
	// Burst 1 at 20/s: the 4 requests after the first wait 50ms each.
	assert.GreaterOrEqual(t, time.Since(start), 190*time.Millisecond)
}

func TestErrorKind_String(t *testing.T) {
	kinds := map[poller.ErrorKind]string{
		poller.KindUnauthorized: "unauthorized", poller.KindRateLimited: "rate_limited", poller.KindServer: "server",
		poller.KindEnvelope: "envelope", poller.KindDecode: "decode", poller.KindTimeout: "timeout",
		poller.KindNetwork: "network", poller.KindRequest: "request", 0: "kind_0",
	}
	for k, want := range kinds {
		assert.Equal(t, want, k.String())
	}
	assert.False(t, poller.KindUnauthorized.Transient())
	assert.False(t, poller.KindEnvelope.Transient())
	assert.True(t, poller.KindDecode.Transient())
}

// TestDefaultLocation checks that the default zone is the real
// Asia/Shanghai from the time zone database, not the fixed UTC+8 fallback
// for systems without one: only the real zone knows China's daylight
// saving time of 1986-1991. Where this fails, the host lacks tzdata and the
// relay would run on the fallback.
func TestDefaultLocation(t *testing.T) {
	loc := poller.DefaultLocation()
	assert.Equal(t, poller.DefaultTimezone, loc.String())
	_, off := time.Date(2026, 1, 1, 0, 0, 0, 0, loc).Zone()
	assert.Equal(t, 8*3600, off)
	name, off := time.Date(1988, 7, 1, 12, 0, 0, 0, loc).Zone()
	assert.Equal(t, 9*3600, off, "summer 1988 was UTC+9 in Asia/Shanghai; %s is the fallback zone", name)
}
