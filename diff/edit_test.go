package diff

import (
	"cmp"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	allSeen = func(int64) bool { return true }
	noneNew = func(int64) bool { return false }
)

// editFixture returns the vendor's task and what a store saw of it.
func editFixture(t *testing.T) (Task, Before) {
	t.Helper()
	task := decodeTask(t, vendorTask)
	return task, Observe(&task, nil, allSeen)
}

func changeFields(cs []Change) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Field)
	}
	return out
}

// TestEdits_Golden pins the three types' JSON: a user contract.
func TestEdits_Golden(t *testing.T) {
	for _, ev := range SampleEvents() {
		if !IsEdit(ev.Type) {
			continue
		}
		t.Run(ev.Type, func(t *testing.T) {
			got, err := json.MarshalIndent(ev, "", "  ")
			require.NoError(t, err)
			golden := filepath.Join("testdata", "event_"+ShortType(ev.Type)+".golden.json")
			if os.Getenv("UPDATE_GOLDEN") != "" {
				require.NoError(t, os.WriteFile(golden, append(got, '\n'), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err)
			assert.JSONEq(t, string(want), string(got))
			var m map[string]any
			require.NoError(t, json.Unmarshal(ev.Body, &m))
			data := m["data"].(map[string]any)
			for _, k := range []string{"status", "comment", "previous_status", "rule"} {
				assert.NotContains(t, data, k, "an edit's data has no %s", k)
			}
		})
	}
}

func TestEdits_FirstSightNothing(t *testing.T) {
	task := decodeTask(t, vendorTask)
	evs, after, err := Edits(&task, nil, allSeen, noneNew, shanghai(t))
	require.NoError(t, err)
	assert.Empty(t, evs)
	assert.True(t, after.Known)
	evs, _, err = Edits(&task, &Before{}, allSeen, noneNew, shanghai(t))
	require.NoError(t, err)
	assert.Empty(t, evs, "a record without values (an older version's) gives nothing")
}

func TestEdits_Fields(t *testing.T) {
	_, before := editFixture(t)
	task := decodeTask(t, vendorTask)
	task.Type, task.UserPhone, task.UpdatedAt = 5, "123", "2026-04-08 18:00:00"
	evs, after, err := Edits(&task, &before, allSeen, noneNew, shanghai(t))
	require.NoError(t, err)
	require.Len(t, evs, 1)
	ev := evs[0]
	assert.Equal(t, TypeTaskUpdated, ev.Type)
	assert.Equal(t, "upd-237-1775642400", ev.ID)
	assert.Equal(t, []string{"type", "user_phone"}, changeFields(ev.Data.Changes), "sorted by field")
	assert.Equal(t, "3", string(ev.Data.Changes[0].From), "numbers stay numbers")
	assert.Equal(t, "5", string(ev.Data.Changes[0].To))
	assert.Equal(t, `"123"`, string(ev.Data.Changes[1].To))
	assert.Equal(t, IDCounter{At: 1775642400}, after.Upd)

	// The same updated_at again, another change: a suffix.
	task.Name = "other"
	evs, after, err = Edits(&task, &after, allSeen, noneNew, shanghai(t))
	require.NoError(t, err)
	require.Len(t, evs, 1)
	assert.Equal(t, "upd-237-1775642400-1", evs[0].ID)
	evs, _, err = Edits(&task, &after, allSeen, noneNew, shanghai(t))
	require.NoError(t, err)
	assert.Empty(t, evs, "nothing changed")
}

func TestEdits_ExplainedByNewLog(t *testing.T) {
	_, before := editFixture(t)
	task := decodeTask(t, vendorTask)
	task.Status, task.AssigneeUsername, task.UpdatedAt = 2, "incs_9", "2026-04-08 18:00:00"
	task.Logs = append(task.Logs, Log{ID: 900, Type: LogStatusChanged, Status: 2, PreStatus: 1, CreatedAt: task.UpdatedAt, UpdatedAt: task.UpdatedAt})
	isNew := func(id int64) bool { return id == 900 }
	evs, _, err := Edits(&task, &before, allSeen, isNew, shanghai(t))
	require.NoError(t, err)
	require.Len(t, evs, 1)
	assert.Equal(t, []string{"assignee_username"}, changeFields(evs[0].Data.Changes), "the status change has its log; the assignee's has none")
}

func TestEdits_LogEdited(t *testing.T) {
	_, before := editFixture(t)
	task := decodeTask(t, vendorTask)
	var comment *Log
	for i := range task.Logs {
		if task.Logs[i].Type == LogCommented {
			comment = &task.Logs[i]
		}
	}
	require.NotNil(t, comment)
	comment.Comment, comment.UpdatedAt = strings.Repeat("改", 2000), "2026-04-08 18:10:00"
	evs, after, err := Edits(&task, &before, allSeen, noneNew, shanghai(t))
	require.NoError(t, err)
	require.Len(t, evs, 1, "the task's own fields did not change")
	ev := evs[0]
	assert.Equal(t, TypeTaskLogUpdated, ev.Type)
	assert.Equal(t, "logupd-"+itoa(comment.ID)+"-1775643000", ev.ID)
	assert.Equal(t, []string{"comment", "updated_at"}, changeFields(ev.Data.Changes))
	assert.True(t, ev.Data.Changes[0].Truncated, "6,000 bytes: cut")
	var to string
	require.NoError(t, json.Unmarshal(ev.Data.Changes[0].To, &to))
	assert.LessOrEqual(t, len(to), MaxValue)
	assert.NotEmpty(t, ev.Data.Log)

	// Only its updated_at moves again (the same text): still reported.
	comment.UpdatedAt = "2026-04-08 18:20:00"
	evs, _, err = Edits(&task, &after, allSeen, noneNew, shanghai(t))
	require.NoError(t, err)
	require.Len(t, evs, 1)
	assert.Equal(t, []string{"updated_at"}, changeFields(evs[0].Data.Changes))
}

func TestEdits_BadTime(t *testing.T) {
	_, before := editFixture(t)
	task := decodeTask(t, vendorTask)
	task.Name, task.UpdatedAt = "x", "yesterday"
	_, _, err := Edits(&task, &before, allSeen, noneNew, shanghai(t))
	require.ErrorContains(t, err, "yesterday")
}

func TestDeleted(t *testing.T) {
	_, before := editFixture(t)
	ev := Deleted(237, &before, time.Date(2026, 4, 9, 2, 0, 0, 0, time.UTC))
	assert.Equal(t, "del-237", ev.ID)
	var task map[string]any
	require.NoError(t, json.Unmarshal(ev.Data.Task, &task))
	assert.Equal(t, float64(237), task["id"])
	assert.Equal(t, before.Values[4], task["name"])
	ev = Deleted(7, nil, ev.Time)
	assert.JSONEq(t, `{"id":7}`, string(ev.Data.Task), "nothing kept: the id alone")
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestDeleted_RoundTrip: a task.deleted decoded from its JSON (which has
// no changes) keeps its shape when encoded again.
func TestDeleted_RoundTrip(t *testing.T) {
	ev := Deleted(7, nil, time.Date(2026, 4, 9, 2, 0, 0, 0, time.UTC))
	b, err := json.Marshal(&ev)
	require.NoError(t, err)
	var back Event
	require.NoError(t, json.Unmarshal(b, &back))
	require.NotNil(t, back.Data.Edit)
	assert.Empty(t, back.Data.Changes)
	again, err := json.Marshal(&back)
	require.NoError(t, err)
	assert.JSONEq(t, string(b), string(again))
}

// TestObserve_KeepsUnlistedLogs: a seen log the API no longer lists
// keeps its entry (and its id counter); a log not seen is not kept.
func TestObserve_KeepsUnlistedLogs(t *testing.T) {
	task, before := editFixture(t)
	before.Logs = append(before.Logs, LogBefore{ID: 9999, Comment: "gone", Upd: IDCounter{At: 5}})
	now := Observe(&task, &before, func(id int64) bool { return id != task.Logs[0].ID })
	require.NotNil(t, now.log(9999))
	assert.Equal(t, IDCounter{At: 5}, now.log(9999).Upd)
	assert.Nil(t, now.log(task.Logs[0].ID), "not seen: not kept")
	assert.Len(t, now.Logs, len(task.Logs))
	assert.True(t, slices.IsSortedFunc(now.Logs, func(a, b LogBefore) int { return cmp.Compare(a.ID, b.ID) }))
}
