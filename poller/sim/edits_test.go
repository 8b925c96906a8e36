package sim_test

// Tests of the changes that leave no log (edits.go): comment edits, field
// edits, deletions, their record, Step's rates,
// HistoryLimit and MaxTasks.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/poller/sim"
)

// clock is a settable clock for a Sim.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: fixedNow} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now.In(shanghai).Format(diff.TimeLayout)
}

// one returns the task with the given id as a task_id look-up serves it.
func one(t *testing.T, s *sim.Sim, id int64) diff.Task {
	t.Helper()
	pd := list(t, s, fmt.Sprintf("task_id=%d", id))
	require.Equal(t, 1, pd.Total, "task %d", id)
	require.Len(t, pd.Data, 1)
	return pd.Data[0]
}

func logOf(t *testing.T, task diff.Task, id int64) diff.Log {
	t.Helper()
	for _, l := range task.Logs {
		if l.ID == id {
			return l
		}
	}
	t.Fatalf("task %d has no log %d", task.ID, id)
	return diff.Log{}
}

// aComment returns a comment log of the world, of a task with some other
// log after it.
func aComment(t *testing.T, s *sim.Sim) sim.LogRef {
	t.Helper()
	for _, l := range s.Logs() {
		if l.Type == diff.LogCommented {
			return l
		}
	}
	t.Fatal("no comment log")
	return sim.LogRef{}
}

func TestSim_EditComment(t *testing.T) {
	c := newClock()
	s := newSim(t, sim.Options{Tasks: 200, Seed: 5, Now: c.Now})
	ref := aComment(t, s)
	before := one(t, s, ref.TaskID)
	old := logOf(t, before, ref.LogID)
	logs := s.LogCount()

	// The log only: its comment and updated_at move, nothing else.
	at := c.Add(time.Hour)
	require.True(t, s.EditComment(ref.TaskID, ref.LogID, "改过的备注 ✏️", false))
	after := one(t, s, ref.TaskID)
	l := logOf(t, after, ref.LogID)
	assert.Equal(t, "改过的备注 ✏️", l.Comment)
	assert.Equal(t, at, l.UpdatedAt)
	assert.Equal(t, old.CreatedAt, l.CreatedAt, "created_at stays")
	assert.Equal(t, old.Type, l.Type)
	assert.Equal(t, before.UpdatedAt, after.UpdatedAt, "the task's updated_at stays")
	assert.Equal(t, logIDs(before), logIDs(after), "no log added, none renumbered")
	assert.Equal(t, logs, s.LogCount())

	// The task too.
	at2 := c.Add(time.Minute)
	require.True(t, s.EditComment(ref.TaskID, ref.LogID, "再改一次", true))
	after2 := one(t, s, ref.TaskID)
	assert.Equal(t, at2, logOf(t, after2, ref.LogID).UpdatedAt)
	assert.Equal(t, at2, after2.UpdatedAt)
	assert.Equal(t, logIDs(before), logIDs(after2))

	want := []sim.Edit{
		{Kind: sim.CommentEdited, TaskID: ref.TaskID, LogID: ref.LogID, Field: "comment", From: old.Comment, To: "改过的备注 ✏️",
			At: at, UpdatedFrom: old.UpdatedAt, TaskUpdatedAt: before.UpdatedAt},
		{Kind: sim.CommentEdited, TaskID: ref.TaskID, LogID: ref.LogID, Field: "comment", From: "改过的备注 ✏️", To: "再改一次",
			At: at2, UpdatedFrom: at, TaskUpdatedAt: at2, TaskTouched: true},
	}
	assert.Equal(t, want, s.Edits())
	assert.Equal(t, 2, s.EditCount())
	assert.Equal(t, want[1:], s.EditsFrom(1))

	// Only comment logs of the task named.
	created := before.Logs[0]
	assert.False(t, s.EditComment(ref.TaskID, created.ID, "x", true), "a created log")
	assert.False(t, s.EditComment(ref.TaskID+1000, ref.LogID, "x", true), "no such task")
	assert.False(t, s.EditComment(ref.TaskID, 1<<40, "x", true), "no such log")
	assert.Len(t, s.Edits(), 2)
}

