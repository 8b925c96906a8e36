package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/docs"
	"github.com/incs-relay/incs-relay/poller/sim"
	"github.com/incs-relay/incs-relay/store"
)

// TestE2E_RulesStalled runs the real `incs-relay run` as a child process
// against the simulator with a real clock and a rule "in progress with no
// log for 3s". The simulator's history makes every open task in progress
// stalled at the first start; of ten fresh tasks put in progress during
// the run, five get a comment every second and five are left alone. The
// relay is killed with SIGKILL twice, at moments where firings are due,
// and restarted on the same store. In the end every task in progress
// except the five kept busy has exactly one task.stalled event, anchored
// on its last log; the busy ones have none; no event id is stored twice;
// the ids stored before each kill are still there, unchanged; and each
// firing happened at or after its due time, within a few intervals.
func TestE2E_RulesStalled(t *testing.T) {
	const after = 3 * time.Second
	world := sim.New(sim.Options{Token: "tok", Tasks: 150, Seed: 14})
	api := httptest.NewServer(world)
	defer api.Close()
	hooks := newHookReceiver(t)

	dir := t.TempDir()
	dbPath := filepath.Join(dir, "relay.db")
	cfgPath := filepath.Join(dir, "relay.yaml")
	adminAddr := freeLoopbackAddrT(t)
	writeFileT(t, cfgPath, fmt.Sprintf(`upstream:
  base_url: %q
  token: tok
  page_size: 50
  rate_limit: 500
  timeout: 2s
poll:
  interval: 250ms
  full_sweep: 2s
store:
  path: %q
admin:
  addr: %q
log:
  level: info
  format: json
rules:
  - name: stalled
    event: task.stalled
    when: { status: [1] }
    since: last_log
    after: %s
    resolve: true
sinks:
  - name: hooks
    type: webhook
    url: %q
    secret: %q
    events: [task.stalled, task.stalled_resolved]
    timeout: 2s
`, api.URL, dbPath, adminAddr, after, hooks.url(), e2eSecret))

	var busy, idle []int64
	for i := range 10 {
		id := world.NewTask()
		require.True(t, world.SetStatus(id, diff.StatusInProgress))
		if i%2 == 0 {
			busy = append(busy, id)
		} else {
			idle = append(idle, id)
		}
	}
	stopBusy := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopBusy:
				return
			case <-tick.C:
				for _, id := range busy {
					world.Comment(id)
				}
			}
		}
	})
	defer func() {
		select {
		case <-stopBusy:
		default:
			close(stopBusy)
		}
		wg.Wait()
	}()

	storedStalled := func() map[string]diff.Event {
		db, err := store.Open(dbPath, store.Options{Timeout: 5 * time.Second})
		require.NoError(t, err)
		defer db.Close()
		evs, err := db.Events(context.Background(), store.EventQuery{From: 1, Limit: 100000, Type: "task.stalled"})
		require.NoError(t, err)
		out := map[string]diff.Event{}
		for _, ev := range evs {
			_, dup := out[ev.ID]
			require.False(t, dup, "event %s stored twice", ev.ID)
			out[ev.ID] = ev
		}
		return out
	}

	// Life 1: the first sweep fires the history's stalled tasks; killed
	// before the fresh ones are due.
	c := startRelayChild(t, "run", "--config", cfgPath)
	c.waitRunning(t, 20*time.Second)
	sleepRandom(1500 * time.Millisecond)
	c.kill(t)
	first := storedStalled()
	require.NotEmpty(t, first, "the history's stalled tasks fired in the first life\n%s", c.output())

	// Life 2: killed right around the idle tasks' due time.
	c = startRelayChild(t, "run", "--config", cfgPath)
	c.waitRunning(t, 20*time.Second)
	sleepRandom(after)
	c.kill(t)
	second := storedStalled()
	for id, ev := range first {
		if assert.Contains(t, second, id) {
			assert.Equal(t, ev.Offset, second[id].Offset)
		}
	}

	// Life 3 catches up and stops cleanly while the busy tasks are busy.
	c = startRelayChild(t, "run", "--config", cfgPath)
	c.waitRunning(t, 20*time.Second)
	sleepRandom(after + time.Second)
	resp, err := http.Get("http://" + adminAddr + "/v1/poll")
	require.NoError(t, err)
	var pv relay.PollView
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&pv))
	resp.Body.Close()
	require.NotNil(t, pv.Rules, "GET /v1/poll shows the rules")
	assert.Equal(t, 1, pv.Rules.Rules)
	assert.Positive(t, pv.Rules.Tracked)
	for path, want := range map[string]string{
		"/v1/schemas/task.stalled.json":          `"const": "task.stalled"`,
		"/v1/schemas/task.stalled_resolved.json": `"const": "task.stalled_resolved"`,
		"/v1/schemas/task.assigned.json":         `"const": "task.assigned"`,
		"/v1/asyncapi.yaml":                      "asyncapi: 3.0.0",
		"/v1/schemas/task.late.json":             "no schema",
	} {
		resp, err := http.Get("http://" + adminAddr + path)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Contains(t, string(b), want, path)
	}
	c.terminate(t, 20*time.Second)
	assert.Equal(t, 0, c.exitCode(), c.output())
	close(stopBusy)
	wg.Wait()
	assert.NotContains(t, c.output(), "WARNING: DATA RACE")
	final := storedStalled()
	validateStored(t, dbPath)
	code, out, errOut := cli(t, "events", "--config", cfgPath, "--type", "task.stalled", "--limit", "100000")
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, len(final), strings.Count(out, "\n"), "events --type takes a rule's type")
	for id := range second {
		assert.Contains(t, final, id)
	}

	// Ground truth: each task's last log and status.
	last := map[int64]int64{}
	for _, l := range world.Logs() {
		last[l.TaskID] = max(last[l.TaskID], l.LogID)
	}
	want := map[string]int64{}
	for id, logID := range last {
		if st, _ := world.TaskStatus(id); st == diff.StatusInProgress && !slices.Contains(busy, id) {
			want[diff.RuleEventID("stalled", id, logID, 0)] = id
		}
	}
	require.Greater(t, len(want), len(idle))
	for _, id := range idle {
		assert.Contains(t, want, diff.RuleEventID("stalled", id, last[id], 0), "idle task %d", id)
	}
	got := map[string]bool{}
	for id, ev := range final {
		got[id] = true
		assert.Contains(t, want, id, "unexpected firing %s", id)
		d := ev.Data.Derived
		require.NotNil(t, d)
		assert.True(t, d.DueAt.Equal(d.AnchorAt.Add(after)), "%s: due = anchor + after", id)
		assert.False(t, d.FiredAt.Before(d.DueAt), "%s: fired before due", id)
		if slices.Contains(idle, ev.Data.TaskID) {
			assert.Less(t, d.FiredAt.Sub(d.DueAt), 3*time.Second, "%s: fired late (a restart sits in between)", id)
		}
		assert.Equal(t, "stalled", d.Rule)
		assert.Equal(t, 1, ev.Data.Status)
	}
	for id, task := range want {
		assert.True(t, got[id], "task %d: no task.stalled event %s", task, id)
	}
	for _, id := range busy {
		for eid, ev := range final {
			assert.NotEqual(t, id, ev.Data.TaskID, "busy task %d fired %s", id, eid)
		}
	}

	// The webhook got the firings, each once by id.
	require.True(t, waitFor(10*time.Second, func() bool { return hooks.got.count() >= len(want) }), "webhook got %d of %d", hooks.got.count(), len(want))
	assert.Zero(t, hooks.snapshot().badSig, "the receiver's consume.Verifier takes derived events")
	hooks.got.mu.Lock()
	for id := range want {
		assert.Contains(t, hooks.got.bodies, id, "webhook got %s", id)
	}
	hooks.got.mu.Unlock()
}

// validateStored checks every event in the store at path against its
// published JSON Schema (docs/schemas).
func validateStored(t *testing.T, path string) {
	t.Helper()
	db, err := store.Open(path, store.Options{Timeout: 5 * time.Second})
	require.NoError(t, err)
	defer db.Close()
	evs, err := db.Events(context.Background(), store.EventQuery{From: 1, Limit: 100000})
	require.NoError(t, err)
	require.NotEmpty(t, evs)
	validateBodies(t, func(yield func([]byte) bool) {
		for _, ev := range evs {
			if !yield(ev.Body) {
				return
			}
		}
	})
}

// validateBodies checks event bodies against the published schemas.
func validateBodies(t *testing.T, bodies func(yield func([]byte) bool)) {
	t.Helper()
	v, err := docs.NewValidator()
	require.NoError(t, err)
	n := 0
	for b := range bodies {
		n++
		if err := v.Validate(b); err != nil {
			assert.NoError(t, err, "%s", b)
		}
	}
	t.Logf("%d events validated against docs/schemas", n)
}
