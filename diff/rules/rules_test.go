package rules

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

var (
	shanghai = mustZone("Asia/Shanghai")
	newYork  = mustZone("America/New_York")
)

func mustZone(name string) *time.Location {
	l, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return l
}

// at parses an API time in Shanghai.
func at(s string) time.Time {
	t, err := diff.ParseTime(s, shanghai)
	if err != nil {
		panic(err)
	}
	return t
}

// taskAt builds a task with a creation log at created and further logs
// given as (type, status, time) triples.
type logSpec struct {
	typ, status int
	at          string
	assignee    string
}

func buildTask(id int64, status int, logs ...logSpec) diff.Task {
	t := diff.Task{ID: id, Status: status, Type: 1, Name: fmt.Sprintf("task %d", id)}
	for i, l := range logs {
		t.Logs = append(t.Logs, diff.Log{ID: id*100 + int64(i), Type: l.typ, Status: l.status, CreatedAt: l.at, AssigneeUsername: l.assignee})
		if l.typ == diff.LogAssigned {
			t.AssigneeUsername = l.assignee
		}
	}
	t.CreatedAt = logs[0].at
	t.UpdatedAt = logs[len(logs)-1].at
	return t
}

func stalledRule(after time.Duration) *Rule {
	return &Rule{Name: "stalled", Event: "task.stalled", When: When{Status: []int{1}}, Since: SinceLastLog, After: after, Resolve: true}
}

func mustEngine(t *testing.T, rs ...*Rule) *Engine {
	t.Helper()
	require.NoError(t, CheckSet(rs))
	return NewEngine(rs, shanghai)
}

// run evaluates and commits one read.
func run(e *Engine, tasks []diff.Task, unchanged []int64, now time.Time) []diff.Event {
	b := e.Evaluate(tasks, unchanged, now)
	e.Commit(b)
	var out []diff.Event
	for _, c := range b.Changes {
		out = append(out, c.Events...)
	}
	return out
}

func ids(evs []diff.Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.ID)
	}
	return out
}

// TestEngine_FiresOncePerOccurrence drives a fake clock in one-minute
// cycles: each cycle reads the due tasks (unchanged) as the relay's
// follow-ups do. The rule fires at the first read at or after the due
// time, within one interval, and never again for that anchor.
func TestEngine_FiresOncePerOccurrence(t *testing.T) {
	e := mustEngine(t, stalledRule(4*time.Hour))
	task := buildTask(7, 1, logSpec{1, 0, "2026-04-08 09:00:00", ""}, logSpec{3, 1, "2026-04-08 09:10:30", ""})
	now := at("2026-04-08 09:11:00")
	require.Empty(t, run(e, []diff.Task{task}, nil, now))
	due := at("2026-04-08 13:10:30")
	assert.Equal(t, due, e.NextDue())

	interval := time.Minute
	var fired []diff.Event
	var firedAt time.Time
	for now = now.Add(interval); now.Before(at("2026-04-09 09:00:00")); now = now.Add(interval) {
		evs := run(e, nil, e.Due(now), now)
		if len(evs) > 0 && firedAt.IsZero() {
			firedAt = now
		}
		fired = append(fired, evs...)
	}
	require.Len(t, fired, 1)
	ev := fired[0]
	assert.Equal(t, "rule-stalled-7-701-0", ev.ID)
	assert.Equal(t, "task.stalled", ev.Type)
	assert.False(t, firedAt.Before(due))
	assert.Less(t, firedAt.Sub(due), interval)
	d := ev.Data.Derived
	require.NotNil(t, d)
	assert.Equal(t, "stalled", d.Rule)
	assert.Equal(t, SinceLastLog, d.Since)
	assert.Equal(t, int64(701), d.AnchorLogID)
	assert.True(t, d.AnchorAt.Equal(at("2026-04-08 09:10:30")))
	assert.True(t, d.DueAt.Equal(due))
	assert.True(t, d.FiredAt.Equal(firedAt))
	assert.Equal(t, 0, d.Step)
	assert.Equal(t, 1, ev.Data.Status)
	assert.True(t, ev.Time.Equal(due))

	// A new log starts a new occurrence: the old one resolves at once, the
	// new one fires 4 h after the new log.
	task.Logs = append(task.Logs, diff.Log{ID: 702, Type: diff.LogCommented, CreatedAt: "2026-04-09 09:30:00"})
	task.UpdatedAt = "2026-04-09 09:30:00"
	evs := run(e, []diff.Task{task}, nil, at("2026-04-09 09:31:00"))
	assert.Equal(t, []string{"rule-stalled-7-701-resolved"}, ids(evs))
	assert.Equal(t, "task.stalled_resolved", evs[0].Type)
	assert.Equal(t, 0, evs[0].Data.Step)
	assert.True(t, evs[0].Data.Resolved)
	assert.JSONEq(t, `{"id":7,"creation_id":0,"auth_id":0,"name":"task 7","description":"","type":1,"user_name":"","user_phone":"","assignee_username":"","status":1,"created_at":"2026-04-08 09:00:00","updated_at":"2026-04-09 09:30:00"}`, string(evs[0].Data.Task))
	// Before the due time nothing fires, even on a decoded read.
	assert.Empty(t, run(e, []diff.Task{task}, nil, at("2026-04-09 13:29:59")))
	evs = run(e, nil, []int64{7}, at("2026-04-09 13:30:00"))
	assert.Equal(t, []string{"rule-stalled-7-702-0"}, ids(evs))
	assert.Empty(t, evs[0].Data.Task, "an unchanged read leaves the task to the store")
	assert.Empty(t, run(e, nil, []int64{7}, at("2026-04-09 18:30:00")))
	assert.Empty(t, e.Due(at("2026-04-10 00:00:00")))
}

