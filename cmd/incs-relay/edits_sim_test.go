package main

// The changes that leave no log, end to end: the real binary against a
// simulated world that edits fields and comments and deletes tasks among
// its new logs, with API faults and a kill -9, in both store modes.

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/poller/sim"
)

// TestSimulation_Edits: 3,000 tasks, the API failing 5% of requests, a
// world that adds logs, edits task fields and comments without a log and
// deletes tasks, a relay started with `poll.initial: snapshot` and killed
// -9 in the middle, in bbolt and in jetstream mode. Every log made after
// the snapshot is one event and none before it; every final value of an
// edited field or comment is reported; every reported change is one that
// happened; every deleted task the relay had seen is one task.deleted and
// no live task is; ids follow the contract; a redelivery is
// byte-identical; every body matches its schema.
func TestSimulation_Edits(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute of simulation")
	}
	for _, mode := range []string{"bbolt", "jetstream"} {
		t.Run(mode, func(t *testing.T) { simulateEdits(t, mode) })
	}
}

func simulateEdits(t *testing.T, mode string) {
	world := sim.New(sim.Options{
		Token: "tok", Tasks: 3000, Seed: 29, Extra: true,
		CommentEdits: 0.08, FieldEdits: 0.08, Deletions: 0.02,
		// status and assignee_username change with their logs here, so
		// every reported change of a field can be checked against the
		// edits made.
		EditFields: []string{"name", "description", "type", "creation_id", "auth_id", "user_name", "user_phone"},
	})
	api := httptest.NewServer(world)
	defer api.Close()
	hooks := newHookReceiver(t)

	dir := t.TempDir()
	adminAddr := freeLoopbackAddrT(t)
	storeCfg := fmt.Sprintf("store:\n  path: %q\n", filepath.Join(dir, "relay.db"))
	if mode == "jetstream" {
		nb := startNATSBox(t)
		storeCfg = fmt.Sprintf("store:\n  type: jetstream\n  url: %q\n  lease: 2s\n", nb.url())
	}
	cfgPath := filepath.Join(dir, "relay.yaml")
	writeFileT(t, cfgPath, fmt.Sprintf(`upstream:
  base_url: %q
  token: tok
  page_size: 100
  rate_limit: 500
  timeout: 1s
poll:
  interval: 200ms
  full_sweep: 2s
  initial: snapshot
%sadmin:
  addr: %q
log:
  level: info
  format: json
sinks:
  - name: hooks
    type: webhook
    url: %q
    secret: %q
    max_in_flight: 8
    timeout: 2s
    retry: {initial: 10ms, max: 100ms, max_elapsed: 10m}
`, api.URL, storeCfg, adminAddr, hooks.url(), e2eSecret))

	// The snapshot: nothing changes until the first cycle ended.
	existing := world.LogCount()
	editsBefore := world.EditCount()
	relay := startRelayChild(t, "run", "--config", cfgPath)
	relay.waitRunning(t, 30*time.Second)
	require.True(t, waitFor(60*time.Second, func() bool { return pollCycles(adminAddr) >= 1 }),
		"the first poll cycle ended\n%s", relay.output())

	// The world changes for 8 s; the relay is killed -9 after 4.
	world.SetFaults(sim.Faults{Rate: 0.05, SlowDelay: 1200 * time.Millisecond})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				world.Step(6)
			}
		}
	})
	time.Sleep(4 * time.Second)
	relay.kill(t)
	time.Sleep(500 * time.Millisecond)
	relay = startRelayChild(t, "run", "--config", cfgPath)
	relay.waitRunning(t, 30*time.Second)
	time.Sleep(4 * time.Second)
	close(stop)
	wg.Wait()
	world.SetFaults(sim.Faults{})

	logs := world.Logs()[existing:]
	edits := world.EditsFrom(editsBefore)
	seenAtStart := map[int64]bool{} // tasks the snapshot recorded
	for _, l := range world.Logs()[:existing] {
		seenAtStart[l.TaskID] = true
	}
	var deleted []int64 // deleted tasks
	isDeleted := map[int64]bool{}
	for _, e := range edits {
		if e.Kind == sim.TaskDeleted {
			deleted = append(deleted, e.TaskID)
			isDeleted[e.TaskID] = true
		}
	}
	// Caught up: every new log, every confirmed deletion, and then
	// nothing more for 3 s (the last edits' reads).
	last, lastAt := -1, time.Now()
	ok := waitFor(90*time.Second, func() bool {
		hooks.got.mu.Lock()
		n := len(hooks.got.bodies)
		done := true
		for _, l := range logs {
			// A log of a task deleted before the relay read it is never
			// seen.
			if _, ok := hooks.got.bodies[diff.EventID(l.LogID)]; !ok && !isDeleted[l.TaskID] {
				done = false
				break
			}
		}
		seen := maps.Clone(seenAtStart) // and those the relay stored an event of
		for _, ev := range hooks.got.events {
			seen[ev.Data.TaskID] = true
		}
		for _, id := range deleted {
			if _, ok := hooks.got.bodies["del-"+strconv.FormatInt(id, 10)]; !ok && seen[id] {
				done = false
				break
			}
		}
		hooks.got.mu.Unlock()
		if n != last {
			last, lastAt = n, time.Now()
		}
		return done && time.Since(lastAt) > 3*time.Second
	})
	if !ok {
		hooks.got.mu.Lock()
		var missLogs, missDel []string
		for _, l := range logs {
			if _, ok := hooks.got.bodies[diff.EventID(l.LogID)]; !ok && !isDeleted[l.TaskID] {
				missLogs = append(missLogs, fmt.Sprintf("%d(task %d)", l.LogID, l.TaskID))
			}
		}
		for _, id := range deleted {
			if _, ok := hooks.got.bodies["del-"+strconv.FormatInt(id, 10)]; !ok {
				missDel = append(missDel, strconv.FormatInt(id, 10))
			}
		}
		hooks.got.mu.Unlock()
		t.Fatalf("not caught up: %d events at the webhook; logs missing %v; deletions missing %v (of %d)\n%s",
			hooks.got.total(), missLogs, missDel, len(deleted), relay.output())
	}
	relay.terminate(t, 20*time.Second)

	got := hooks.got
	got.mu.Lock()
	defer got.mu.Unlock()
	assert.Empty(t, got.differ, "a redelivery carries the identical body")
	validateBodies(t, maps.Values(got.bodies))
	assert.Zero(t, hooks.snapshot().badSig)

	// Logs: one event each after the snapshot, none before.
	newLog := map[string]bool{}
	for _, l := range logs {
		newLog[diff.EventID(l.LogID)] = true
		ev, ok := got.events[diff.EventID(l.LogID)]
		if !ok && isDeleted[l.TaskID] {
			continue // deleted before the relay read it
		}
		if assert.True(t, ok, "log %d has no event", l.LogID) {
			assert.Equal(t, diff.TypeOf(l.Type), ev.Type)
		}
	}
	var evs []diff.Event
	for id, ev := range got.events {
		if isLogEvent(id) {
			assert.True(t, newLog[id], "%s: a log made before the snapshot became an event", id)
		}
		evs = append(evs, ev)
	}
	slices.SortFunc(evs, func(a, b diff.Event) int { return int(a.Offset) - int(b.Offset) })

	// What happened: each task's fields' and each comment's values.
	had := map[string]map[string]bool{} // "<task>/<field>" or "log/<id>" -> values
	note := func(k, v string) {
		if had[k] == nil {
			had[k] = map[string]bool{}
		}
		had[k][v] = true
	}
	final := map[string]string{}
	gone := map[int64]bool{}
	for _, e := range world.EditsFrom(0) {
		k := fmt.Sprintf("%d/%s", e.TaskID, e.Field)
		if e.Kind == sim.CommentEdited {
			k = fmt.Sprintf("log/%d", e.LogID)
		}
		switch e.Kind {
		case sim.TaskDeleted:
			gone[e.TaskID] = true
			continue
		}
		note(k, e.From)
		note(k, e.To)
		final[k] = e.To
	}

	loc := poller.DefaultLocation()
	idRE := map[string]*regexp.Regexp{
		diff.TypeTaskUpdated:    regexp.MustCompile(`^upd-(\d+)-(\d+)(-\d+)?$`),
		diff.TypeTaskLogUpdated: regexp.MustCompile(`^logupd-(\d+)-(\d+)(-\d+)?$`),
		diff.TypeTaskDeleted:    regexp.MustCompile(`^del-(\d+)$`),
	}
	lastTask := map[int64]map[string]any{} // the task as its last event showed it
	lastComment := map[int64]string{}
	counts := map[string]int{}
	for _, ev := range evs {
		var task map[string]any
		if len(ev.Data.Task) > 0 {
			require.NoError(t, json.Unmarshal(ev.Data.Task, &task))
		}
		if ev.Type != diff.TypeTaskDeleted && !diff.IsDerived(ev.Type) {
			lastTask[ev.Data.TaskID] = task
		}
		if len(ev.Data.Log) > 0 {
			var l diff.Log
			require.NoError(t, json.Unmarshal(ev.Data.Log, &l))
			lastComment[l.ID] = l.Comment
		}
		if !diff.IsEdit(ev.Type) {
			continue
		}
		counts[ev.Type]++
		m := idRE[ev.Type].FindStringSubmatch(ev.ID)
		if !assert.NotNil(t, m, "id %s of a %s", ev.ID, ev.Type) {
			continue
		}
		switch ev.Type {
		case diff.TypeTaskUpdated:
			assert.Equal(t, strconv.FormatInt(ev.Data.TaskID, 10), m[1])
			at, err := diff.ParseTime(task["updated_at"].(string), loc)
			require.NoError(t, err)
			assert.Equal(t, strconv.FormatInt(at.Unix(), 10), m[2], "%s: the task's updated_at", ev.ID)
			for _, c := range ev.Data.Changes {
				k := fmt.Sprintf("%d/%s", ev.Data.TaskID, c.Field)
				assert.True(t, had[k][jsonText(c.From)], "%s: %s was never %s", ev.ID, c.Field, c.From)
				assert.True(t, had[k][jsonText(c.To)], "%s: %s was never %s", ev.ID, c.Field, c.To)
			}
		case diff.TypeTaskLogUpdated:
			var l diff.Log
			require.NoError(t, json.Unmarshal(ev.Data.Log, &l))
			assert.Equal(t, strconv.FormatInt(l.ID, 10), m[1])
			at, err := diff.ParseTime(l.UpdatedAt, loc)
			require.NoError(t, err)
			assert.Equal(t, strconv.FormatInt(at.Unix(), 10), m[2], "%s: the log's updated_at", ev.ID)
			for _, c := range ev.Data.Changes {
				if c.Field == "comment" {
					k := fmt.Sprintf("log/%d", l.ID)
					assert.True(t, had[k][jsonText(c.From)], "%s: the comment was never %s", ev.ID, c.From)
					assert.True(t, had[k][jsonText(c.To)], "%s: the comment was never %s", ev.ID, c.To)
				}
			}
		case diff.TypeTaskDeleted:
			assert.True(t, gone[ev.Data.TaskID], "%s: the task was never deleted", ev.ID)
		}
	}
	// Every final value reported: the last event of each live task
	// shows its fields' final values, and each edited comment's last
	// task.log_updated its final text.
	for k, v := range final {
		owner, field, _ := strings.Cut(k, "/")
		if owner == "log" {
			id, _ := strconv.ParseInt(field, 10, 64)
			if !gone[taskOfLog(world, id)] {
				if !assert.Equal(t, v, lastComment[id], "comment of log %d: the final text reported", id) {
					for _, e := range world.EditsFrom(0) {
						if e.LogID == id {
							t.Logf("edit %+v", e)
						}
					}
					for _, ev := range evs {
						if ev.Data.TaskID == taskOfLog(world, id) {
							t.Logf("event %s at %s: %s", ev.ID, ev.Time, ev.Data.Log)
						}
					}
				}
			}
			continue
		}
		id, _ := strconv.ParseInt(owner, 10, 64)
		if gone[id] {
			continue
		}
		task, ok := lastTask[id]
		if !assert.True(t, ok, "task %d was edited and never reported", id) {
			continue
		}
		if !assert.Equal(t, v, valueText(task[field]), "task %d %s: the final value reported", id, field) {
			for _, e := range world.EditsFrom(0) {
				if e.TaskID == id {
					t.Logf("edit %+v", e)
				}
			}
			for _, ev := range evs {
				if ev.Data.TaskID == id {
					t.Logf("event %s at %s: %s", ev.ID, ev.Time, ev.Data.Task)
				}
			}
		}
	}
	t.Logf("%s: %d logs since the snapshot (%d before), %d edits; events: %d task.updated, %d task.log_updated, %d task.deleted (%d deletions of seen tasks); %d redeliveries",
		mode, len(logs), existing, len(edits), counts[diff.TypeTaskUpdated], counts[diff.TypeTaskLogUpdated], counts[diff.TypeTaskDeleted], len(deleted), got.dups)
	assert.Positive(t, counts[diff.TypeTaskUpdated])
	assert.Positive(t, counts[diff.TypeTaskLogUpdated])
	assert.Positive(t, counts[diff.TypeTaskDeleted])
}

// pollCycles returns the poll cycles a relay reports at GET /v1/poll, or
// -1.
func pollCycles(addr string) int {
	resp, err := http.Get("http://" + addr + "/v1/poll")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var v struct {
		Cycles int `json:"cycles"`
	}
	if json.NewDecoder(resp.Body).Decode(&v) != nil {
		return -1
	}
	return v.Cycles
}

// jsonText returns a change's JSON value as the simulator records it:
// a string's text, a number's digits.
func jsonText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// valueText returns a decoded JSON value as the simulator records it.
func valueText(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

// taskOfLog returns the task of a log of the world, or 0.
func taskOfLog(world *sim.Sim, logID int64) int64 {
	for _, l := range world.Logs() {
		if l.LogID == logID {
			return l.TaskID
		}
	}
	return 0
}
