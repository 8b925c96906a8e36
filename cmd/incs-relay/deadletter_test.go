package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/admin"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller/sim"
	"github.com/incs-relay/incs-relay/store"
)

// relayFixture is a simulated API, a webhook receiver and a config file
// for a relay with one webhook sink "hooks" and a fixed admin address, so
// that CLI commands (which read the config) reach it.
type relayFixture struct {
	world   *sim.Sim
	hooks   *hookReceiver
	cfgPath string
	dbPath  string
	admin   string // host:port
}

// newRelayFixture writes a config whose webhook sink retries per retry
// (a YAML flow mapping) and whose admin API has token (may be empty).
func newRelayFixture(t *testing.T, tasks int, retry, token string) *relayFixture {
	t.Helper()
	f := &relayFixture{world: sim.New(sim.Options{Token: "tok", Tasks: tasks, Seed: 5})}
	api := httptest.NewServer(f.world)
	t.Cleanup(api.Close)
	f.hooks = newHookReceiver(t)
	dir := t.TempDir()
	f.dbPath = filepath.Join(dir, "relay.db")
	f.cfgPath = filepath.Join(dir, "relay.yaml")
	f.admin = freeLoopbackAddrT(t)
	writeFileT(t, f.cfgPath, fmt.Sprintf(`upstream: {base_url: %q, token: tok, rate_limit: 500, timeout: 2s}
poll: {interval: 100ms, full_sweep: 1s, initial: replay}
store: {path: %q}
admin: {addr: %q, token: %q}
sinks:
  - name: hooks
    type: webhook
    url: %q
    secret: %q
    max_in_flight: 4
    retry: %s
`, api.URL, f.dbPath, f.admin, token, f.hooks.url(), e2eSecret, retry))
	return f
}

// stepWorld applies n changes to the world and returns the logs they made.
func stepWorld(w *sim.Sim, n int) []sim.LogRef {
	before := len(w.Logs())
	w.Step(n)
	return w.Logs()[before:]
}

// syncBuffer is a bytes.Buffer safe for concurrent writes: the relay's log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// inProcRelay is `incs-relay run` inside the test process.
type inProcRelay struct {
	r      *relay.Relay
	cancel context.CancelFunc
	done   chan error
	log    *syncBuffer
}

// startInProc opens and runs the relay of the config at path; it is
// stopped at the end of the test if not before. Its log is dumped when
// the test fails.
func startInProc(t *testing.T, path string) *inProcRelay {
	t.Helper()
	return startInProcWith(t, path, relay.Options{}, nil)
}

// startInProcWith is startInProc with opts; opened, if not nil, gets the
// relay before it runs.
func startInProcWith(t *testing.T, path string, opts relay.Options, opened func(*relay.Relay)) *inProcRelay {
	t.Helper()
	cfg, err := config.ReadFile(path, os.LookupEnv)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ir := &inProcRelay{cancel: cancel, done: make(chan error, 1), log: &syncBuffer{}}
	ir.r, err = admin.Open(ctx, cfg, zerolog.New(ir.log).Level(zerolog.InfoLevel), opts)
	if err == nil && opened != nil {
		opened(ir.r)
	}
	if err != nil {
		cancel()
		require.NoError(t, err)
	}
	go func() { ir.done <- ir.r.Run(ctx) }()
	t.Cleanup(func() {
		ir.stop(t)
		if t.Failed() {
			t.Logf("relay log:\n%s", ir.log.String())
		}
	})
	return ir
}