// TestEngine_ReadBeforeDue: a log that arrived in time but was read only
// after the due time raises no alarm: the read shows the new anchor.
func TestEngine_ReadBeforeDue(t *testing.T) {
	e := mustEngine(t, stalledRule(time.Hour))
	task := buildTask(3, 1, logSpec{1, 1, "2026-04-08 09:00:00", ""})
	run(e, []diff.Task{task}, nil, at("2026-04-08 09:00:05"))
	task.Logs = append(task.Logs, diff.Log{ID: 301, Type: diff.LogCommented, CreatedAt: "2026-04-08 09:59:00"})
	task.UpdatedAt = "2026-04-08 09:59:00"
	// Due at 10:00; the read at 10:00:30 shows the comment of 09:59.
	assert.Empty(t, run(e, []diff.Task{task}, nil, at("2026-04-08 10:00:30")))
	assert.Equal(t, at("2026-04-08 10:59:00"), e.NextDue())
}

func TestEngine_ResolvesWhenConditionClears(t *testing.T) {
	r := &Rule{Name: "late", Event: "task.late", When: When{Status: []int{0, 1}}, Since: SinceCreated, After: 24 * time.Hour, Resolve: true}
	e := mustEngine(t, r)
	task := buildTask(5, 1, logSpec{1, 0, "2026-04-08 09:00:00", ""}, logSpec{3, 1, "2026-04-08 10:00:00", ""})
	run(e, []diff.Task{task}, nil, at("2026-04-08 10:00:01"))
	evs := run(e, nil, e.Due(at("2026-04-09 09:00:10")), at("2026-04-09 09:00:10"))
	assert.Equal(t, []string{"rule-late-5-500-0"}, ids(evs))

	task.Status = 2
	task.Logs = append(task.Logs, diff.Log{ID: 502, Type: diff.LogStatusChanged, Status: 2, PreStatus: 1, CreatedAt: "2026-04-09 11:00:00"})
	task.UpdatedAt = "2026-04-09 11:00:00"
	evs = run(e, []diff.Task{task}, nil, at("2026-04-09 11:00:05"))
	require.Equal(t, []string{"rule-late-5-500-resolved"}, ids(evs))
	assert.Equal(t, 2, evs[0].Data.Status)
	// Reopened with the same anchor: this occurrence is over, it does not
	// fire again (its id would repeat).
	task.Status = 1
	task.Logs = append(task.Logs, diff.Log{ID: 503, Type: diff.LogStatusChanged, Status: 1, PreStatus: 2, CreatedAt: "2026-04-09 12:00:00"})
	task.UpdatedAt = "2026-04-09 12:00:00"
	assert.Empty(t, run(e, []diff.Task{task}, nil, at("2026-04-09 12:00:05")))
	assert.Empty(t, e.Due(at("2026-04-12 00:00:00")))
}