func logIDs(task diff.Task) []int64 {
	var out []int64
	for _, l := range task.Logs {
		out = append(out, l.ID)
	}
	return out
}

func TestSim_SetField(t *testing.T) {
	c := newClock()
	s := newSim(t, sim.Options{Tasks: 50, Seed: 5, Now: c.Now})
	const id = 7
	prev := one(t, s, id)
	at := c.Add(time.Hour)
	values := map[string]string{"name": "新名字", "description": "改了描述", "type": "9", "creation_id": "77", "auth_id": "30099",
		"user_name": "Budi S.", "user_phone": "6281500000000", "assignee_username": "incs_99", "status": "3"}
	for _, f := range diff.Fields {
		require.True(t, s.SetField(id, f, values[f]), f)
	}
	task := one(t, s, id)
	assert.Equal(t, "新名字", task.Name)
	assert.Equal(t, "改了描述", task.Description)
	assert.Equal(t, 9, task.Type)
	assert.Equal(t, int64(77), task.CreationID)
	assert.Equal(t, int64(30099), task.AuthID)
	assert.Equal(t, "Budi S.", task.UserName)
	assert.Equal(t, "6281500000000", task.UserPhone)
	assert.Equal(t, "incs_99", task.AssigneeUsername)
	assert.Equal(t, 3, task.Status)
	assert.Equal(t, at, task.UpdatedAt)
	assert.Equal(t, logIDs(prev), logIDs(task), "no log")
	assert.Contains(t, ids(all(t, s, "status=3")), int64(id), "the status index follows")
	assert.NotContains(t, ids(all(t, s, fmt.Sprintf("status=%d", prev.Status))), int64(id))

	edits := s.Edits()
	require.Len(t, edits, len(diff.Fields))
	for i, e := range edits {
		assert.Equal(t, sim.TaskEdited, e.Kind)
		assert.Equal(t, diff.Fields[i], e.Field)
		assert.Equal(t, values[e.Field], e.To)
		assert.Equal(t, at, e.At)
		assert.Equal(t, at, e.TaskUpdatedAt)
		assert.True(t, e.TaskTouched)
	}
	assert.Equal(t, prev.UserPhone, edits[8].From)
	assert.Equal(t, strconv.Itoa(prev.Type), edits[6].From)
	assert.Equal(t, prev.UpdatedAt, edits[0].UpdatedFrom)

	// The same value again: updated_at is touched, nothing is recorded.
	c.Add(time.Second)
	require.True(t, s.SetField(id, "user_phone", "6281500000000"))
	assert.Len(t, s.Edits(), len(diff.Fields))
	assert.False(t, s.SetField(id, "status", "4"))
	assert.False(t, s.SetField(id, "type", "x"))
	assert.False(t, s.SetField(id, "logs", "x"))
	assert.False(t, s.SetField(999, "name", "x"))
	assert.Len(t, s.Edits(), len(diff.Fields))
}

