package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/admin"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/poller/sim"
	"github.com/incs-relay/incs-relay/sink/consume"
)

// obsRelay is a relay running in process against a simulated API and a
// webhook receiver, both of which a test can make fail: the harness of the
// admin, metrics, readiness and browser tests.
type obsRelay struct {
	world *sim.Sim
	r     *relay.Relay
	base  string // admin base URL, "http://127.0.0.1:port/"
	token string // admin token, "" for none

	apiDown atomic.Bool // the API answers 503
	// apiHold, when set (obsOptions.holdPages), holds every request for a
	// page after the first until it is closed or the request ends.
	apiHold  chan struct{}
	apiMu    sync.Mutex
	apiCodes map[int]int // status codes the API answered

	// hookStatus, when set, picks the receiver's answer for an event id
	// posted to a URL path; 0 (or a nil func) means 204. Set it with
	// setHookStatus.
	hookMu       sync.Mutex
	hookStatus   func(path, id string) int
	hookFailures atomic.Int64 // non-2xx answers given to validly signed requests
	badSig       atomic.Int64 // requests that failed consume.Verifier
	hooks        *received    // acknowledged deliveries, by event id
	hookURL      string       // the receiver's URL, path /incs; other paths work too
	ackedMu      sync.Mutex
	acked        map[string]int // acknowledged deliveries by URL path
	signatures   []string       // webhook-signature values received

	cancel context.CancelFunc
	done   chan error
}

// obsOptions configures startObsRelay.
type obsOptions struct {
	tasks int    // simulated tasks; default 30
	token string // admin token
	// sinks returns the sinks given the receiver's URL; default one
	// webhook "hooks" posting to it.
	sinks    func(hookURL string) []config.SinkConfig
	log      zerolog.Logger // default: test writer, warn level
	logSet   bool
	timeout  time.Duration // upstream timeout; default 1s
	interval time.Duration // poll interval; default 150ms
	// apiDown starts the relay with the API down.
	apiDown bool
	// holdPages makes the API hold every page after the first until
	// obsRelay.apiHold is closed.
	holdPages bool
	// hosts and redact set admin.hosts and admin.redact.
	hosts, redact []string
}

// obsRetry is a fast retry policy for test sinks.
var obsRetry = &config.RetryConfig{Initial: config.Duration(5 * time.Millisecond), Max: config.Duration(50 * time.Millisecond), MaxElapsed: config.Duration(time.Minute)}

func startObsRelay(t *testing.T, o obsOptions) *obsRelay {
	t.Helper()
	if o.tasks == 0 {
		o.tasks = 30
	}
	if o.timeout == 0 {
		o.timeout = time.Second
	}
	if o.interval == 0 {
		o.interval = 150 * time.Millisecond
	}
	h := &obsRelay{
		world:    sim.New(sim.Options{Token: "api-token-s3cr3t", Tasks: o.tasks, Seed: 11}),
		token:    o.token,
		apiCodes: map[int]int{},
		hooks:    newReceived(),
		acked:    map[string]int{},
	}
	h.apiDown.Store(o.apiDown)
	if o.holdPages {
		h.apiHold = make(chan struct{})
	}
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &obsStatusRecorder{ResponseWriter: w}
		if page := r.URL.Query().Get("page"); h.apiHold != nil && page != "" && page != "1" {
			select {
			case <-h.apiHold:
			case <-r.Context().Done():
				return
			}
		}
		if h.apiDown.Load() {
			http.Error(rec, "maintenance", http.StatusServiceUnavailable)
		} else {
			h.world.ServeHTTP(rec, r)
		}
		h.apiMu.Lock()
		h.apiCodes[rec.code()]++
		h.apiMu.Unlock()
	}))
	t.Cleanup(api.Close)

	verifier, err := consume.NewVerifier([]string{e2eSecret})
	require.NoError(t, err)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev, err := verifier.Verify(r)
		if err != nil {
			h.badSig.Add(1)
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		h.ackedMu.Lock()
		if len(h.signatures) < 100 {
			h.signatures = append(h.signatures, r.Header.Get("webhook-signature"))
		}
		h.ackedMu.Unlock()
		h.hookMu.Lock()
		pick := h.hookStatus
		h.hookMu.Unlock()
		if pick != nil {
			if code := pick(r.URL.Path, ev.ID); code != 0 && (code < 200 || code > 299) {
				h.hookFailures.Add(1)
				w.Header().Set("Retry-After", "0")
				http.Error(w, "no", code)
				return
			}
		}
		h.hooks.add(ev.Body)
		h.ackedMu.Lock()
		h.acked[r.URL.Path]++
		h.ackedMu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hook.Close)
	h.hookURL = hook.URL + "/incs"

	cfg := config.Default()
	cfg.SetFile("obs")
	cfg.Upstream.BaseURL = api.URL
	cfg.Upstream.Token = "api-token-s3cr3t"
	cfg.Upstream.RateLimit = 500
	cfg.Upstream.Timeout = config.Duration(o.timeout)
	cfg.Poll.Interval = config.Duration(o.interval)
	cfg.Poll.FullSweep = config.Duration(o.interval)
	cfg.Poll.Initial = "replay"
	cfg.Store.Path = filepath.Join(t.TempDir(), "relay.db")
	cfg.Admin.Addr = "127.0.0.1:0"
	cfg.Admin.Token = o.token
	cfg.Admin.Hosts, cfg.Admin.Redact = o.hosts, o.redact
	if o.sinks != nil {
		cfg.Sinks = o.sinks(h.hookURL)
	} else {
		cfg.Sinks = []config.SinkConfig{{Name: "hooks", Type: config.SinkWebhook, URL: h.hookURL, Secret: e2eSecret, MaxInFlight: 4, Retry: obsRetry}}
	}
	require.NoError(t, cfg.Validate())

	log := o.log
	if !o.logSet {
		log = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r, err := admin.Open(ctx, &cfg, log, relay.Options{})
	if err != nil {
		cancel()
		require.NoError(t, err)
	}
	h.r, h.cancel, h.done = r, cancel, make(chan error, 1)
	h.base = "http://" + r.AdminAddr() + "/"
	go func() { h.done <- r.Run(ctx) }()
	t.Cleanup(func() { h.stop(t) })
	return h
}

