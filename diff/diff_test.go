package diff

import (
	"encoding/json"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// vendorTask is the vendor page's example task, with an unknown extra field
// and an unknown log type added.
const vendorTask = `{
  "id": 237, "creation_id": 104, "auth_id": 30058, "name": "4.8", "description": "1111",
  "type": 3, "user_name": "Erin", "user_phone": "6281519140316", "assignee_username": "incs_1",
  "status": 3, "created_at": "2026-04-08 17:22:01", "updated_at": "2026-04-08 17:28:54",
  "priority": "high",
  "logs": [
    {"id": 531, "type": 1, "status": 0, "pre_status": 0, "assignee_username": "", "comment": "", "created_at": "2026-04-08 17:22:01", "updated_at": "2026-04-08 17:22:01"},
    {"id": 532, "type": 2, "status": 0, "pre_status": 0, "assignee_username": "incs_1", "comment": "", "created_at": "2026-04-08 17:22:06", "updated_at": "2026-04-08 17:22:06"},
    {"id": 533, "type": 3, "status": 1, "pre_status": 0, "assignee_username": "incs_1", "comment": "", "created_at": "2026-04-08 17:25:00", "updated_at": "2026-04-08 17:25:00"},
    {"id": 534, "type": 4, "status": 1, "pre_status": 1, "assignee_username": "incs_1", "comment": "已经跟进", "created_at": "2026-04-08 17:25:01", "updated_at": "2026-04-08 17:25:01"},
    {"id": 535, "type": 9, "status": 1, "pre_status": 1, "assignee_username": "incs_1", "comment": "", "created_at": "2026-04-08 17:26:00", "updated_at": "2026-04-08 17:26:00", "extra": [1,2]}
  ]
}`

func shanghai(t testing.TB) *time.Location {
	loc, err := time.LoadLocation("Asia/Shanghai")
	require.NoError(t, err)
	return loc
}

func decodeTask(t testing.TB, s string) Task {
	var task Task
	require.NoError(t, json.Unmarshal([]byte(s), &task))
	return task
}

func TestDiff_AllNew(t *testing.T) {
	task := decodeTask(t, vendorTask)
	evs, err := Diff(&task, nil, shanghai(t))
	require.NoError(t, err)
	require.Len(t, evs, 5)
	wantTypes := []string{TypeTaskCreated, TypeTaskAssigned, TypeTaskStatusChanged, TypeTaskCommented, TypeTaskLogged}
	for i, ev := range evs {
		assert.Equal(t, wantTypes[i], ev.Type)
		assert.Equal(t, "log-"+strconv.Itoa(531+i), ev.ID)
		assert.Equal(t, "237", ev.Subject)
		assert.Equal(t, int64(237), ev.Data.TaskID)
		assert.Zero(t, ev.Offset, "the store assigns offsets")
	}
	sc := evs[2]
	assert.Equal(t, "in_progress", sc.Data.StatusName)
	assert.Equal(t, "not_started", sc.Data.PreviousStatusName)
	assert.Equal(t, "2026-04-08T17:25:00+08:00", sc.Time.Format(time.RFC3339))
	assert.Equal(t, "已经跟进", evs[3].Data.Comment)
	assert.Equal(t, "incs_1", evs[1].Data.AssigneeUsername)
	assert.Contains(t, string(evs[4].Data.Log), `"extra": [1,2]`, "unknown log kept raw")
	assert.Contains(t, string(evs[0].Data.Task), `"priority": "high"`, "unknown task fields kept")
	assert.NotContains(t, string(evs[0].Data.Task), "logs")
	var m map[string]any
	require.NoError(t, json.Unmarshal(evs[0].Data.Task, &m), "task without logs is valid JSON")
	assert.Len(t, m, 13, "12 known fields and the unknown one, no logs")
}

func TestDiff_SkipsSeenAndKeepsOrder(t *testing.T) {
	task := decodeTask(t, vendorTask)
	// shuffle the logs: the API's order is not a promise
	task.Logs[0], task.Logs[3] = task.Logs[3], task.Logs[0]
	seen := SeenFunc(func(taskID, logID int64) bool { return logID == 531 || logID == 533 })
	evs, err := Diff(&task, seen, shanghai(t))
	require.NoError(t, err)
	var ids []string
	for _, ev := range evs {
		ids = append(ids, ev.ID)
	}
	assert.Equal(t, []string{"log-532", "log-534", "log-535"}, ids)
}

func TestDiff_RepeatedLogIsOneEvent(t *testing.T) {
	task := decodeTask(t, vendorTask)
	task.Logs = append(task.Logs, task.Logs[1])
	evs, err := Diff(&task, nil, shanghai(t))
	require.NoError(t, err)
	assert.Len(t, evs, 5)
}

func TestDiff_PreviousAssignee(t *testing.T) {
	task := decodeTask(t, vendorTask)
	task.Logs = append(task.Logs, Log{ID: 600, Type: LogAssigned, AssigneeUsername: "incs_2", CreatedAt: "2026-04-08 18:00:00"})
	evs, err := Diff(&task, SeenFunc(func(_, id int64) bool { return id < 600 }), shanghai(t))
	require.NoError(t, err)
	require.Len(t, evs, 1)
	assert.Equal(t, "incs_2", evs[0].Data.AssigneeUsername)
	assert.Equal(t, "incs_1", evs[0].Data.PreviousAssignee)
	assert.Contains(t, string(evs[0].Data.Log), `"id":600`, "logs built in code are encoded")
}

func TestDiff_BadTimeIsAnError(t *testing.T) {
	task := decodeTask(t, vendorTask)
	task.Logs[2].CreatedAt = "yesterday"
	_, err := Diff(&task, nil, shanghai(t))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "task 237 log 533")
}