func TestSim_Delete(t *testing.T) {
	c := newClock()
	s := newSim(t, sim.Options{Tasks: 250, Seed: 5, Now: c.Now})
	logs := s.Logs()
	const id = 120
	last := one(t, s, id)
	at := c.Add(time.Hour)
	require.True(t, s.Delete(id))
	assert.False(t, s.Delete(id), "already gone")
	assert.False(t, s.Delete(9999))

	pd := list(t, s, "task_id=120")
	assert.Zero(t, pd.Total)
	assert.Empty(t, pd.Data)
	rec := get(s, "task_id=120")
	assert.JSONEq(t, `{"status":"success","code":200,"message":"","data":{"total":0,"data":[]},"error":{}}`, rec.Body.String(),
		"a look-up of a deleted task: a success listing nothing")
	_, ok := s.TaskStatus(id)
	assert.False(t, ok)
	assert.Equal(t, 249, s.TaskCount())
	for _, q := range []string{"", fmt.Sprintf("status=%d", last.Status), "name=%23120", "creation_id=" + strconv.FormatInt(last.CreationID, 10),
		"start_at=" + url.QueryEscape(last.CreatedAt), "type=" + strconv.Itoa(last.Type)} {
		assert.NotContains(t, ids(all(t, s, q)), int64(id), "query %q", q)
	}
	assert.Len(t, all(t, s, ""), 249)
	for _, other := range []int64{1, 119, 121, 250} {
		assert.Equal(t, other, one(t, s, other).ID, "look-ups of the others still work")
	}
	for _, o := range []sim.Order{sim.IDAsc, sim.UpdatedDesc} {
		s2 := newSim(t, sim.Options{Tasks: 30, Seed: 5, Order: o})
		require.True(t, s2.Delete(3))
		assert.NotContains(t, ids(all(t, s2, "")), int64(3), "order %d", o)
		assert.Len(t, all(t, s2, ""), 29)
	}

	assert.Equal(t, logs, s.Logs(), "the ground truth keeps every log made")
	edits := s.Edits()
	require.Len(t, edits, 1)
	e := edits[0]
	assert.Equal(t, sim.TaskDeleted, e.Kind)
	assert.Equal(t, int64(id), e.TaskID)
	assert.Equal(t, at, e.At)
	assert.Equal(t, last.UpdatedAt, e.UpdatedFrom)
	var was diff.Task
	require.NoError(t, json.Unmarshal(e.Task, &was))
	assert.Equal(t, last.Name, was.Name)
	assert.Equal(t, logIDs(last), logIDs(was))

	// Later tasks take new ids; changes to a deleted task are refused.
	assert.Equal(t, int64(251), s.NewTask())
	assert.False(t, s.Comment(id))
	assert.False(t, s.SetStatus(id, 2))
	assert.False(t, s.SetField(id, "name", "x"))
	s.Step(200)
	s.StepFinished(20)
	assert.NotContains(t, ids(all(t, s, "")), int64(id))
}

// servedEdits checks every recorded edit against the world as served: the
// last value of each task field (but those logs change too) and comment
// is what is served, deleted
// tasks are not, and edited logs keep their ids.
func servedEdits(t *testing.T, s *sim.Sim, edits []sim.Edit) {
	t.Helper()
	tasks := map[int64]diff.Task{}
	for _, task := range all(t, s, "") {
		tasks[task.ID] = task
	}
	deleted := map[int64]bool{}
	type key struct {
		task, log int64
		field     string
	}
	last := map[key]sim.Edit{}
	for _, e := range edits {
		if e.Kind == sim.TaskDeleted {
			deleted[e.TaskID] = true
			continue
		}
		last[key{e.TaskID, e.LogID, e.Field}] = e
	}
	for id := range deleted {
		assert.NotContains(t, tasks, id, "deleted task %d is served", id)
	}
	for k, e := range last {
		task, ok := tasks[k.task]
		if !ok {
			assert.True(t, deleted[k.task], "task %d gone but not deleted", k.task)
			continue
		}
		if e.Kind == sim.CommentEdited {
			l := logOf(t, task, k.log)
			assert.Equal(t, diff.LogCommented, l.Type)
			assert.Equal(t, e.To, l.Comment, "log %d", k.log)
			assert.Equal(t, e.At, l.UpdatedAt, "log %d", k.log)
			assert.GreaterOrEqual(t, l.UpdatedAt, l.CreatedAt)
			continue
		}
		if k.field == "status" || k.field == "assignee_username" {
			continue // logs change them too
		}
		b, err := json.Marshal(task)
		require.NoError(t, err)
		var m map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(b, &m))
		v := string(m[k.field])
		if s, err := strconv.Unquote(v); err == nil {
			v = s
		}
		assert.Equal(t, e.To, v, "task %d %s", k.task, k.field)
		assert.GreaterOrEqual(t, task.UpdatedAt, e.At)
	}
}

