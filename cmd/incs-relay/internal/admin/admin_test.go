package admin

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/poller/sim"
	"github.com/incs-relay/incs-relay/store"
)

// startRelay runs a relay on a simulated API with the admin API on a
// free loopback port, token "tok" and admin.hosts relay.internal, and
// returns a client of it and the relay.
func startRelay(t *testing.T) (*Client, *relay.Relay) {
	t.Helper()
	api := httptest.NewServer(sim.New(sim.Options{Token: "api", Tasks: 5, Seed: 3}))
	t.Cleanup(api.Close)
	cfg := config.Default()
	cfg.SetFile("admin-test")
	cfg.Upstream.BaseURL, cfg.Upstream.Token = api.URL, "api"
	cfg.Poll.Interval, cfg.Poll.FullSweep = config.Duration(200*time.Millisecond), config.Duration(200*time.Millisecond)
	cfg.Poll.Initial = "replay"
	cfg.Store.Path = filepath.Join(t.TempDir(), "relay.db")
	cfg.Admin.Addr, cfg.Admin.Token, cfg.Admin.Hosts = "127.0.0.1:0", "tok", []string{"relay.internal"}
	require.NoError(t, cfg.Validate())
	ctx, cancel := context.WithCancel(context.Background())
	r, err := Open(ctx, &cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel), relay.Options{})
	if err != nil {
		cancel()
		require.NoError(t, err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done)
	})
	return NewClient(r.AdminAddr(), "tok", 5*time.Second), r
}

// send makes a request of the admin API at addr with Host host and the
// headers h, and returns the status code.
func send(t *testing.T, method, addr, host, path string, h http.Header) int {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	require.NoError(t, err)
	req.Host = host
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// TestServer_Guard: a Host that is not an IP address, localhost, the
// admin address's host or in admin.hosts is refused with 421 before the
// token is asked; a cross-site POST is refused with 403; the token guards
// the API and /metrics but not /healthz.
func TestServer_Guard(t *testing.T) {
	_, r := startRelay(t)
	addr := r.AdminAddr()
	bearer := http.Header{"Authorization": {"Bearer tok"}}
	for host, want := range map[string]int{
		addr: http.StatusOK, "localhost": http.StatusOK, "LOCALHOST:8086": http.StatusOK, "relay.internal": http.StatusOK,
		"Relay.Internal:80": http.StatusOK, "[::1]:8086": http.StatusOK, "10.1.2.3": http.StatusOK, "": http.StatusOK,
		"evil.example": http.StatusMisdirectedRequest, "relay.internal.evil.example": http.StatusMisdirectedRequest,
		"localhost.evil.example:8086": http.StatusMisdirectedRequest,
	} {
		assert.Equal(t, want, send(t, http.MethodGet, addr, host, "/v1/sinks", bearer), "Host %q", host)
	}
	assert.Equal(t, http.StatusMisdirectedRequest, send(t, http.MethodGet, addr, "evil.example", "/v1/sinks", nil), "the host is refused before the token is asked")
	assert.Equal(t, http.StatusUnauthorized, send(t, http.MethodGet, addr, addr, "/v1/sinks", nil))
	assert.Equal(t, http.StatusUnauthorized, send(t, http.MethodGet, addr, addr, "/metrics", nil))
	assert.Equal(t, http.StatusOK, send(t, http.MethodGet, addr, addr, "/healthz", nil))
	assert.Equal(t, http.StatusForbidden, send(t, http.MethodPost, addr, addr, "/v1/sinks/x/resume",
		http.Header{"Authorization": {"Bearer tok"}, "Sec-Fetch-Site": {"cross-site"}}))
	assert.Equal(t, http.StatusNotFound, send(t, http.MethodPost, addr, addr, "/v1/sinks/x/resume", bearer), "no sink x, but not refused")
}

// TestServer_API: the relay's registry is served at /metrics, its status
// at /v1/poll, and a 404 is an *APIError the commands treat as bad input.
func TestServer_API(t *testing.T) {
	c, r := startRelay(t)
	ctx := context.Background()
	require.Eventually(t, func() bool { return r.PollStatus().Cycles > 0 }, 10*time.Second, 20*time.Millisecond)
	var pv relay.PollView
	require.NoError(t, c.Do(ctx, http.MethodGet, "/v1/poll", nil, &pv))
	assert.Equal(t, "tiered", pv.Strategy)
	assert.Positive(t, pv.Cycles)

	req, err := http.NewRequest(http.MethodGet, "http://"+r.AdminAddr()+"/metrics", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Contains(t, string(body), `incs_relay_events_total{type="task.created"}`)

	err = c.Do(ctx, http.MethodPost, "/v1/sinks/nope/replay", url.Values{"from": {"1"}}, nil)
	var ae *APIError
	require.ErrorAs(t, err, &ae)
	assert.True(t, ae.BadRequest())
	assert.Equal(t, `admin API: POST /v1/sinks/nope/replay: HTTP 404: no sink "nope"`, err.Error())
	err = c.Do(ctx, http.MethodGet, "/v1/events", url.Values{"from": {"0"}}, nil)
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, http.StatusBadRequest, ae.Status)
	assert.Contains(t, ae.Msg, "from: want an offset from 1")
}

// TestClient_ServerError: a 5xx is an *APIError that is not bad input,
// with the body as its message when it is not the API's JSON.
func TestClient_ServerError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		assert.Equal(t, "Bearer s3cret", r.Header.Get("Authorization"))
		http.Error(w, "store closed", http.StatusInternalServerError)
	}))
	defer srv.Close()
	err := NewClient(strings.TrimPrefix(srv.URL, "http://"), "s3cret", time.Second).Do(context.Background(), http.MethodGet, "/v1/sinks", nil, nil)
	var ae *APIError
	require.ErrorAs(t, err, &ae)
	assert.False(t, ae.BadRequest())
	assert.Equal(t, "store closed", ae.Msg)
}

// TestReplayFrom: from and since, each alone, checked against the store.
func TestReplayFrom(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "relay.db"), store.Options{NoSync: true})
	require.NoError(t, err)
	defer db.Close()
	n, err := ReplayFrom(db, "1", "")
	require.NoError(t, err)
	assert.Equal(t, uint64(1), n, "an empty store replays from its next offset")
	for _, tc := range [][2]string{{"1", "2026-01-01T00:00:00Z"}, {"0", ""}, {"x", ""}, {"3", ""}, {"", "yesterday"}, {"", ""}} {
		_, err := ReplayFrom(db, tc[0], tc[1])
		assert.Error(t, err, "from %q since %q", tc[0], tc[1])
	}
}

// TestParseEventQuery: defaults, bounds and known types.
func TestParseEventQuery(t *testing.T) {
	known := func(typ string) bool { return typ == "task.created" }
	q, err := ParseEventQuery("", "", "", known)
	require.NoError(t, err)
	assert.Equal(t, store.EventQuery{From: 1, Limit: 100}, q)
	q, err = ParseEventQuery("5", "10", "task.created", known)
	require.NoError(t, err)
	assert.Equal(t, store.EventQuery{From: 5, Limit: 10, Type: "task.created"}, q)
	for _, bad := range [][3]string{{"0", "", ""}, {"", "100001", ""}, {"", "0", ""}, {"", "", "task.unknown"}} {
		_, err := ParseEventQuery(bad[0], bad[1], bad[2], known)
		assert.Error(t, err, "%q", bad)
	}
}