// stop cancels the relay and waits for Run to return nil; it may be
// called more than once.
func (ir *inProcRelay) stop(t *testing.T) {
	t.Helper()
	ir.cancel()
	select {
	case err, ok := <-ir.done:
		if ok {
			assert.NoError(t, err, "relay run")
			close(ir.done)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("relay did not stop within 20s")
	}
}

// cli runs an incs-relay command in this process and returns its exit
// code, stdout and stderr.
func cli(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	m := &Main{Stdout: &out, Stderr: &errb, Getenv: func(string) (string, bool) { return "", false }}
	code = m.Run(context.Background(), args)
	return code, out.String(), errb.String()
}

// adminGet GETs path from the admin API at addr and returns status and body.
func adminGet(t *testing.T, addr, path, token string) (int, string) {
	t.Helper()
	return adminDo(t, http.MethodGet, addr, path, token)
}

func adminDo(t *testing.T, method, addr, path, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// sinkStatusOf reads GET /v1/sinks/{name}.
func sinkStatusOf(t *testing.T, addr, name string) relay.SinkStatus {
	t.Helper()
	code, body := adminGet(t, addr, "/v1/sinks/"+name, "")
	require.Equal(t, http.StatusOK, code, body)
	var s relay.SinkStatus
	require.NoError(t, json.Unmarshal([]byte(body), &s))
	return s
}

// storedEvents reads every event of the store at path; the relay must not
// be running.
func storedEvents(t *testing.T, path string) map[string]diff.Event {
	t.Helper()
	db, err := store.Open(path, store.Options{})
	require.NoError(t, err)
	defer db.Close()
	evs, err := db.Events(context.Background(), store.EventQuery{From: 1, Limit: 100000})
	require.NoError(t, err)
	m := make(map[string]diff.Event, len(evs))
	for _, ev := range evs {
		m[ev.ID] = ev
	}
	return m
}

// logWithFollower returns the first log of a task (not skipTask) that has
// at least two more, and those later logs.
func logWithFollower(logs []sim.LogRef, skipTask int64) (sim.LogRef, []sim.LogRef) {
	byTask := map[int64][]sim.LogRef{}
	for _, l := range logs {
		byTask[l.TaskID] = append(byTask[l.TaskID], l)
	}
	for _, l := range logs {
		if l.TaskID != skipTask && len(byTask[l.TaskID]) >= 3 {
			ls := byTask[l.TaskID]
			return ls[0], ls[1:]
		}
	}
	return sim.LogRef{}, nil
}

// TestDeadLetter_Webhook runs the relay with a receiver that answers 400
// to one event and 503 to another for longer than retry.max_elapsed. Both
// become dead letters with their attempts and last error, listed by
// `status` online and offline and by the admin API; every other event is
// delivered, also those of the same tasks behind them, and events of
// other tasks flow while the 503 one is still being retried. `replay`
// offline then redelivers both, with their ids, offsets and bodies.
func TestDeadLetter_Webhook(t *testing.T) {
	f := newRelayFixture(t, 30, "{initial: 10ms, max: 100ms, max_elapsed: 3s}", "")
	logs := f.world.Logs()
	bad, behindBad := logWithFollower(logs, 0)
	busy, behindBusy := logWithFollower(logs, bad.TaskID)
	require.NotEmpty(t, behindBad)
	require.NotEmpty(t, behindBusy)
	badID, busyID := diff.EventID(bad.LogID), diff.EventID(busy.LogID)
	f.hooks.setStatus(func(id string) int {
		switch id {
		case badID:
			return http.StatusBadRequest
		case busyID:
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	})

	ir := startInProc(t, f.cfgPath)
	// Everything but the two and their followers arrives, and then new
	// events of another task too, while the 503 event is still retried.
	want := len(logs) - 2 - len(behindBusy)
	require.Eventually(t, func() bool { return f.hooks.got.count() >= want },
		10*time.Second, 10*time.Millisecond, "delivered %d of %d", f.hooks.got.count(), want)
	require.Greater(t, f.hooks.attempts(busyID), 0, "the 503 event was attempted")
	var fresh []sim.LogRef // new logs of other tasks
	for len(fresh) == 0 {
		for _, l := range stepWorld(f.world, 3) {
			if l.TaskID != busy.TaskID {
				fresh = append(fresh, l)
			}
		}
	}
	require.Eventually(t, func() bool {
		f.hooks.got.mu.Lock()
		defer f.hooks.got.mu.Unlock()
		_, ok := f.hooks.got.bodies[diff.EventID(fresh[0].LogID)]
		return ok
	}, 5*time.Second, 10*time.Millisecond, "a new event of another task is delivered while the 503 event is retried")
	st := sinkStatusOf(t, f.admin, "hooks")
	for _, d := range st.Dead {
		assert.NotEqual(t, busyID, d.EventID, "the 503 event dead-lettered before max_elapsed: it cannot have shown that others flow meanwhile")
	}

	// Then the 503 event runs out of max_elapsed and its followers go.
	require.Eventually(t, func() bool { return sinkStatusOf(t, f.admin, "hooks").DeadLetters == 2 },
		10*time.Second, 20*time.Millisecond, "two dead letters")
	logs = f.world.Logs()
	require.Eventually(t, func() bool { return f.hooks.got.count() == len(logs)-2 },
		5*time.Second, 10*time.Millisecond, "all but the two dead letters delivered")
	for _, l := range append(behindBad, behindBusy...) {
		f.hooks.got.mu.Lock()
		_, ok := f.hooks.got.bodies[diff.EventID(l.LogID)]
		f.hooks.got.mu.Unlock()
		assert.True(t, ok, "log %d behind a dead letter of its task was delivered", l.LogID)
	}

	st = sinkStatusOf(t, f.admin, "hooks")
	require.Len(t, st.Dead, 2)
	dead := map[string]store.DeadLetter{}
	for _, d := range st.Dead {
		dead[d.EventID] = d
	}
	assert.Equal(t, 1, dead[badID].Attempts, "400 is permanent: one attempt")
	assert.Contains(t, dead[badID].Error, "HTTP 400")
	assert.Equal(t, bad.TaskID, dead[badID].TaskID)
	assert.Greater(t, dead[busyID].Attempts, 3, "503 is retried until max_elapsed")
	assert.Contains(t, dead[busyID].Error, "HTTP 503")
	assert.Contains(t, dead[busyID].Error, "gave up after")
	// The receiver counts a delivery before the relay hears its answer, so
	// the cursor may trail for a moment.
	require.Eventually(t, func() bool { s := sinkStatusOf(t, f.admin, "hooks"); return s.Cursor == s.Head },
		5*time.Second, 10*time.Millisecond, "the cursor passes dead letters: they block nothing")
	assert.Contains(t, st.LastError, "HTTP", "last error shown")

	// `status` online (through the admin API) lists them.
	code, out, errOut := cli(t, "status", "--config", f.cfgPath)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "running relay at "+f.admin)
	assert.Contains(t, out, "dead letters of hooks:")
	assert.Contains(t, out, badID)
	assert.Contains(t, out, busyID)
	assert.Contains(t, out, "HTTP 400")
	assert.Contains(t, out, "redeliver: incs-relay replay")
	t.Logf("status (online):\n%s", out)

	// Metrics count them.
	code, metricsText := adminGet(t, f.admin, "/metrics", "")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, metricsText, `incs_relay_sink_dead_letters{sink="hooks"} 2`)

	ir.stop(t)
	assert.Contains(t, ir.log.String(), "event dead-lettered", "the log says so")

	// `status` offline (on the store) lists them too, with the last error.
	code, out, errOut = cli(t, "status", "--config", f.cfgPath, "--json")
	require.Equal(t, 0, code, errOut)
	var offline struct{ Sinks []relay.SinkStatus }
	require.NoError(t, json.Unmarshal([]byte(out), &offline))
	require.Len(t, offline.Sinks, 1)
	assert.Equal(t, 2, offline.Sinks[0].DeadLetters)
	assert.NotEmpty(t, offline.Sinks[0].LastError, "last error persisted")
	code, out, _ = cli(t, "status", "--config", f.cfgPath)
	require.Equal(t, 0, code)
	assert.Contains(t, out, "relay not running")
	assert.Contains(t, out, badID)
	assert.Contains(t, out, busyID)

	// Replay offline from the lower of the two redelivers both once the
	// receiver accepts them.
	from := min(dead[badID].Offset, dead[busyID].Offset)
	f.hooks.setStatus(nil)
	code, out, errOut = cli(t, "replay", "--config", f.cfgPath, "--sink", "hooks", "--from", fmt.Sprint(from))
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "will be delivered again")
	code, out, _ = cli(t, "status", "--config", f.cfgPath, "--json")
	require.Equal(t, 0, code)
	require.NoError(t, json.Unmarshal([]byte(out), &offline))
	assert.Zero(t, offline.Sinks[0].DeadLetters, "replay took them out of the dead letters")
	assert.Equal(t, from-1, offline.Sinks[0].Cursor)

	startInProc(t, f.cfgPath)
	require.Eventually(t, func() bool { return f.hooks.got.count() == len(logs) },
		10*time.Second, 10*time.Millisecond, "the dead letters redelivered")
	require.Eventually(t, func() bool { return sinkStatusOf(t, f.admin, "hooks").Lag == 0 },
		10*time.Second, 10*time.Millisecond)
	assert.Zero(t, sinkStatusOf(t, f.admin, "hooks").DeadLetters)
	f.hooks.got.mu.Lock()
	defer f.hooks.got.mu.Unlock()
	assert.Empty(t, f.hooks.got.differ, "a redelivery carries the identical body")
	for _, id := range []string{badID, busyID} {
		ev := f.hooks.got.events[id]
		assert.Equal(t, dead[id].Offset, ev.Offset, "%s keeps its offset", id)
	}
	assert.Greater(t, f.hooks.got.dups, 0, "events after the replay offset were delivered again")
}

