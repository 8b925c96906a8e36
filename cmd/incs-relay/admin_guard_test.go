package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config/configtest"
	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller/sim"
	"github.com/incs-relay/incs-relay/sink"
)

// adminReq is one request to the admin API with the headers a browser (or
// an attacker's page) would set.
type adminReq struct {
	method, path string
	host         string            // Host header; "" for the listener's address
	header       map[string]string // extra headers
	withToken    bool
}

// send makes the request and returns status, headers and body.
func (h *obsRelay) send(t *testing.T, r adminReq) (int, http.Header, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.method, h.base+strings.TrimPrefix(r.path, "/"), nil)
	require.NoError(t, err)
	if r.host != "" {
		req.Host = r.host
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	if r.withToken && h.token != "" {
		req.Header.Set("Authorization", "Bearer "+h.token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, string(b)
}

// origin is the admin page's own origin, "http://127.0.0.1:port".
func (h *obsRelay) origin() string { return strings.TrimSuffix(h.base, "/") }

// port is the admin listener's port.
func (h *obsRelay) port(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(h.base)
	require.NoError(t, err)
	return u.Port()
}

// sinkSnapshot is what a state-changing request would change about a sink.
type sinkSnapshot struct {
	storeCursor  uint64
	cursor       uint64 // as the dispatcher reports it
	paused       bool
	pauseReason  string
	storedPaused bool
	inFlight     int
	acked        int
}

func (h *obsRelay) snapshot(t *testing.T, name string) sinkSnapshot {
	t.Helper()
	c, err := h.r.Store().Cursor(name)
	require.NoError(t, err)
	ss, err := h.r.Store().SinkState(name)
	require.NoError(t, err)
	st := h.r.DeliveryState(name)
	return sinkSnapshot{storeCursor: c, cursor: st.Cursor, paused: st.Paused, pauseReason: st.PauseReason,
		storedPaused: ss.Paused, inFlight: st.InFlight, acked: h.ackedAt("/incs")}
}

// settled waits until the sink's stored cursor caught up with its
// dispatcher's (it is saved a moment later) and cond holds, and returns
// the snapshot.
func (h *obsRelay) settled(t *testing.T, name string, cond func(sinkSnapshot) bool, msg string) sinkSnapshot {
	t.Helper()
	var s sinkSnapshot
	require.Eventually(t, func() bool {
		s = h.snapshot(t, name)
		return s.storeCursor == s.cursor && cond(s)
	}, 20*time.Second, 20*time.Millisecond, "%s: last %+v", msg, s)
	return s
}

// TestAdmin_CrossOriginPostRefused sends every POST endpoint what a hidden
// form or a fetch on another site sends: each is refused with 403 and the
// sink keeps its cursor and its pause (the receiver would take deliveries
// again, so a replay or resume slipping through would show). A POST from
// the page's own origin, and one with no browser headers (curl), still
// work. With a token the same holds, the token in the query included.
func TestAdmin_CrossOriginPostRefused(t *testing.T) {
	for _, token := range []string{"", "cr0ss-t0ken"} {
		t.Run(fmt.Sprintf("token=%t", token != ""), func(t *testing.T) {
			h := startObsRelay(t, obsOptions{token: token})
			h.waitCaughtUp(t, func(logs []sim.LogRef) int { return len(logs) })

			// Pause the sink: the receiver answers 410 Gone.
			h.setHookStatus(func(_, _ string) int { return http.StatusGone })
			h.world.Step(2)
			before := h.settled(t, "hooks", func(s sinkSnapshot) bool { return s.paused && s.storedPaused && s.inFlight == 0 }, "the sink pauses on 410")
			h.setHookStatus(nil) // from now on anything sent is acknowledged
			require.Less(t, before.cursor, h.head(t), "events wait behind the pause")

			evil := map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
			variants := []struct {
				name   string
				header map[string]string
			}{
				{"cross-site form", evil},
				{"same-site page", map[string]string{"Origin": "http://other.localhost:8086", "Sec-Fetch-Site": "same-site"}},
				{"Origin only (no Fetch metadata)", map[string]string{"Origin": "http://evil.example"}},
				{"cross-site with Origin null", map[string]string{"Origin": "null", "Sec-Fetch-Site": "cross-site"}},
			}
			paths := []string{"/v1/sinks/hooks/replay?from=1", "/v1/sinks/hooks/resume"}
			if token != "" {
				paths = append(paths, "/v1/sinks/hooks/replay?from=1&token="+token, "/v1/sinks/hooks/resume?token="+token)
			}
			for _, p := range paths {
				for _, v := range variants {
					code, hdr, body := h.send(t, adminReq{method: http.MethodPost, path: p, header: v.header, withToken: true})
					assert.Equal(t, http.StatusForbidden, code, "%s %s: %s", v.name, p, body)
					assert.Contains(t, body, "cross-origin request refused", "%s %s", v.name, p)
					assert.Equal(t, "application/json", hdr.Get("Content-Type"))
					if token != "" {
						assert.NotContains(t, body, token)
					}
				}
			}
			assert.Equal(t, before, h.snapshot(t, "hooks"), "nothing changed")
			time.Sleep(300 * time.Millisecond) // a rewind or resume would deliver by now
			assert.Equal(t, before, h.snapshot(t, "hooks"), "nothing changed, nothing delivered")

			// Reading stays possible cross-site (a browser keeps the answer from the page).
			code, _, _ := h.send(t, adminReq{method: http.MethodGet, path: "/v1/sinks/hooks", header: evil, withToken: true})
			assert.Equal(t, http.StatusOK, code)

			// The page's own resume works.
			same := map[string]string{"Origin": h.origin(), "Sec-Fetch-Site": "same-origin"}
			code, _, body := h.send(t, adminReq{method: http.MethodPost, path: "/v1/sinks/hooks/resume", header: same, withToken: true})
			require.Equal(t, http.StatusOK, code, body)
			h.waitCaughtUp(t, func(logs []sim.LogRef) int { return len(logs) })
			head := h.head(t)
			require.Eventually(t, func() bool { return h.snapshot(t, "hooks").cursor == head }, 10*time.Second, 20*time.Millisecond)
			assert.False(t, h.snapshot(t, "hooks").paused)

			// The page's own replay, and one from curl (no Origin, no Fetch metadata).
			for _, hdr := range []map[string]string{same, {"Origin": h.origin()}, nil} {
				h.hooks.mu.Lock()
				dups := h.hooks.dups
				h.hooks.mu.Unlock()
				code, _, body = h.send(t, adminReq{method: http.MethodPost, path: fmt.Sprintf("/v1/sinks/hooks/replay?from=%d", head-1), header: hdr, withToken: true})
				require.Equal(t, http.StatusOK, code, "%v: %s", hdr, body)
				require.Eventually(t, func() bool {
					h.hooks.mu.Lock()
					defer h.hooks.mu.Unlock()
					return h.hooks.dups-dups == 2
				}, 10*time.Second, 20*time.Millisecond, "%v: the last two events again", hdr)
			}
		})
	}
}

// TestAdmin_ForeignHost sends every endpoint a Host naming a site that is
// not the relay's (what a browser sends after DNS rebinding): 421 before
// any handler, with and without a token, naming admin.hosts; the POSTs
// change nothing. IP literals, localhost and admin.hosts entries (any
// case, any port) are answered.
func TestAdmin_ForeignHost(t *testing.T) {
	for _, token := range []string{"", "h0st-t0ken"} {
		t.Run(fmt.Sprintf("token=%t", token != ""), func(t *testing.T) {
			h := startObsRelay(t, obsOptions{token: token, hosts: []string{"Relay.Internal", "metrics.example.com"}})
			h.waitCaughtUp(t, func(logs []sim.LogRef) int { return len(logs) })
			head := h.head(t)
			before := h.settled(t, "hooks", func(s sinkSnapshot) bool { return s.cursor == head }, "the sink is done")
			port := h.port(t)

			endpoints := []struct{ method, path string }{
				{http.MethodGet, "/"},
				{http.MethodGet, "/healthz"},
				{http.MethodGet, "/readyz"},
				{http.MethodGet, "/metrics"},
				{http.MethodGet, "/v1/sinks"},
				{http.MethodGet, "/v1/sinks/hooks"},
				{http.MethodGet, "/v1/poll"},
				{http.MethodGet, "/v1/events?latest=5"},
				{http.MethodPost, "/v1/sinks/hooks/replay?from=1"},
				{http.MethodPost, "/v1/sinks/hooks/resume"},
				{http.MethodGet, "/no/such/path"},
			}
			foreign := []string{"evil.example:8086", "evil.example", "EVIL.example:" + port, "relay.internal.evil.example:" + port,
				"evil.relay.internal", "localhost.evil.example", "127.0.0.1.nip.io:" + port, "metrics.example.com.evil.example"}
			for _, e := range endpoints {
				for _, host := range foreign {
					// With the page's own Origin too: rebinding makes it same-origin.
					hdr := map[string]string{"Origin": "http://" + host, "Sec-Fetch-Site": "same-origin"}
					code, rh, body := h.send(t, adminReq{method: e.method, path: e.path, host: host, header: hdr, withToken: true})
					assert.Equal(t, http.StatusMisdirectedRequest, code, "%s %s Host %s: %s", e.method, e.path, host, body)
					assert.Contains(t, body, "admin.hosts", "%s %s", e.method, e.path)
					assert.NotContains(t, body, `"events"`)
					assert.Equal(t, "nosniff", rh.Get("X-Content-Type-Options"))
				}
			}
			assert.Equal(t, before, h.snapshot(t, "hooks"), "a refused POST changes nothing")

			accepted := []string{"127.0.0.1:" + port, "127.0.0.1", "[::1]:" + port, "[::1]", "10.9.8.7:8086",
				"localhost:" + port, "LocalHost", "relay.internal:" + port, "RELAY.INTERNAL", "metrics.example.com:9090"}
			for _, host := range accepted {
				code, _, body := h.send(t, adminReq{method: http.MethodGet, path: "/healthz", host: host})
				assert.Equal(t, http.StatusOK, code, "healthz Host %s: %s", host, body)
				code, _, body = h.send(t, adminReq{method: http.MethodGet, path: "/v1/sinks/hooks", host: host, withToken: true})
				assert.Equal(t, http.StatusOK, code, "v1/sinks/hooks Host %s: %s", host, body)
				code, _, body = h.send(t, adminReq{method: http.MethodGet, path: "/metrics", host: host, withToken: true})
				assert.Equal(t, http.StatusOK, code, "metrics Host %s: %s", host, body)
			}
			if token != "" {
				code, _, _ := h.send(t, adminReq{method: http.MethodGet, path: "/v1/sinks", host: "relay.internal"})
				assert.Equal(t, http.StatusUnauthorized, code, "an accepted host still needs the token")
			}
			// The page on an admin.hosts name posts with its own Origin.
			code, _, body := h.send(t, adminReq{method: http.MethodPost, path: fmt.Sprintf("/v1/sinks/hooks/replay?from=%d", head), host: "relay.internal:" + port,
				header: map[string]string{"Origin": "http://relay.internal:" + port}, withToken: true})
			assert.Equal(t, http.StatusOK, code, body)
		})
	}
}

// TestAdmin_PageHeaders checks the page cannot be framed or sniffed and
// sends no referrer, and the API answers carry the same headers.
func TestAdmin_PageHeaders(t *testing.T) {
	h := startObsRelay(t, obsOptions{})
	for _, p := range []string{"/", "/v1/sinks", "/healthz"} {
		code, hdr, _ := h.send(t, adminReq{method: http.MethodGet, path: p})
		require.Equal(t, http.StatusOK, code, p)
		assert.Equal(t, "frame-ancestors 'none'", hdr.Get("Content-Security-Policy"), p)
		assert.Equal(t, "nosniff", hdr.Get("X-Content-Type-Options"), p)
		assert.Equal(t, "no-referrer", hdr.Get("Referrer-Policy"), p)
	}
}

// TestAdmin_EventsRedacted checks admin.redact masks /v1/events (the page's
// latest events included) as a chat sink's redact does: every body is
// sink.Redact's, no phone number shows, the envelope is kept.
func TestAdmin_EventsRedacted(t *testing.T) {
	fields := []string{"user_phone"}
	h := startObsRelay(t, obsOptions{redact: fields})
	h.waitCaughtUp(t, func(logs []sim.LogRef) int { return len(logs) })
	head := h.head(t)
	for _, p := range []string{fmt.Sprintf("/v1/events?from=1&limit=%d", head), "/v1/events?latest=20"} {
		code, _, body := h.send(t, adminReq{method: http.MethodGet, path: p})
		require.Equal(t, http.StatusOK, code, body)
		var got struct{ Events []json.RawMessage }
		require.NoError(t, json.Unmarshal([]byte(body), &got))
		require.NotEmpty(t, got.Events)
		phones := 0
		for _, raw := range got.Events {
			var env struct {
				Offset uint64
				ID     string
			}
			require.NoError(t, json.Unmarshal(raw, &env))
			stored, err := h.r.Store().Event(env.Offset)
			require.NoError(t, err)
			assert.Equal(t, stored.ID, env.ID)
			assert.JSONEq(t, string(sink.Redact(&stored, fields).Body), string(raw), "offset %d", env.Offset)
			if phone := taskPhone(t, stored.Data.Task); phone != "" {
				phones++
				assert.NotContains(t, string(raw), phone, "offset %d", env.Offset)
				assert.Contains(t, string(raw), sink.MaskValue(phone))
			}
		}
		assert.NotZero(t, phones, "%s: some events carry a phone number to mask", p)
	}
}

// taskPhone returns the task's user_phone, or "".
func taskPhone(t *testing.T, task json.RawMessage) string {
	t.Helper()
	var v struct {
		UserPhone string `json:"user_phone"`
	}
	require.NoError(t, json.Unmarshal(task, &v))
	return v.UserPhone
}

// TestParseConfig_AdminKeys checks admin.hosts and admin.redact: good
// values load; a bad one is one line naming the file, the key (with its
// index and line) and the problem.
func TestParseConfig_AdminKeys(t *testing.T) {
	lookup := configtest.Env("RELAY_HOST", "relay.internal")
	cfg, err := config.Parse("relay.yaml", []byte("upstream: {token: t}\nadmin:\n  hosts: [\"${RELAY_HOST}\", Metrics.Example.COM, incs_relay]\n  redact: [user_phone, comment]\n"), lookup)
	require.NoError(t, err)
	assert.Equal(t, []string{"relay.internal", "Metrics.Example.COM", "incs_relay"}, cfg.Admin.Hosts)
	assert.Equal(t, []string{"user_phone", "comment"}, cfg.Admin.Redact)

	cfg, err = config.Parse("relay.yaml", []byte("upstream: {token: t}\n"), lookup)
	require.NoError(t, err)
	assert.Empty(t, cfg.Admin.Hosts, "default: no names besides localhost and admin.addr's")
	assert.Empty(t, cfg.Admin.Redact, "default: nothing masked")

	for _, tt := range []struct {
		name, yaml string
		want       []string
	}{
		{"wildcard", "admin:\n  hosts:\n    - ok.example\n    - \"*.example.com\"\n", []string{"relay.yaml:5", "admin.hosts[1]", "no wildcards"}},
		{"port", "admin:\n  hosts: [\"relay.internal:8086\"]\n", []string{"relay.yaml:3", "admin.hosts[0]", "without a port"}},
		{"URL", "admin:\n  hosts: [\"http://relay.internal\"]\n", []string{"admin.hosts[0]", "not a URL"}},
		{"IP address", "admin:\n  hosts: [\"10.0.0.5\"]\n", []string{"admin.hosts[0]", "IP addresses are always accepted"}},
		{"IPv6 address", "admin:\n  hosts: [\"::1\"]\n", []string{"admin.hosts[0]", "IP addresses are always accepted"}},
		{"empty", "admin:\n  hosts: [\"\"]\n", []string{"admin.hosts[0]", "not a host name"}},
		{"space", "admin:\n  hosts: [\"relay internal\"]\n", []string{"admin.hosts[0]", "not a host name"}},
		{"trailing dot", "admin:\n  hosts: [\"relay.internal.\"]\n", []string{"admin.hosts[0]", "not a host name"}},
		{"not a list", "admin:\n  hosts: relay.internal\n", []string{"relay.yaml:3", "wrong type"}},
		{"empty redact field", "admin:\n  redact: [user_phone, \" \"]\n", []string{"relay.yaml:3", "admin.redact[1]", "empty field name"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse("relay.yaml", []byte("upstream: {token: t}\n"+tt.yaml), lookup)
			require.Error(t, err)
			msg := err.Error()
			assert.NotContains(t, msg, "\n", "one line")
			assert.True(t, strings.HasPrefix(msg, "relay.yaml"), msg)
			for _, w := range tt.want {
				assert.Contains(t, msg, w)
			}
		})
	}
}

// TestEvents_Redacted runs `incs-relay events` with admin.redact set, on
// the store (relay stopped) and through the admin API (relay running):
// both print every event as sink.Redact masks it, identically, with no
// phone number or comment in the clear. The webhook sink, which has no
// redact, still got the stored bodies.
func TestEvents_Redacted(t *testing.T) {
	fields := []string{"user_phone", "comment"}
	f := newRelayFixture(t, 20, "{initial: 10ms, max: 100ms}", "")
	b, err := os.ReadFile(f.cfgPath)
	require.NoError(t, err)
	withRedact := strings.Replace(string(b), `token: ""}`, `token: "", redact: [user_phone, comment]}`, 1)
	require.NotEqual(t, string(b), withRedact)
	writeFileT(t, f.cfgPath, withRedact)

	evs := deliverAll(t, f)
	byOffset := map[uint64]diff.Event{}
	var secrets []string // phone numbers and comments of the stored events
	for id, ev := range evs {
		byOffset[ev.Offset] = ev
		f.hooks.got.mu.Lock()
		assert.Equal(t, string(ev.Body), string(f.hooks.got.bodies[id]), "the sink is not redacted by admin.redact")
		f.hooks.got.mu.Unlock()
		if p := taskPhone(t, ev.Data.Task); p != "" {
			secrets = append(secrets, p)
		}
		if ev.Data.Comment != "" {
			secrets = append(secrets, ev.Data.Comment)
		}
	}
	require.NotEmpty(t, secrets, "the world has phone numbers and comments to mask")

	limit := fmt.Sprint(len(evs))
	code, offline, errOut := cli(t, "events", "--config", f.cfgPath, "--limit", limit)
	require.Equal(t, 0, code, errOut)
	lines := strings.Split(strings.TrimSuffix(offline, "\n"), "\n")
	require.Len(t, lines, len(evs))
	for _, line := range lines {
		var env struct{ Offset uint64 }
		require.NoError(t, json.Unmarshal([]byte(line), &env))
		ev := byOffset[env.Offset]
		assert.Equal(t, string(sink.Redact(&ev, fields).Body), line, "offset %d", env.Offset)
	}
	for _, s := range secrets {
		assert.NotContains(t, offline, s)
	}

	startInProc(t, f.cfgPath)
	code, online, errOut := cli(t, "events", "--config", f.cfgPath, "--limit", limit)
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, offline, online, "through the running relay's admin API: the same lines")
}