// stop stops the relay and waits for Run to return; it is idempotent.
func (h *obsRelay) stop(t *testing.T) {
	t.Helper()
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		assert.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Error("relay did not stop within 20s")
	}
}

// ackedAt returns how many deliveries to path the receiver acknowledged.
func (h *obsRelay) ackedAt(path string) int {
	h.ackedMu.Lock()
	defer h.ackedMu.Unlock()
	return h.acked[path]
}

// setHookStatus sets how the receiver answers; nil: 204 to everything.
func (h *obsRelay) setHookStatus(fn func(path, id string) int) {
	h.hookMu.Lock()
	h.hookStatus = fn
	h.hookMu.Unlock()
}

// head returns the store's highest offset.
func (h *obsRelay) head(t *testing.T) uint64 {
	t.Helper()
	head, err := h.r.Store().Head()
	require.NoError(t, err)
	return head
}

// storedLogEvents returns how many stored events are a log's: the
// simulator's edits without a log are events too.
func (h *obsRelay) storedLogEvents(t *testing.T) int {
	t.Helper()
	evs, err := h.r.Store().Read(context.Background(), 1, 1<<20)
	require.NoError(t, err)
	n := 0
	for _, ev := range evs {
		if isLogEvent(ev.ID) {
			n++
		}
	}
	return n
}

// waitCaughtUp waits until every simulated log is stored and the webhook
// receiver acknowledged want log events.
func (h *obsRelay) waitCaughtUp(t *testing.T, want func(logs []sim.LogRef) int) {
	t.Helper()
	require.Eventually(t, func() bool {
		logs := h.world.Logs()
		return h.storedLogEvents(t) == len(logs) && h.hooks.logCount() >= want(logs)
	}, 30*time.Second, 20*time.Millisecond, "stored %d of %d logs, receiver has %d", h.storedLogEvents(t), len(h.world.Logs()), h.hooks.logCount())
}

// sinkStatus reads the hooks sink's status from GET /v1/sinks/hooks.
func (h *obsRelay) sinkStatus(t *testing.T) relay.SinkStatus {
	t.Helper()
	code, body := h.get(t, "/v1/sinks/hooks", true)
	require.Equal(t, http.StatusOK, code, body)
	var st relay.SinkStatus
	require.NoError(t, json.Unmarshal([]byte(body), &st))
	return st
}

// get requests path from the admin API, with the token when withToken.
func (h *obsRelay) get(t *testing.T, path string, withToken bool) (int, string) {
	t.Helper()
	return h.do(t, http.MethodGet, path, withToken)
}

func (h *obsRelay) do(t *testing.T, method, path string, withToken bool) (int, string) {
	t.Helper()
	code, _, body := h.send(t, adminReq{method: method, path: path, withToken: withToken})
	return code, body
}

// obsStatusRecorder remembers the status code a handler answered.
type obsStatusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *obsStatusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *obsStatusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *obsStatusRecorder) code() int {
	if r.status == 0 {
		return http.StatusOK
	}
	return r.status
}