// TestDeadLetter_Gone runs the relay with a receiver answering 410 Gone:
// the sink pauses, visibly in `status`, /v1/sinks, the metrics and the log,
// while /readyz stays 200 (a paused sink is not the relay's fault);
// the pause survives a restart of the relay; `replay` (and later
// POST /v1/sinks/hooks/resume) end it and every event arrives.
func TestDeadLetter_Gone(t *testing.T) {
	f := newRelayFixture(t, 20, "{initial: 10ms, max: 100ms, max_elapsed: 1m}", "")
	logs := f.world.Logs()
	gone := func(string) int { return http.StatusGone }
	f.hooks.setStatus(gone)

	ir := startInProc(t, f.cfgPath)
	require.Eventually(t, func() bool { return sinkStatusOf(t, f.admin, "hooks").Paused },
		10*time.Second, 10*time.Millisecond, "paused")
	// It stays paused: no more attempts.
	attempts := f.hooks.snapshot().gone
	require.Eventually(t, func() bool { return sinkStatusOf(t, f.admin, "hooks").Head == uint64(len(logs)) },
		10*time.Second, 10*time.Millisecond)
	assert.LessOrEqual(t, f.hooks.snapshot().gone, attempts+4, "a paused sink stops attempting (up to max_in_flight already under way)")

	st := sinkStatusOf(t, f.admin, "hooks")
	assert.Contains(t, st.PauseReason, "HTTP 410")
	assert.Zero(t, st.DeadLetters, "a 410 pauses; it dead-letters nothing")
	readyzPaused := func() bool {
		code, _ := adminGet(t, f.admin, "/readyz", "")
		return code == http.StatusOK && sinkStatusOf(t, f.admin, "hooks").Paused
	}
	require.Eventually(t, readyzPaused, 5*time.Second, 10*time.Millisecond, "/readyz: 200 while the sink is paused")
	_, metricsText := adminGet(t, f.admin, "/metrics", "")
	assert.Contains(t, metricsText, `incs_relay_sink_paused{sink="hooks"} 1`)
	code, out, errOut := cli(t, "status", "--config", f.cfgPath)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "paused")
	assert.Contains(t, out, "hooks is paused: ")
	ir.stop(t)
	assert.Contains(t, ir.log.String(), "sink paused")

	// Offline, and after a restart, it is still paused.
	code, out, _ = cli(t, "status", "--config", f.cfgPath)
	require.Equal(t, 0, code)
	assert.Contains(t, out, "hooks is paused: ")
	f.hooks.setStatus(nil) // the receiver is back; the relay must not notice by itself
	ir = startInProc(t, f.cfgPath)
	require.Eventually(t, func() bool { return readyzPaused() && sinkStatusOf(t, f.admin, "hooks").Running },
		10*time.Second, 10*time.Millisecond, "after a restart: still paused, and ready")
	st = sinkStatusOf(t, f.admin, "hooks")
	assert.True(t, st.Paused, "the pause survives a restart")
	assert.Contains(t, ir.log.String(), "sink is paused since an earlier run")
	assert.Zero(t, f.hooks.got.count(), "nothing delivered while paused")

	// `replay --from cursor+1` (what status suggests) resumes it, online.
	code, out, errOut = cli(t, "replay", "--config", f.cfgPath, "--sink", "hooks", "--from", fmt.Sprint(st.Cursor+1))
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "are being delivered again")
	require.Eventually(t, func() bool { return f.hooks.got.count() == len(logs) },
		10*time.Second, 10*time.Millisecond, "nothing behind the 410 lost")
	require.Eventually(t, func() bool {
		code, _ := adminGet(t, f.admin, "/readyz", "")
		return code == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond, "ready again")
	_, metricsText = adminGet(t, f.admin, "/metrics", "")
	assert.Contains(t, metricsText, `incs_relay_sink_paused{sink="hooks"} 0`)

	// A 410 again pauses it again; POST resume ends that pause.
	f.hooks.setStatus(gone)
	newLogs := stepWorld(f.world, 2)
	require.Eventually(t, func() bool { return sinkStatusOf(t, f.admin, "hooks").Paused },
		10*time.Second, 10*time.Millisecond, "paused again")
	f.hooks.setStatus(nil)
	code, body := adminDo(t, http.MethodPost, f.admin, "/v1/sinks/hooks/resume", "")
	require.Equal(t, http.StatusOK, code, body)
	require.Eventually(t, func() bool { return f.hooks.got.count() == len(logs)+len(newLogs) },
		10*time.Second, 10*time.Millisecond, "resumed: the new events arrive")
	assert.False(t, sinkStatusOf(t, f.admin, "hooks").Paused)
	ir.stop(t)

	f.hooks.got.checkAgainst(t, "webhook", append(logs, newLogs...))
	code, out, _ = cli(t, "status", "--config", f.cfgPath)
	require.Equal(t, 0, code)
	assert.NotContains(t, out, "is paused", "the resume was persisted")
}
