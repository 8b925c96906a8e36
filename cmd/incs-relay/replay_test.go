package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/diff"
)

// redelivered waits until every event of evs with an offset in [from, to]
// reached the receiver want times in all, checks that those before from
// did want-1 times, and that every delivery carried the stored offset and
// body.
func redelivered(t *testing.T, f *relayFixture, evs map[string]diff.Event, from, to uint64, want int) {
	t.Helper()
	require.Eventually(t, func() bool {
		for id, ev := range evs {
			if ev.Offset >= from && ev.Offset <= to && f.hooks.attempts(id) < want {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond, "offsets %d to %d delivered %d times", from, to, want)
	for id, ev := range evs {
		if ev.Offset < from {
			assert.Equal(t, want-1, f.hooks.attempts(id), "%s (offset %d) is before the replay", id, ev.Offset)
		}
	}
	f.hooks.got.mu.Lock()
	defer f.hooks.got.mu.Unlock()
	assert.Empty(t, f.hooks.got.differ, "a replayed event carries its identical body")
	for id, ev := range evs {
		assert.Equal(t, ev.Offset, f.hooks.got.events[id].Offset, "%s keeps its offset", id)
	}
}

// deliverAll starts the fixture's relay, waits until every log of the
// world reached the receiver, stops it and returns the stored events.
func deliverAll(t *testing.T, f *relayFixture) map[string]diff.Event {
	t.Helper()
	ir := startInProc(t, f.cfgPath)
	logs := f.world.Logs()
	require.Eventually(t, func() bool { return f.hooks.got.count() == len(logs) },
		10*time.Second, 10*time.Millisecond, "all %d logs delivered", len(logs))
	ir.stop(t)
	f.hooks.got.checkAgainst(t, "webhook", logs)
	return storedEvents(t, f.dbPath)
}

// TestReplay_Online rewinds a sink of a running relay through the CLI
// (which goes through the admin API) and through
// POST /v1/sinks/{name}/replay, by offset and by time: exactly the events
// from there on arrive again, with their ids, offsets and bodies.
func TestReplay_Online(t *testing.T) {
	f := newRelayFixture(t, 20, "{initial: 10ms, max: 100ms}", "")
	evs := deliverAll(t, f)
	head := uint64(len(evs))
	startInProc(t, f.cfgPath)

	// CLI --from, online.
	from := head - 5
	code, out, errOut := cli(t, "replay", "--config", f.cfgPath, "--sink", "hooks", "--from", fmt.Sprint(from))
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, fmt.Sprintf("hooks rewound: events %d to %d are being delivered again\n", from, head), out)
	redelivered(t, f, evs, from, head, 2)

	// POST ?from=N.
	code, body := adminDo(t, http.MethodPost, f.admin, fmt.Sprintf("/v1/sinks/hooks/replay?from=%d", head-2), "")
	require.Equal(t, http.StatusOK, code, body)
	var res struct {
		Sink       string
		From, Head uint64
	}
	require.NoError(t, json.Unmarshal([]byte(body), &res))
	assert.Equal(t, "hooks", res.Sink)
	assert.Equal(t, head-2, res.From)
	assert.Equal(t, head, res.Head)
	require.Eventually(t, func() bool {
		for id, ev := range evs {
			if ev.Offset >= head-2 && f.hooks.attempts(id) < 3 {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond)

	// Events stored after a moment, replayed by time: POST ?since= and
	// the CLI's --since.
	since := time.Now()
	newLogs := stepWorld(f.world, 4)
	require.Eventually(t, func() bool { return f.hooks.got.count() == len(evs)+len(newLogs) },
		10*time.Second, 10*time.Millisecond)
	code, body = adminDo(t, http.MethodPost, f.admin, "/v1/sinks/hooks/replay?since="+since.Format(time.RFC3339Nano), "")
	require.Equal(t, http.StatusOK, code, body)
	require.NoError(t, json.Unmarshal([]byte(body), &res))
	assert.Equal(t, head+1, res.From, "since: the first event stored after the moment")
	f.hooks.got.mu.Lock()
	fresh := map[string]diff.Event{}
	for _, l := range newLogs {
		id := diff.EventID(l.LogID)
		fresh[id] = f.hooks.got.events[id]
	}
	f.hooks.got.mu.Unlock()
	require.Eventually(t, func() bool {
		for id := range fresh {
			if f.hooks.attempts(id) < 2 {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond, "events since the moment delivered again")
	code, out, errOut = cli(t, "replay", "--config", f.cfgPath, "--sink", "hooks", "--since", since.Format(time.RFC3339Nano))
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, fmt.Sprintf("events %d to", head+1))
	require.Eventually(t, func() bool {
		for id := range fresh {
			if f.hooks.attempts(id) < 3 {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond, "events since the moment delivered a third time")
	for id, ev := range evs {
		if ev.Offset < head-5 {
			assert.Equal(t, 1, f.hooks.attempts(id), "%s was never replayed", id)
		}
	}

	// Bad requests are refused and replay nothing.
	for _, tc := range []struct {
		name, path string
		code       int
	}{
		{"unknown sink", "/v1/sinks/nope/replay?from=1", http.StatusNotFound},
		{"bad offset", "/v1/sinks/hooks/replay?from=abc", http.StatusBadRequest},
		{"beyond head", fmt.Sprintf("/v1/sinks/hooks/replay?from=%d", head+100), http.StatusBadRequest},
		{"bad time", "/v1/sinks/hooks/replay?since=yesterday", http.StatusBadRequest},
		{"neither", "/v1/sinks/hooks/replay", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := adminDo(t, http.MethodPost, f.admin, tc.path, "")
			assert.Equal(t, tc.code, code, body)
			assert.Contains(t, body, `"error"`)
		})
	}
	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"unknown sink", []string{"--sink", "nope", "--from", "1"}, `no sink "nope"`},
		{"from and since", []string{"--sink", "hooks", "--from", "1", "--since", since.Format(time.RFC3339)}, "exactly one of"},
		{"bad offset", []string{"--sink", "hooks", "--from", "-3"}, "from"},
	} {
		t.Run("cli "+tc.name, func(t *testing.T) {
			code, _, errOut := cli(t, append([]string{"replay", "--config", f.cfgPath}, tc.args...)...)
			assert.Equal(t, exitBadInput, code)
			assert.Contains(t, errOut, tc.msg)
		})
	}
}

// TestReplay_Offline rewinds a sink on the store while no relay runs;
// the next run delivers those events again, same ids, offsets and bodies.
func TestReplay_Offline(t *testing.T) {
	f := newRelayFixture(t, 20, "{initial: 10ms, max: 100ms}", "")
	evs := deliverAll(t, f)
	head := uint64(len(evs))

	from := head - 9
	code, out, errOut := cli(t, "replay", "--config", f.cfgPath, "--sink", "hooks", "--from", fmt.Sprint(from))
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, fmt.Sprintf("hooks rewound: events %d to %d will be delivered again when the relay runs\n", from, head), out)

	code, out, errOut = cli(t, "status", "--config", f.cfgPath, "--json")
	require.Equal(t, 0, code, errOut)
	var st struct{ Sinks []relay.SinkStatus }
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	require.Len(t, st.Sinks, 1)
	assert.Equal(t, from-1, st.Sinks[0].Cursor, "status shows the rewound cursor")
	assert.Equal(t, head, st.Sinks[0].Head)
	assert.Equal(t, uint64(10), st.Sinks[0].Lag)

	startInProc(t, f.cfgPath)
	redelivered(t, f, evs, from, head, 2)
}

// TestEvents_OnlineOffline prints the outbox with `events` while the
// relay runs (through its admin API) and after it stopped (from the
// store): the same JSON lines, filtered as asked.
func TestEvents_OnlineOffline(t *testing.T) {
	f := newRelayFixture(t, 25, "{initial: 10ms, max: 100ms}", "")
	logs := f.world.Logs()
	ir := startInProc(t, f.cfgPath)
	require.Eventually(t, func() bool { return sinkStatusOf(t, f.admin, "hooks").Head == uint64(len(logs)) },
		10*time.Second, 10*time.Millisecond)

	tests := []struct {
		name  string
		args  []string
		from  uint64
		limit int
		typ   string
	}{
		{name: "default", from: 1, limit: 100},
		{name: "from and limit", args: []string{"--from", "7", "--limit", "5"}, from: 7, limit: 5},
		{name: "type", args: []string{"--type", diff.TypeTaskStatusChanged}, from: 1, limit: 100, typ: diff.TypeTaskStatusChanged},
		{name: "all filters", args: []string{"--from", "20", "--limit", "3", "--type", diff.TypeTaskCreated}, from: 20, limit: 3, typ: diff.TypeTaskCreated},
		{name: "beyond head", args: []string{"--from", "100000"}, from: 100000, limit: 100},
	}
	online := map[string]string{}
	for _, tc := range tests {
		code, out, errOut := cli(t, append([]string{"events", "--config", f.cfgPath}, tc.args...)...)
		require.Equal(t, 0, code, "%s: %s", tc.name, errOut)
		online[tc.name] = out
	}
	ir.stop(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := cli(t, append([]string{"events", "--config", f.cfgPath}, tc.args...)...)
			require.Equal(t, 0, code, errOut)
			assert.Equal(t, online[tc.name], out, "online and offline print the same lines")
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if out == "" {
				lines = nil
			}
			assert.LessOrEqual(t, len(lines), tc.limit)
			var prev uint64
			for _, line := range lines {
				var ev diff.Event
				require.NoError(t, json.Unmarshal([]byte(line), &ev), line)
				assert.GreaterOrEqual(t, ev.Offset, tc.from)
				assert.Greater(t, ev.Offset, prev, "in offset order")
				prev = ev.Offset
				if tc.typ != "" {
					assert.Equal(t, tc.typ, ev.Type)
				}
			}
			if tc.typ == "" && tc.from <= uint64(len(logs)) {
				assert.Len(t, lines, min(tc.limit, len(logs)-int(tc.from)+1))
			}
		})
	}
	code, _, errOut := cli(t, "events", "--config", f.cfgPath, "--type", "task.exploded")
	assert.Equal(t, exitBadInput, code)
	assert.Contains(t, errOut, "unknown event type")
}

// TestReplay_AdminToken checks the admin API's guard: a non-loopback
// admin.addr without admin.token is a config error; with a token, the API
// refuses requests without it (401) and the CLI, which reads the token
// from the config, gets through.
func TestReplay_AdminToken(t *testing.T) {
	f := newRelayFixture(t, 10, "{initial: 10ms, max: 100ms}", "")
	cfg, err := config.ReadFile(f.cfgPath, os.LookupEnv)
	require.NoError(t, err)
	for _, tc := range []struct {
		name, addr, token string
		ok                bool
	}{
		{"loopback without token", "127.0.0.1:8086", "", true},
		{"localhost without token", "localhost:8086", "", true},
		{"ipv6 loopback without token", "[::1]:8086", "", true},
		{"any address without token", "0.0.0.0:8086", "", false},
		{"all interfaces without token", ":8086", "", false},
		{"lan address without token", "10.1.2.3:8086", "", false},
		{"any address with token", "0.0.0.0:8086", "t0k3n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := *cfg
			c.Admin = config.AdminConfig{Addr: tc.addr, Token: tc.token}
			err := c.Validate()
			if tc.ok {
				assert.NoError(t, err)
				return
			}
			var ce *config.Error
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, "admin.token", ce.Key)
			assert.Contains(t, ce.Msg, "required when admin.addr is not a loopback address")
		})
	}

	// Through the CLI: exit 2, one line naming the file and the key.
	bad := strings.Replace(readFileT(t, f.cfgPath), fmt.Sprintf("admin: {addr: %q", f.admin), `admin: {addr: "0.0.0.0:8086"`, 1)
	badPath := f.cfgPath + ".bad.yaml"
	writeFileT(t, badPath, bad)
	code, _, errOut := cli(t, "check-config", "--config", badPath)
	assert.Equal(t, exitBadInput, code)
	assert.Contains(t, errOut, badPath)
	assert.Contains(t, errOut, "admin.token")
	assert.NotContains(t, strings.TrimSpace(errOut), "\n", "one line")

	// With a token: 401 without it, 200 with it; the CLI passes it.
	const token = "s3cret-admin-token"
	f2 := newRelayFixture(t, 10, "{initial: 10ms, max: 100ms}", token)
	ir := startInProc(t, f2.cfgPath)
	logs := f2.world.Logs()
	require.Eventually(t, func() bool { return f2.hooks.got.count() == len(logs) }, 10*time.Second, 10*time.Millisecond)
	for _, path := range []string{"/v1/sinks", "/v1/sinks/hooks", "/v1/events?from=1", "/metrics"} {
		code, body := adminGet(t, f2.admin, path, "")
		assert.Equal(t, http.StatusUnauthorized, code, "%s without the token: %s", path, body)
		code, _ = adminGet(t, f2.admin, path, "wrong")
		assert.Equal(t, http.StatusUnauthorized, code, "%s with a wrong token", path)
		code, body = adminGet(t, f2.admin, path, token)
		assert.Equal(t, http.StatusOK, code, "%s with the token: %s", path, body)
	}
	code, _ = adminDo(t, http.MethodPost, f2.admin, "/v1/sinks/hooks/replay?from=1", "")
	assert.Equal(t, http.StatusUnauthorized, code)
	code, _ = adminDo(t, http.MethodPost, f2.admin, "/v1/sinks/hooks/resume", "")
	assert.Equal(t, http.StatusUnauthorized, code)
	code, _ = adminGet(t, f2.admin, "/healthz", "")
	assert.Equal(t, http.StatusOK, code, "liveness needs no token")
	code, out, errOut := cli(t, "status", "--config", f2.cfgPath)
	assert.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "running relay at")
	assert.Equal(t, len(logs), f2.hooks.got.count()+f2.hooks.got.dups, "the refused replay replayed nothing")
	ir.stop(t)
	assert.NotContains(t, ir.log.String(), token, "the admin token is never logged")
}

func readFileT(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}
