package store

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/diff/rules"
)

// TestDB_ApplyRules runs the rules engine against a real store: derived
// events get offsets after the log events, an unchanged read's event
// carries the stored task, and the states survive a reopen so nothing
// fires twice.
func TestDB_ApplyRules(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir() + "/r.db"
	db := mustOpenPath(t, path)
	tk := task(237, 531, 532)
	res := ingest(t, db, true, tk)
	require.Equal(t, uint64(2), res.LastOffset)

	rule := &rules.Rule{Name: "stalled", Event: "task.stalled", When: rules.When{Status: []int{tk.Status}}, Since: rules.SinceLastLog, After: time.Minute,
		Repeat: rules.Repeat{Every: time.Minute, Max: 2}, Resolve: true}
	require.NoError(t, rules.CheckSet([]*rules.Rule{rule}))
	e := rules.NewEngine([]*rules.Rule{rule}, shanghai)
	anchor, err := diff.ParseTime(tk.Logs[1].CreatedAt, shanghai)
	require.NoError(t, err)
	apply := func(e *rules.Engine, tasks []diff.Task, unchanged []int64, at time.Time) RuleResult {
		b := e.Evaluate(tasks, unchanged, at)
		var ws []RuleWrite
		for _, c := range b.Changes {
			ws = append(ws, RuleWrite{TaskID: c.TaskID, Record: c.Record, Task: c.Task, Events: c.Events})
		}
		res, err := db.ApplyRules(ctx, ws)
		require.NoError(t, err)
		e.Commit(b)
		return res
	}
	r := apply(e, []diff.Task{tk}, nil, anchor.Add(time.Minute))
	assert.Equal(t, RuleResult{Events: 1, FirstOffset: 3, LastOffset: 3, Types: map[string]int{"task.stalled": 1}}, r)
	r = apply(e, nil, []int64{237}, anchor.Add(2*time.Minute))
	assert.Equal(t, RuleResult{Events: 1, FirstOffset: 4, LastOffset: 4, Types: map[string]int{"task.stalled": 1}}, r)

	evs, err := db.Read(ctx, 3, 10)
	require.NoError(t, err)
	require.Len(t, evs, 2)
	assert.Equal(t, "rule-stalled-237-532-0", evs[0].ID)
	assert.Equal(t, "rule-stalled-237-532-1", evs[1].ID)
	taskJSON, err := tk.JSONWithoutLogs()
	require.NoError(t, err)
	assert.JSONEq(t, string(taskJSON), string(evs[1].Data.Task), "the unchanged read's event carries the stored task")
	require.NotNil(t, evs[1].Data.Derived)
	assert.Equal(t, 1, evs[1].Data.Step)
	var body map[string]any
	require.NoError(t, json.Unmarshal(evs[1].Body, &body))
	assert.EqualValues(t, 4, body["offset"])
	assert.NotContains(t, body["data"], "log")

	// Reopen: the stored state loads and nothing fires again.
	require.NoError(t, db.Close())
	db = mustOpenPath(t, path)
	e2 := rules.NewEngine([]*rules.Rule{rule}, shanghai)
	require.NoError(t, db.RuleStates(func(id int64, rec []byte) error { return e2.Load(id, rec) }))
	assert.Equal(t, 1, e2.Len())
	r = apply(e2, []diff.Task{tk}, nil, anchor.Add(time.Hour))
	assert.Zero(t, r.Events)

	// The task is finished without a new log: the occurrence resolves; its
	// state stays, so that the same anchor never fires again.
	done := tk
	done.Status = tk.Status + 1
	done.UpdatedAt = "2026-04-09 09:00:00"
	r = apply(e2, []diff.Task{done}, nil, anchor.Add(time.Hour))
	assert.Equal(t, 1, r.Events)
	n := 0
	require.NoError(t, db.RuleStates(func(int64, []byte) error { n++; return nil }))
	assert.Equal(t, 1, n)
	evs, err = db.Events(ctx, EventQuery{From: 5, Type: "task.stalled_resolved"})
	require.NoError(t, err)
	require.Len(t, evs, 1)
	assert.Equal(t, "rule-stalled-237-532-resolved", evs[0].ID)
}