func TestDiff_DaylightSavingZone(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	task := Task{ID: 1, Logs: []Log{{ID: 1, Type: 1, CreatedAt: "2026-03-08 03:30:00"}, {ID: 2, Type: 4, CreatedAt: "2026-11-01 01:30:00"}}}
	evs, err := Diff(&task, nil, ny)
	require.NoError(t, err)
	assert.Equal(t, "2026-03-08T03:30:00-04:00", evs[0].Time.Format(time.RFC3339))
	assert.Equal(t, "2026-11-01T01:30:00-04:00", evs[1].Time.Format(time.RFC3339), "ambiguous hour: first occurrence")
}

// TestEvent_Golden pins the envelope: it is a user contract.
func TestEvent_Golden(t *testing.T) {
	task := decodeTask(t, vendorTask)
	evs, err := Diff(&task, nil, shanghai(t))
	require.NoError(t, err)
	evs[1].Offset = 2
	got, err := json.MarshalIndent(evs[1], "", "  ")
	require.NoError(t, err)
	golden := filepath.Join("testdata", "event_assigned.golden.json")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		require.NoError(t, os.WriteFile(golden, append(got, '\n'), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	assert.JSONEq(t, string(want), string(got))
	// round trip
	var back Event
	require.NoError(t, json.Unmarshal(got, &back))
	assert.Equal(t, evs[1].ID, back.ID)
	assert.True(t, evs[1].Time.Equal(back.Time))
	assert.JSONEq(t, string(evs[1].Data.Task), string(back.Data.Task))
}

func TestStatusAndTypeNames(t *testing.T) {
	assert.Equal(t, []string{"not_started", "in_progress", "completed", "terminated", "unknown_7"},
		[]string{StatusName(0), StatusName(1), StatusName(2), StatusName(3), StatusName(7)})
	assert.Equal(t, "status_changed", ShortType(TypeTaskStatusChanged))
	assert.Equal(t, TypeTaskLogged, TypeOf(42))
}

// TestNoIO keeps diff pure: neither it nor anything it imports, however
// indirectly, may pull in storage, transport or HTTP; diff itself does not
// import os (fmt does, for its printing to files); and of this module it
// imports only its own subpackage jsonscan.
func TestNoIO(t *testing.T) {
	const module = "github.com/incs-relay/incs-relay"
	forbidden := []string{"go.etcd.io/bbolt", "github.com/nats-io", "net", "os/exec", "database/sql"}
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	require.NoError(t, err, "go list")
	deps := strings.Fields(string(out))
	require.Contains(t, deps, module+"/diff")
	for _, path := range deps {
		for _, bad := range forbidden {
			assert.False(t, path == bad || strings.HasPrefix(path, bad+"/"), "diff depends on %s", path)
		}
		if strings.HasPrefix(path, module+"/") {
			assert.Contains(t, []string{module + "/diff", module + "/diff/jsonscan"}, path, "diff depends on %s", path)
		}
	}
	pkgs, err := parser.ParseDir(token.NewFileSet(), ".", func(fi os.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, parser.ImportsOnly)
	require.NoError(t, err)
	for _, p := range pkgs {
		for name, f := range p.Files {
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				assert.False(t, path == "os" || strings.HasPrefix(path, "os/"), "%s imports %s", name, path)
			}
		}
	}
}

func FuzzDiff(f *testing.F) {
	f.Add([]byte(vendorTask))
	f.Add([]byte(`{"id":1,"logs":[{"id":2,"type":2,"created_at":"2026-01-01 00:00:00"}]}`))
	f.Add([]byte(`{"id":1,"logs":[`))
	loc := time.FixedZone("CST", 8*3600)
	f.Fuzz(func(t *testing.T, b []byte) {
		var task Task
		if json.Unmarshal(b, &task) != nil {
			return
		}
		evs, err := Diff(&task, nil, loc)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, ev := range evs {
			if seen[ev.ID] {
				t.Fatalf("two events for %s", ev.ID)
			}
			seen[ev.ID] = true
			if _, err := json.Marshal(ev); err != nil {
				t.Fatalf("event does not encode: %v", err)
			}
		}
	})
}

func TestScanMember(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"first", `{"logs":[{"id":1},{"a":"]"}],"id":1}`, `{"id":1}`},
		{"middle", `{"id":1, "logs": [ ], "x":"y"}`, `{"id":1, "x":"y"}`},
		{"last", "{\"id\":1,\n \"logs\":[{\"s\":\"\\\"}\"}]\n}", "{\"id\":1\n}"},
		{"only", `{ "logs":[] }`, `{  }`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var task Task
			require.NoError(t, json.Unmarshal([]byte(tt.in), &task))
			got, err := task.JSONWithoutLogs()
			require.NoError(t, err)
			assert.Equal(t, tt.want, string(got))
			assert.True(t, json.Valid(got))
		})
	}
	var task Task
	require.NoError(t, json.Unmarshal([]byte(`{"id":1,"name":"a,\"logs\"","logs":[{"id":5,"type":9,"x":{"y":[1,"]"]}},{"id":6}]}`), &task))
	require.Len(t, task.Logs, 2)
	assert.Equal(t, `{"id":5,"type":9,"x":{"y":[1,"]"]}}`, string(task.Logs[0].Raw))
	assert.Equal(t, `{"id":6}`, string(task.Logs[1].Raw))
}

func FuzzScanMember(f *testing.F) {
	f.Add([]byte(vendorTask))
	f.Add([]byte(`{"logs":[],"a":"\\\""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var task Task
		if json.Unmarshal(b, &task) != nil {
			return
		}
		got, err := task.JSONWithoutLogs()
		if err != nil {
			return
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(got, &m); err != nil {
			t.Fatalf("not valid JSON after cutting logs: %q -> %q", b, got)
		}
		if _, ok := m["logs"]; ok {
			t.Fatalf("logs still there: %q", got)
		}
		for _, l := range task.Logs {
			if len(l.Raw) > 0 && !json.Valid(l.Raw) {
				t.Fatalf("bad log span %q", l.Raw)
			}
		}
	})
}