func TestEngine_RepeatsToMax(t *testing.T) {
	r := stalledRule(4 * time.Hour)
	r.Repeat = Repeat{Every: 2 * time.Hour, Max: 3}
	e := mustEngine(t, r)
	task := buildTask(9, 1, logSpec{1, 1, "2026-04-08 08:00:00", ""})
	run(e, []diff.Task{task}, nil, at("2026-04-08 08:00:01"))
	var got []diff.Event
	for now := at("2026-04-08 08:01:00"); now.Before(at("2026-04-09 08:00:00")); now = now.Add(time.Minute) {
		got = append(got, run(e, nil, e.Due(now), now)...)
	}
	require.Equal(t, []string{"rule-stalled-9-900-0", "rule-stalled-9-900-1", "rule-stalled-9-900-2"}, ids(got))
	for i, want := range []string{"2026-04-08 12:00:00", "2026-04-08 14:00:00", "2026-04-08 16:00:00"} {
		assert.True(t, got[i].Data.DueAt.Equal(at(want)), "step %d due %s", i, got[i].Data.DueAt)
		assert.Equal(t, i, got[i].Data.Step)
	}

	// A late first read (say the relay was down) fires every step due by
	// then, each with its own due_at, in step order.
	e2 := mustEngine(t, r)
	evs := run(e2, []diff.Task{task}, nil, at("2026-04-08 14:30:00"))
	assert.Equal(t, []string{"rule-stalled-9-900-0", "rule-stalled-9-900-1"}, ids(evs))
}

// TestEngine_RestartKeepsFired: the state records a Batch carries, loaded
// into a new Engine, fire nothing twice and drop nothing.
func TestEngine_RestartKeepsFired(t *testing.T) {
	r := stalledRule(time.Hour)
	r.Repeat = Repeat{Every: time.Hour, Max: 2}
	e := mustEngine(t, r)
	task := buildTask(4, 1, logSpec{1, 1, "2026-04-08 08:00:00", ""})
	records := map[int64][]byte{}
	step := func(e *Engine, tasks []diff.Task, unchanged []int64, now time.Time) []string {
		b := e.Evaluate(tasks, unchanged, now)
		for _, c := range b.Changes {
			records[c.TaskID] = c.Record
		}
		e.Commit(b)
		var out []diff.Event
		for _, c := range b.Changes {
			out = append(out, c.Events...)
		}
		return ids(out)
	}
	assert.Equal(t, []string{"rule-stalled-4-400-0"}, step(e, []diff.Task{task}, nil, at("2026-04-08 09:30:00")))

	e2 := mustEngine(t, r)
	for id, rec := range records {
		require.NoError(t, e2.Load(id, rec))
	}
	assert.Equal(t, 1, e2.Len())
	assert.Empty(t, step(e2, []diff.Task{task}, nil, at("2026-04-08 09:40:00")))
	assert.Equal(t, []int64{4}, e2.Due(at("2026-04-08 10:00:00")))
	assert.Equal(t, []string{"rule-stalled-4-400-1"}, step(e2, nil, []int64{4}, at("2026-04-08 10:00:00")))
}

func TestEngine_Filters(t *testing.T) {
	r := &Rule{Name: "unassigned", Event: "task.unassigned", When: When{Status: []int{0, 1}, TaskTypes: []int{1}, Assignee: Assignee{Absent: true}},
		Since: SinceCreated, After: 30 * time.Minute, Resolve: true}
	e := mustEngine(t, r)
	a := buildTask(1, 0, logSpec{1, 0, "2026-04-08 08:00:00", ""})
	b := buildTask(2, 0, logSpec{1, 0, "2026-04-08 08:00:00", ""}, logSpec{2, 0, "2026-04-08 08:10:00", "incs_1"})
	c := buildTask(3, 0, logSpec{1, 0, "2026-04-08 08:00:00", ""})
	c.Type = 2
	evs := run(e, []diff.Task{a, b, c}, nil, at("2026-04-08 09:00:00"))
	assert.Equal(t, []string{"rule-unassigned-1-100-0"}, ids(evs))
	assert.Equal(t, 1, e.Len(), "tasks no rule matches are not tracked")

	// Assigned later: resolves.
	a.Logs = append(a.Logs, diff.Log{ID: 101, Type: diff.LogAssigned, AssigneeUsername: "incs_2", CreatedAt: "2026-04-08 09:05:00"})
	a.AssigneeUsername, a.UpdatedAt = "incs_2", "2026-04-08 09:05:00"
	evs = run(e, []diff.Task{a}, nil, at("2026-04-08 09:06:00"))
	assert.Equal(t, []string{"rule-unassigned-1-100-resolved"}, ids(evs))
	assert.Equal(t, "incs_2", evs[0].Data.AssigneeUsername)

	p := When{Assignee: Assignee{Names: []string{"incs_1"}}}
	assert.True(t, p.Matches(&b))
	assert.False(t, p.Matches(&c))
	assert.True(t, (&When{Assignee: Assignee{Present: true}}).Matches(&b))
}