// TestAdmin_Readyz drives /readyz through its states: not ready while no
// poll succeeded, ready, not ready while polls fail, ready again. A sink
// that keeps failing, or is paused, never makes the relay unready: it
// shows in /v1/sinks and the metrics. The body names the reason.
func TestAdmin_Readyz(t *testing.T) {
	h := startObsRelay(t, obsOptions{
		apiDown:  true,
		timeout:  200 * time.Millisecond,
		interval: 100 * time.Millisecond,
	})
	readyz := func() (int, string) { return h.get(t, "/readyz", false) }
	waitReady := func(msg string) {
		t.Helper()
		require.Eventually(t, func() bool { code, _ := readyz(); return code == http.StatusOK }, 20*time.Second, 20*time.Millisecond, msg)
		_, body := readyz()
		assert.Equal(t, "ready\n", body)
	}
	waitUnready := func(reason, msg string) {
		t.Helper()
		var body string
		require.Eventually(t, func() bool {
			var code int
			code, body = readyz()
			return code == http.StatusServiceUnavailable && strings.Contains(body, reason)
		}, 20*time.Second, 20*time.Millisecond, "%s: last body %q", msg, body)
		assert.True(t, strings.HasPrefix(body, "not ready: "), body)
		assert.NotContains(t, body, "api-token-s3cr3t")
	}

	// The API is down from the start.
	waitUnready("no poll has succeeded yet", "unready before the first successful poll")
	code, body := h.get(t, "/healthz", false)
	assert.Equal(t, http.StatusOK, code, "healthz only says the process is up")
	assert.Equal(t, "ok\n", body)

	h.apiDown.Store(false)
	waitReady("ready once a poll succeeded")
	h.waitCaughtUp(t, func(logs []sim.LogRef) int { return len(logs) })

	h.apiDown.Store(true)
	waitUnready("polls failing for", "unready while polls keep failing")
	code, _ = h.get(t, "/healthz", false)
	assert.Equal(t, http.StatusOK, code)
	h.apiDown.Store(false)
	waitReady("ready again once polls succeed")

	// The sink fails: still ready, for longer than the old one-minute
	// bound would have allowed in a test (a failing receiver is not this
	// relay's job); /v1/sinks and the metrics say so.
	stayReady := func(msg string, shown func(relay.SinkStatus) bool) {
		t.Helper()
		require.Eventually(t, func() bool { return shown(h.sinkStatus(t)) }, 20*time.Second, 20*time.Millisecond, msg)
		for range 10 {
			code, body := readyz()
			require.Equal(t, http.StatusOK, code, "%s: %s", msg, body)
			time.Sleep(50 * time.Millisecond)
		}
	}
	h.setHookStatus(func(_, _ string) int { return http.StatusServiceUnavailable })
	before := len(h.world.Logs())
	h.world.Step(3)
	require.Greater(t, len(h.world.Logs()), before)
	stayReady("ready while the sink keeps failing", func(s relay.SinkStatus) bool { return s.Failing })
	_, metricsText := h.get(t, "/metrics", true)
	assert.Contains(t, metricsText, `incs_relay_sink_healthy{sink="hooks"} 0`)
	h.setHookStatus(nil)
	waitReady("ready once the sink delivers")

	// A 410 pauses the sink until it is resumed; the relay stays ready,
	// so the admin API that resumes it stays reachable.
	h.setHookStatus(func(_, _ string) int { return http.StatusGone })
	h.world.Step(2)
	stayReady("ready while the sink is paused", func(s relay.SinkStatus) bool { return s.Paused })
	h.setHookStatus(nil)
	code, _ = h.do(t, http.MethodPost, "/v1/sinks/hooks/resume", true)
	require.Equal(t, http.StatusOK, code)
	waitReady("ready after resume")
	h.waitCaughtUp(t, func(logs []sim.LogRef) int { return len(logs) })
	h.stop(t)
	h.hooks.checkAgainst(t, "webhook", h.world.Logs())
	assert.Zero(t, h.badSig.Load())
}

// TestAdmin_ReadyzFirstCycle: the relay is ready once its first poll
// cycle stores a page, not only once that cycle ends (a first sweep of
// every task in the lookback window is long on a big store), and stays
// so while the cycle keeps storing pages.
func TestAdmin_ReadyzFirstCycle(t *testing.T) {
	h := startObsRelay(t, obsOptions{tasks: 250, holdPages: true, timeout: 10 * time.Second})
	require.Eventually(t, func() bool { code, _ := h.get(t, "/readyz", false); return code == http.StatusOK },
		10*time.Second, 20*time.Millisecond, "ready while the first cycle waits for its second page")
	assert.Zero(t, h.r.PollStatus().Cycles, "the first cycle has not ended")
	close(h.apiHold)
	h.waitCaughtUp(t, func(logs []sim.LogRef) int { return len(logs) })
	code, body := h.get(t, "/readyz", false)
	assert.Equal(t, http.StatusOK, code, body)
}

