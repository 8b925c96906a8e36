package sim_test

// Tests of changing the world (changes.go, history.go): its invariants
// after many changes, the targeted changes tests make, and Run.

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller/sim"
)

// TestSim_Step checks the world's invariants after many changes against
// what the API serves and what Logs reports.
func TestSim_Step(t *testing.T) {
	now := fixedNow
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := newSim(t, sim.Options{Tasks: 300, Seed: 5, Now: clock})
	before := len(s.Logs())
	for i := range 20 {
		mu.Lock()
		now = now.Add(time.Duration(i%3) * time.Second) // sometimes several steps in one second
		mu.Unlock()
		s.Step(40)
	}
	truth := s.Logs()
	require.Greater(t, len(truth), before)

	// Log ids are global and increasing.
	for i := 1; i < len(truth); i++ {
		require.Greater(t, truth[i].LogID, truth[i-1].LogID)
	}

	served := map[int64]diff.Log{}
	taskOf := map[int64]int64{}
	types := map[int]int{}
	tasks := all(t, s, "")
	assert.True(t, slices.IsSortedFunc(ids(tasks), func(a, b int64) int { return int(b - a) }))
	for _, task := range tasks {
		require.NotEmpty(t, task.Logs, "task %d", task.ID)
		assert.Equal(t, diff.LogCreated, task.Logs[0].Type, "task %d starts with a created log", task.ID)
		assert.Equal(t, task.CreatedAt, task.Logs[0].CreatedAt)
		status, assignee := 0, ""
		for i, l := range task.Logs {
			served[l.ID] = l
			taskOf[l.ID] = task.ID
			types[l.Type]++
			ts, err := diff.ParseTime(l.CreatedAt, shanghai)
			require.NoError(t, err)
			assert.False(t, ts.After(now), "log %d in the future", l.ID)
			if i > 0 {
				assert.Greater(t, l.ID, task.Logs[i-1].ID)
				assert.GreaterOrEqual(t, l.CreatedAt, task.Logs[i-1].CreatedAt, "task %d log %d", task.ID, l.ID)
			}
			switch l.Type {
			case diff.LogCreated:
				assert.Zero(t, i)
			case diff.LogAssigned:
				assert.NotEmpty(t, l.AssigneeUsername)
				assert.NotEqual(t, assignee, l.AssigneeUsername)
				assignee = l.AssigneeUsername
			case diff.LogStatusChanged:
				assert.Equal(t, status, l.PreStatus, "task %d log %d", task.ID, l.ID)
				valid := map[[2]int]bool{{0, 1}: true, {0, 3}: true, {1, 2}: true, {1, 3}: true}
				assert.True(t, valid[[2]int{l.PreStatus, l.Status}], "transition %d→%d", l.PreStatus, l.Status)
				status = l.Status
			case diff.LogCommented:
				assert.NotEmpty(t, l.Comment)
			case sim.LogUnknown:
			default:
				t.Errorf("task %d log %d: type %d", task.ID, l.ID, l.Type)
			}
			if l.Type != diff.LogCreated {
				assert.Equal(t, status, l.Status, "log %d carries the status", l.ID)
			}
		}
		assert.Equal(t, status, task.Status, "task %d status", task.ID)
		assert.Equal(t, assignee, task.AssigneeUsername, "task %d assignee", task.ID)
		assert.GreaterOrEqual(t, task.UpdatedAt, task.Logs[len(task.Logs)-1].CreatedAt)
	}
	require.Len(t, served, len(truth))
	for _, ref := range truth {
		l, ok := served[ref.LogID]
		require.True(t, ok, "log %d", ref.LogID)
		assert.Equal(t, ref.TaskID, taskOf[ref.LogID])
		assert.Equal(t, ref.Type, l.Type)
		assert.Equal(t, ref.CreatedAt, l.CreatedAt)
		assert.Equal(t, ref.PreStatus, l.PreStatus, "log %d", ref.LogID)
	}
	for _, typ := range []int{1, 2, 3, 4, sim.LogUnknown} {
		assert.Positive(t, types[typ], "log type %d occurs", typ)
	}
	var open int
	for _, task := range tasks {
		if task.Status <= 1 {
			open++
		}
	}
	assert.InDelta(t, 0.3, float64(open)/float64(len(tasks)), 0.15, "open fraction")
}

// TestSim_Mutations checks the targeted changes tests make: each adds the
// log the API would, with the task's status before it.
func TestSim_Mutations(t *testing.T) {
	now := fixedNow
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := newSim(t, sim.Options{Tasks: 200, Seed: 5, Now: clock})
	n := s.LogCount()
	require.Len(t, s.Logs(), n)
	assert.Nil(t, s.LogsFrom(n))

	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	id := s.NewTask()
	assert.Equal(t, int64(201), id)
	st, ok := s.TaskStatus(id)
	require.True(t, ok)
	assert.Equal(t, diff.StatusNotStarted, st)
	require.True(t, s.SetStatus(id, diff.StatusInProgress))
	require.True(t, s.SetStatus(id, diff.StatusCompleted))
	require.True(t, s.Comment(id))
	require.True(t, s.SetStatus(id, diff.StatusInProgress), "reopened, as an API might")
	assert.False(t, s.SetStatus(id, 7))
	assert.False(t, s.SetStatus(999, 1))
	assert.False(t, s.Comment(999))
	_, ok = s.TaskStatus(999)
	assert.False(t, ok)

	logs := s.LogsFrom(n)
	require.Len(t, logs, 5)
	wantTypes := []int{diff.LogCreated, diff.LogStatusChanged, diff.LogStatusChanged, diff.LogCommented, diff.LogStatusChanged}
	wantPre := []int{0, 0, 1, 2, 2}
	for i, l := range logs {
		assert.Equal(t, id, l.TaskID)
		assert.Equal(t, wantTypes[i], l.Type, "log %d", i)
		assert.Equal(t, wantPre[i], l.PreStatus, "log %d", i)
		assert.Equal(t, "2026-04-08 17:31:00", l.CreatedAt)
	}
	task := all(t, s, "task_id=201")
	require.Len(t, task, 1)
	assert.Equal(t, diff.StatusInProgress, task[0].Status)
	assert.Len(t, task[0].Logs, 5)

	n = s.LogCount()
	s.StepFinished(10)
	for _, l := range s.LogsFrom(n) {
		assert.Equal(t, diff.LogCommented, l.Type)
		assert.GreaterOrEqual(t, l.PreStatus, diff.StatusCompleted, "a comment on a finished task")
		st, _ := s.TaskStatus(l.TaskID)
		assert.GreaterOrEqual(t, st, diff.StatusCompleted)
	}
	assert.Len(t, s.LogsFrom(n), 10)
}

func TestSim_Run(t *testing.T) {
	s := sim.New(sim.Options{Token: token, Tasks: 10, Seed: 2, Tick: 5 * time.Millisecond, ChangesPerTick: 3})
	before := len(s.Logs())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	require.Eventually(t, func() bool { return len(s.Logs()) >= before+10 }, 5*time.Second, 5*time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
}