func TestSim_StepEdits(t *testing.T) {
	c := newClock()
	s := newSim(t, sim.Options{Tasks: 300, Seed: 8, Now: c.Now, CommentEdits: 0.1, FieldEdits: 0.1, Deletions: 0.02})
	for range 50 {
		c.Add(7 * time.Second)
		s.Step(20)
	}
	edits := s.Edits()
	servedEdits(t, s, edits)
	kinds := map[sim.EditKind]int{}
	fields := map[string]int{}
	touched := map[bool]int{}
	for _, e := range edits {
		kinds[e.Kind]++
		fields[e.Field]++
		if e.Kind == sim.CommentEdited {
			touched[e.TaskTouched]++
			assert.NotEqual(t, e.From, e.To)
			if e.TaskTouched {
				assert.Equal(t, e.At, e.TaskUpdatedAt)
			}
		}
		if e.Kind == sim.TaskEdited {
			assert.NotEqual(t, e.From, e.To, "%+v", e)
		}
	}
	assert.InDelta(t, 100, kinds[sim.CommentEdited], 40, "comment edits at their rate")
	assert.InDelta(t, 20, kinds[sim.TaskDeleted], 12, "deletions at their rate")
	assert.Equal(t, newTasks(s)-kinds[sim.TaskDeleted], s.TaskCount(), "tasks made less those deleted")
	for _, f := range diff.Fields {
		assert.Positive(t, fields[f], "field %s edited", f)
	}
	assert.Positive(t, touched[true], "comment edits that move the task's updated_at")
	assert.Positive(t, touched[false], "comment edits that do not")

	for _, mode := range []sim.Touch{sim.TouchTask, sim.TouchLogOnly} {
		s := newSim(t, sim.Options{Tasks: 100, Seed: 8, CommentEdits: 0.5, CommentEditTouch: mode})
		s.Step(100)
		n := 0
		for _, e := range s.Edits() {
			if e.Kind == sim.CommentEdited {
				n++
				assert.Equal(t, mode == sim.TouchTask, e.TaskTouched)
			}
		}
		assert.Positive(t, n)
	}

	// EditFields restricts the fields; unknown names alone mean none.
	s = newSim(t, sim.Options{Tasks: 100, Seed: 8, FieldEdits: 1, EditFields: []string{"user_phone"}})
	s.Step(50)
	for _, e := range s.Edits() {
		assert.Contains(t, []string{"user_phone", "name", "description"}, e.Field)
	}
	assert.Len(t, s.Edits(), 50, "every change a phone correction")
	servedEdits(t, s, s.Edits())
}

// newTasks counts the tasks made since New from the created logs.
func newTasks(s *sim.Sim) int {
	n := 0
	for _, l := range s.Logs() {
		if l.Type == diff.LogCreated {
			n++
		}
	}
	return n
}

func TestSim_EditsDeterministic(t *testing.T) {
	o := sim.Options{Tasks: 200, Seed: 42, CommentEdits: 0.1, FieldEdits: 0.1, Deletions: 0.05, MaxTasks: 210}
	a, b := newSim(t, o), newSim(t, o)
	a.Step(300)
	b.SetFaults(sim.Faults{Rate: 0.5})
	for i := range 20 {
		get(b, fmt.Sprintf("task_id=%d", i+1))
	}
	b.SetFaults(sim.Faults{})
	b.Step(300)
	for _, q := range []string{"page_size=100", "page=2&page_size=100", "page=3&page_size=100", "task_id=10"} {
		assert.Equal(t, get(a, q).Body.String(), get(b, q).Body.String())
	}
	assert.Equal(t, a.Edits(), b.Edits())
	assert.Equal(t, a.Logs(), b.Logs())

	// Rates of 0 draw nothing: the world is the one without these options.
	plain := newSim(t, sim.Options{Tasks: 200, Seed: 42})
	off := newSim(t, sim.Options{Tasks: 200, Seed: 42, EditFields: []string{"name"}, HistoryLimit: 1 << 20, CommentEditTouch: sim.TouchTask})
	plain.Step(300)
	off.Step(300)
	assert.Equal(t, get(plain, "page_size=100").Body.String(), get(off, "page_size=100").Body.String())
	assert.Equal(t, plain.Logs(), off.Logs())
	for _, e := range plain.Edits() {
		assert.Equal(t, sim.TaskEdited, e.Kind, "the base mix edits names and descriptions only")
		assert.Contains(t, []string{"name", "description"}, e.Field)
	}
	assert.NotEmpty(t, plain.Edits())
}

