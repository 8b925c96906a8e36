package storetest

// The changes that leave no log (task.updated, task.log_updated,
// task.deleted): what every backend stores for them.

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

// ChangesOf returns an event's data.changes as field -> [from, to].
func ChangesOf(t *testing.T, ev diff.Event) map[string][2]string {
	t.Helper()
	var body struct {
		Data struct {
			Changes []diff.Change `json:"changes"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(ev.Body, &body))
	out := map[string][2]string{}
	for _, c := range body.Data.Changes {
		out[c.Field] = [2]string{string(c.From), string(c.To)}
	}
	return out
}

// typesOf returns the events' types and ids.
func typesOf(evs []diff.Event) (types, ids []string) {
	for _, ev := range evs {
		types = append(types, ev.Type)
		ids = append(ids, ev.ID)
	}
	return types, ids
}

func testEdits(t *testing.T, newStore NewFunc) {
	s, reopen := newStore(t)
	task := Task(1, 10, 11, 12, 13) // 13 is a comment
	res := ingest(t, s, true, task)
	require.Equal(t, 4, res.Events, "first sight: the logs' events, no edit")
	res = ingest(t, s, true, task)
	require.Equal(t, 0, res.Events)
	require.Equal(t, 1, res.Skipped, "an unchanged task is skipped")

	// Renamed and the phone corrected, no log.
	edited := Task(1, 10, 11, 12, 13)
	edited.Name, edited.UserPhone, edited.UpdatedAt = "改名", "6281519140361", "2026-04-08 17:40:00"
	res = ingest(t, s, true, edited)
	require.Equal(t, 1, res.Events)
	evs := readAll(t, s)
	ev := evs[len(evs)-1]
	require.Equal(t, diff.TypeTaskUpdated, ev.Type)
	at, _ := diff.ParseTime("2026-04-08 17:40:00", loc)
	require.Equal(t, "upd-1-"+itoa(at.Unix()), ev.ID)
	require.True(t, ev.Time.Equal(at), "time is the task's new updated_at")
	ch := ChangesOf(t, ev)
	require.Equal(t, [2]string{`"任务 1"`, `"改名"`}, ch["name"])
	require.Equal(t, [2]string{`""`, `"6281519140361"`}, ch["user_phone"])
	require.Len(t, ch, 2)

	// Another edit with the same updated_at, read with a new log: the
	// id takes a suffix. (Alone it would not be read: a task whose
	// updated_at, logs and logs' updated_at did not move is unchanged.)
	edited.Description = "新的描述"
	edited.Logs = append(edited.Logs, diff.Log{ID: 15, Type: diff.LogCommented, Comment: "new",
		CreatedAt: "2026-04-08 17:40:00", UpdatedAt: "2026-04-08 17:40:00"})
	res = ingest(t, s, true, edited)
	require.Equal(t, map[string]int{diff.TypeTaskCommented: 1, diff.TypeTaskUpdated: 1}, res.Types)
	evs = readAll(t, s)
	require.Equal(t, "upd-1-"+itoa(at.Unix())+"-1", evs[len(evs)-1].ID)
	require.Equal(t, "log-15", evs[len(evs)-2].ID, "a task's log events come before its edits")

	// A comment edited: its log's updated_at moves, the task's does not.
	edited.Logs[3].Comment, edited.Logs[3].UpdatedAt = "改过的评论", "2026-04-08 17:45:00"
	require.NoError(t, s.Close())
	s = reopen() // what the store saw survives a restart
	res = ingest(t, s, true, edited)
	require.Equal(t, 1, res.Events)
	evs = readAll(t, s)
	ev = evs[len(evs)-1]
	cat, _ := diff.ParseTime("2026-04-08 17:45:00", loc)
	require.Equal(t, diff.TypeTaskLogUpdated, ev.Type)
	require.Equal(t, "logupd-13-"+itoa(cat.Unix()), ev.ID)
	require.Equal(t, [2]string{`"已经跟进"`, `"改过的评论"`}, ChangesOf(t, ev)["comment"])

	// A status change with its log: task.status_changed only.
	edited.Status, edited.UpdatedAt = 2, "2026-04-08 17:50:00"
	edited.Logs = append(edited.Logs[:4:4], diff.Log{ID: 14, Type: diff.LogStatusChanged, Status: 2, PreStatus: 1,
		CreatedAt: "2026-04-08 17:50:00", UpdatedAt: "2026-04-08 17:50:00"}, edited.Logs[4])
	res = ingest(t, s, true, edited)
	require.Equal(t, map[string]int{diff.TypeTaskStatusChanged: 1}, res.Types, "a field a new log explains is not repeated")
	// A status change without a log: task.updated.
	edited.Status, edited.UpdatedAt = 3, "2026-04-08 17:55:00"
	res = ingest(t, s, true, edited)
	require.Equal(t, map[string]int{diff.TypeTaskUpdated: 1}, res.Types)
	evs = readAll(t, s)
	require.Equal(t, [2]string{"2", "3"}, ChangesOf(t, evs[len(evs)-1])["status"])
	requireDense(t, evs, 1)

	// Replayed events are byte-identical.
	again := readAll(t, s)
	for i := range evs {
		require.Equal(t, string(evs[i].Body), string(again[i].Body))
	}
	require.NoError(t, s.Close())
}

func testEditsSnapshot(t *testing.T, newStore NewFunc) {
	s, _ := newStore(t)
	defer s.Close()
	task := Task(1, 10, 11)
	ingest(t, s, false, task)
	task.Name, task.UpdatedAt = "renamed", "2026-04-08 18:00:00"
	res := ingest(t, s, false, task)
	require.Equal(t, 0, res.Events, "a snapshot records values without events")
	task.Name, task.UpdatedAt = "renamed again", "2026-04-08 18:05:00"
	ingest(t, s, true, task)
	evs := readAll(t, s)
	require.Len(t, evs, 1)
	require.Equal(t, [2]string{`"renamed"`, `"renamed again"`}, ChangesOf(t, evs[0])["name"], "from: the value the snapshot recorded")
}

func testDelete(t *testing.T, newStore NewFunc) {
	s, reopen := newStore(t)
	ctx := context.Background()
	task := Task(1, 10, 11)
	task.UserPhone = "6281519140316"
	ingest(t, s, true, task, Task(2, 20), Task(3, 30))

	var tracked []int64
	require.NoError(t, s.Tracked(0, func(id, _ int64) bool { tracked = append(tracked, id); return true }))
	assert.ElementsMatch(t, []int64{1, 2, 3}, tracked)
	created, _ := diff.ParseTime("2026-04-08 17:22:01", loc)
	tracked = nil
	require.NoError(t, s.Tracked(created.Unix()+1, func(id, _ int64) bool { tracked = append(tracked, id); return true }))
	assert.Empty(t, tracked, "created before since")

	confirmed := time.Date(2026, 4, 9, 10, 0, 0, 0, time.UTC)
	res, err := s.Delete(ctx, []int64{1, 99}, confirmed)
	require.NoError(t, err)
	require.Equal(t, 1, res.Events)
	require.Equal(t, 1, res.Skipped, "a task never seen is not deleted")
	require.Equal(t, map[string]int{diff.TypeTaskDeleted: 1}, res.Types)
	evs := readAll(t, s)
	ev := evs[len(evs)-1]
	require.Equal(t, "del-1", ev.ID)
	require.Equal(t, diff.TypeTaskDeleted, ev.Type)
	require.True(t, ev.Time.Equal(confirmed))
	var body struct {
		Data struct {
			TaskID int64          `json:"task_id"`
			Task   map[string]any `json:"task"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(ev.Body, &body))
	require.Equal(t, int64(1), body.Data.TaskID)
	require.Equal(t, "6281519140316", body.Data.Task["user_phone"], "the last values seen")
	require.Equal(t, "任务 1", body.Data.Task["name"])

	res, err = s.Delete(ctx, []int64{1}, confirmed)
	require.NoError(t, err)
	require.Equal(t, 0, res.Events, "deleted once")
	require.NoError(t, s.Close())
	s = reopen()
	defer s.Close()
	res, err = s.Delete(ctx, []int64{1}, confirmed)
	require.NoError(t, err)
	require.Equal(t, 0, res.Events, "deleted once, also after a restart")
	requireDense(t, readAll(t, s), 1)
}

// itoa formats n.
func itoa(n int64) string { return strconv.FormatInt(n, 10) }