func TestEngine_AnchorKinds(t *testing.T) {
	task := buildTask(6, 1,
		logSpec{1, 0, "2026-04-08 08:00:00", ""},
		logSpec{2, 0, "2026-04-08 08:05:00", "a"},
		logSpec{3, 1, "2026-04-08 08:10:00", ""},
		logSpec{4, 1, "2026-04-08 08:20:00", ""},
	)
	a := findAnchors(&task)
	assert.Equal(t, int64(600), a[0].ID)
	assert.Equal(t, int64(603), a[1].ID)
	assert.Equal(t, int64(602), a[2].ID)
	assert.Equal(t, int64(601), a[3].ID)
	bare := buildTask(8, 0, logSpec{4, 0, "2026-04-08 08:00:00", ""})
	a = findAnchors(&bare)
	assert.Equal(t, int64(800), a[0].ID, "without a creation log the oldest log stands in")
	assert.Equal(t, int64(800), a[2].ID)
}

func TestEngine_DerivedJSON(t *testing.T) {
	e := mustEngine(t, stalledRule(time.Hour))
	task := buildTask(7, 1, logSpec{1, 1, "2026-04-08 08:00:00", ""})
	evs := run(e, []diff.Task{task}, nil, at("2026-04-08 09:00:00"))
	require.Len(t, evs, 1)
	b, err := json.Marshal(&evs[0])
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	data := m["data"].(map[string]any)
	assert.NotContains(t, data, "log")
	assert.NotContains(t, data, "previous_status")
	assert.Equal(t, "2026-04-08T09:00:00+08:00", data["due_at"])
	assert.Equal(t, "2026-04-08T08:00:00+08:00", data["anchor_at"])
	assert.Equal(t, "last_log", data["since"])
	assert.EqualValues(t, 0, data["step"])
	var back diff.Event
	require.NoError(t, json.Unmarshal(b, &back))
	require.NotNil(t, back.Data.Derived)
	assert.Equal(t, "stalled", back.Data.Rule)
}

func TestRule_Validate(t *testing.T) {
	ok := func() *Rule { return stalledRule(time.Hour) }
	tests := []struct {
		name   string
		modify func(r *Rule)
		key    string
	}{
		{"bad name", func(r *Rule) { r.Name = "Stalled" }, "name"},
		{"name with dash", func(r *Rule) { r.Name = "a-b" }, "name"},
		{"event without task.", func(r *Rule) { r.Event = "stalled" }, "event"},
		{"event with dot", func(r *Rule) { r.Event = "task.a.b" }, "event"},
		{"log type", func(r *Rule) { r.Event = "task.assigned" }, "event"},
		{"since", func(r *Rule) { r.Since = "updated" }, "since"},
		{"after", func(r *Rule) { r.After = 0 }, "after"},
		{"repeat every", func(r *Rule) { r.Repeat = Repeat{Max: 2} }, "repeat.every"},
		{"repeat max", func(r *Rule) { r.Repeat = Repeat{Every: time.Hour} }, "repeat.max"},
		{"assignee", func(r *Rule) { r.When.Assignee = Assignee{Present: true, Names: []string{"x"}} }, "when.assignee"},
		{"missing since", func(r *Rule) { r.Since = "" }, "since"},
		{"status above terminated", func(r *Rule) { r.When.Status = []int{1, 4} }, "when.status[1]"},
		{"negative status", func(r *Rule) { r.When.Status = []int{-1} }, "when.status[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ok()
			tt.modify(r)
			err := r.Validate()
			var fe *FieldError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, tt.key, fe.Key)
		})
	}
	require.NoError(t, ok().Validate())
	// The messages the config shows under rules[i].
	r := ok()
	r.Since = ""
	require.EqualError(t, r.Validate(), "since: required: created, last_log, last_status_change or last_assignment")
	r = ok()
	r.When.Status = []int{diff.StatusNotStarted, diff.StatusTerminated, 7}
	require.EqualError(t, r.Validate(), "when.status[2]: want 0 (not started) to 3 (terminated), got 7")
	err := CheckSet([]*Rule{ok(), ok()})
	require.EqualError(t, err, `[1].name: duplicate rule name "stalled"`)
	other := ok()
	other.Name = "other"
	require.EqualError(t, CheckSet([]*Rule{ok(), other}), `[1].event: type task.stalled is already emitted by rule "stalled"`)
}