func TestSim_HistoryLimit(t *testing.T) {
	c := newClock()
	s := newSim(t, sim.Options{Tasks: 100, Seed: 4, Now: c.Now, HistoryLimit: 50, CommentEdits: 0.2, FieldEdits: 0.2})
	assert.LessOrEqual(t, len(s.Logs()), 100)
	total, edits := s.LogCount(), s.EditCount()
	assert.Greater(t, total, 100, "counted from the first log")
	var all []sim.LogRef
	var allEdits []sim.Edit
	for range 30 {
		c.Add(time.Second)
		n, e := s.LogCount(), s.EditCount()
		s.Step(10)
		all = append(all, s.LogsFrom(n)...)
		allEdits = append(allEdits, s.EditsFrom(e)...)
		assert.LessOrEqual(t, len(s.Logs()), 100)
		assert.LessOrEqual(t, len(s.Edits()), 100)
		assert.GreaterOrEqual(t, len(s.Logs()), 50)
	}
	assert.Len(t, all, s.LogCount()-total, "LogsFrom misses none")
	assert.Len(t, allEdits, s.EditCount()-edits, "EditsFrom misses none")
	for i := 1; i < len(all); i++ {
		assert.Equal(t, all[i-1].LogID+1, all[i].LogID)
	}
	kept := s.Logs()
	assert.Equal(t, all[len(all)-len(kept):], kept, "Logs keeps the newest")
	assert.Equal(t, kept[len(kept)-3:], s.LogsFrom(s.LogCount()-3))
	assert.Equal(t, kept, s.LogsFrom(0), "a dropped start gives what is kept")
}

// client is the relay's own API client for srv, which never retries.
func client(srv *httptest.Server, timeout time.Duration) *poller.Client {
	return poller.NewClient(poller.Config{BaseURL: srv.URL, Token: token, Location: shanghai, RateLimit: -1,
		Timeout: timeout, HTTPClient: srv.Client(), Now: func() time.Time { return fixedNow }}, zerolog.Nop())
}

func TestSim_ConcurrentEdits(t *testing.T) {
	s := newSim(t, sim.Options{Tasks: 100, Seed: 9, Order: sim.UpdatedDesc, CommentEdits: 0.2, FieldEdits: 0.2, Deletions: 0.05, MaxTasks: 90, HistoryLimit: 20})
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	cl := client(srv, 5*time.Second)
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Go(func() {
			for i := range 40 {
				id := int64(1 + (g*40+i)%120)
				_, err := cl.List(ctx, poller.Query{TaskID: &id})
				assert.NoError(t, err)
				_, err = cl.List(ctx, poller.Query{Page: i%3 + 1, PageSize: 40})
				assert.NoError(t, err)
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			s.Step(5)
			_, _ = s.Edits(), s.EditsFrom(3)
			s.Delete(int64(1 + len(s.Logs())%100))
		}
	})
	wg.Wait()
	assert.LessOrEqual(t, s.TaskCount(), 90)
	cl.CloseIdleConnections()
}

func TestSim_MaxTasks(t *testing.T) {
	s := newSim(t, sim.Options{Tasks: 60, Seed: 6, MaxTasks: 40})
	finished := all(t, s, "status=2")
	finished = append(finished, all(t, s, "status=3")...)
	slices.SortFunc(finished, func(a, b diff.Task) int { return int(a.ID - b.ID) })
	require.Greater(t, len(finished), 25)
	s.Step(1)
	assert.Equal(t, 40, s.TaskCount())
	var gone []int64
	for _, e := range s.Edits() {
		if e.Kind == sim.TaskDeleted {
			gone = append(gone, e.TaskID)
		}
	}
	require.GreaterOrEqual(t, len(gone), 20)
	assert.Equal(t, ids(finished[:len(gone)]), gone, "the oldest finished tasks go first")

	// Every task deleted: Step makes new ones.
	s = newSim(t, sim.Options{Tasks: 3, Seed: 6, Deletions: 1})
	s.Step(3)
	assert.Zero(t, s.TaskCount())
	s.Step(5) // made, deleted, made, deleted, made
	assert.Equal(t, 1, s.TaskCount())
	assert.Len(t, s.Edits(), 5)
	s = newSim(t, sim.Options{Tasks: 3, Seed: 6, MaxTasks: 1})
	s.Step(10)
	assert.Equal(t, 1, s.TaskCount())
}