// TestAdmin_Token checks which endpoints need the admin token: the API
// and /metrics do, /healthz, /readyz and the page itself do not (the page
// passes ?token= on to its API calls). A wrong token is refused.
func TestAdmin_Token(t *testing.T) {
	h := startObsRelay(t, obsOptions{token: "adm1n-t0ken"})
	h.waitCaughtUp(t, func(logs []sim.LogRef) int { return len(logs) })
	tests := []struct {
		name      string
		method    string
		path      string
		withToken bool
		want      int
	}{
		{"healthz open", http.MethodGet, "/healthz", false, http.StatusOK},
		{"readyz open", http.MethodGet, "/readyz", false, http.StatusOK},
		{"page open", http.MethodGet, "/", false, http.StatusOK},
		{"sinks need token", http.MethodGet, "/v1/sinks", false, http.StatusUnauthorized},
		{"sinks with token", http.MethodGet, "/v1/sinks", true, http.StatusOK},
		{"sink with token", http.MethodGet, "/v1/sinks/hooks", true, http.StatusOK},
		{"unknown sink", http.MethodGet, "/v1/sinks/nope", true, http.StatusNotFound},
		{"events need token", http.MethodGet, "/v1/events?latest=5", false, http.StatusUnauthorized},
		{"events with token", http.MethodGet, "/v1/events?latest=5", true, http.StatusOK},
		{"token as query", http.MethodGet, "/v1/events?latest=5&token=adm1n-t0ken", false, http.StatusOK},
		{"wrong token as query", http.MethodGet, "/v1/events?latest=5&token=guess", false, http.StatusUnauthorized},
		{"metrics need token", http.MethodGet, "/metrics", false, http.StatusUnauthorized},
		{"metrics with token", http.MethodGet, "/metrics", true, http.StatusOK},
		{"replay needs token", http.MethodPost, "/v1/sinks/hooks/replay?from=1", false, http.StatusUnauthorized},
		{"replay bad offset", http.MethodPost, "/v1/sinks/hooks/replay?from=0", true, http.StatusBadRequest},
		{"replay unknown sink", http.MethodPost, "/v1/sinks/nope/replay?from=1", true, http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := h.do(t, tt.method, tt.path, tt.withToken)
			assert.Equal(t, tt.want, code, body)
			if code == http.StatusUnauthorized {
				assert.NotContains(t, body, "adm1n-t0ken")
			}
		})
	}
}

// TestAdmin_SinksAndEvents checks the JSON the admin page renders.
func TestAdmin_SinksAndEvents(t *testing.T) {
	h := startObsRelay(t, obsOptions{})
	h.waitCaughtUp(t, func(logs []sim.LogRef) int { return len(logs) })
	head := h.head(t)
	require.Eventually(t, func() bool {
		_, body := h.get(t, "/v1/sinks", true)
		var got struct{ Sinks []relay.SinkStatus }
		return json.Unmarshal([]byte(body), &got) == nil && len(got.Sinks) == 1 &&
			got.Sinks[0].Cursor == head && got.Sinks[0].Delivered == head // counted just after the cursor moves
	}, 10*time.Second, 20*time.Millisecond)
	_, body := h.get(t, "/v1/sinks", true)
	var sinks struct{ Sinks []relay.SinkStatus }
	require.NoError(t, json.Unmarshal([]byte(body), &sinks))
	s := sinks.Sinks[0]
	assert.Equal(t, "hooks", s.Name)
	assert.Equal(t, config.SinkWebhook, s.Type)
	assert.Equal(t, head, s.Head)
	assert.Zero(t, s.Lag)
	assert.Zero(t, s.DeadLetters)
	assert.True(t, s.Running)
	assert.Equal(t, head, s.Delivered, "every event acknowledged once")

	_, body = h.get(t, "/v1/events?latest=5", true)
	var evs struct {
		Events []struct {
			Offset uint64 `json:"offset"`
			ID     string `json:"id"`
		} `json:"events"`
		Head uint64 `json:"head"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &evs))
	require.Len(t, evs.Events, 5)
	assert.Equal(t, head, evs.Head)
	for i, ev := range evs.Events {
		assert.Equal(t, head-4+uint64(i), ev.Offset, "the newest five, in offset order")
	}

	code, page := h.get(t, "/", false)
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, page, "<title>incs-relay</title>")
}
