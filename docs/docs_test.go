package docs

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/diff/rules"
)

const sampleTask = `{"id":237,"creation_id":3,"auth_id":1,"name":"回访","description":"","type":1,"user_name":"Erin","user_phone":"62815","assignee_username":"incs_1","status":1,"created_at":"2026-04-08 09:00:00","updated_at":"2026-04-08 10:00:00","priority":2,
"logs":[{"id":1,"type":1,"status":0,"pre_status":0,"assignee_username":"","comment":"","created_at":"2026-04-08 09:00:00","updated_at":"2026-04-08 09:00:00"},
{"id":2,"type":2,"status":0,"pre_status":0,"assignee_username":"incs_1","comment":"","created_at":"2026-04-08 09:01:00","updated_at":"2026-04-08 09:01:00"},
{"id":3,"type":3,"status":1,"pre_status":0,"assignee_username":"incs_1","comment":"","created_at":"2026-04-08 09:02:00","updated_at":"2026-04-08 09:02:00"},
{"id":4,"type":4,"status":1,"pre_status":1,"assignee_username":"incs_1","comment":"已经跟进","created_at":"2026-04-08 09:03:00","updated_at":"2026-04-08 09:03:00"},
{"id":5,"type":9,"status":1,"pre_status":1,"assignee_username":"","comment":"","created_at":"2026-04-08 09:04:00","updated_at":"2026-04-08 09:04:00","source":"x"}]}`

// TestSchemas_Events validates an event of every log type, and derived
// events, against the published schemas, and checks they reject what is
// not an event of their type.
func TestSchemas_Events(t *testing.T) {
	v, err := NewValidator()
	require.NoError(t, err)
	var task diff.Task
	require.NoError(t, json.Unmarshal([]byte(sampleTask), &task))
	loc := time.FixedZone("CST", 8*3600)
	evs, err := diff.Diff(&task, nil, loc)
	require.NoError(t, err)
	require.Len(t, evs, 5)
	edits := editEvents(t, &task, loc)
	seen := map[string]bool{}
	for i, e := range append(slices.Clone(evs), edits...) {
		e.Offset = uint64(i + 1)
		b, err := json.Marshal(&e)
		require.NoError(t, err)
		assert.NoError(t, v.Validate(b), "%s %s", e.Type, b)
		seen[e.Type] = true
	}
	for _, e := range diff.SampleEvents() {
		assert.NoError(t, v.Validate(e.Body), "sample %s", e.Type)
		seen[e.Type] = true
	}
	for _, typ := range diff.Types {
		assert.True(t, seen[typ], "no sample of %s", typ)
	}

	r := &rules.Rule{Name: "stalled", Event: "task.stalled", When: rules.When{Status: []int{1}}, Since: rules.SinceLastLog, After: time.Hour, Resolve: true}
	require.NoError(t, rules.CheckSet([]*rules.Rule{r}))
	e := rules.NewEngine([]*rules.Rule{r}, loc)
	b := e.Evaluate([]diff.Task{task}, nil, time.Date(2026, 4, 8, 12, 0, 0, 0, loc))
	e.Commit(b)
	task.Status, task.UpdatedAt = 2, "2026-04-08 13:00:00"
	b2 := e.Evaluate([]diff.Task{task}, nil, time.Date(2026, 4, 8, 13, 0, 0, 0, loc))
	derived := append(b.Changes[0].Events, b2.Changes[0].Events...)
	require.Len(t, derived, 2)
	for i := range derived {
		derived[i].Offset = uint64(10 + i)
		body, err := json.Marshal(&derived[i])
		require.NoError(t, err)
		assert.NoError(t, v.Validate(body), derived[i].ID)
	}

	// Wrong shapes fail.
	good, _ := json.Marshal(&evs[1])
	for name, bad := range map[string]string{
		"type swapped":        strings.Replace(string(good), `"type":"task.assigned"`, `"type":"task.commented"`, 1),
		"missing offset":      strings.Replace(string(good), `"offset":2,`, ``, 1),
		"extra member":        strings.Replace(string(good), `"offset":2,`, `"offset":2,"x":1,`, 1),
		"derived with log id": strings.Replace(string(good), `"type":"task.assigned"`, `"type":"task.stalled"`, 1),
	} {
		assert.Error(t, v.Validate([]byte(bad)), name)
	}
	samples := diff.SampleEvents()
	body := func(typ string) string { return string(samples[slices.Index(diff.Types, typ)].Body) }
	upd, logUpd, del := body(diff.TypeTaskUpdated), body(diff.TypeTaskLogUpdated), body(diff.TypeTaskDeleted)
	for name, bad := range map[string]string{
		"updated with a log id":         strings.Replace(upd, `"id":"upd-237-`, `"id":"log-`, 1),
		"updated without changes":       regexp.MustCompile(`,"changes":\[.*\]\}\}$`).ReplaceAllString(upd, `}}`),
		"updated with no change":        regexp.MustCompile(`"changes":\[.*\]\}\}$`).ReplaceAllString(upd, `"changes":[]}}`),
		"updated, unknown field":        strings.Replace(upd, `{"field":"name"`, `{"field":"priority"`, 1),
		"updated, change without to":    strings.Replace(upd, `,"to":"Callback 4.8 (VIP)"`, ``, 1),
		"updated with status members":   strings.Replace(upd, `"data":{`, `"data":{"status":1,`, 1),
		"updated as log_updated":        strings.Replace(upd, `"type":"task.updated"`, `"type":"task.log_updated"`, 1),
		"log_updated without its log":   regexp.MustCompile(`,"log":\{[^}]*\}`).ReplaceAllString(logUpd, ``),
		"log_updated, a task's field":   strings.Replace(logUpd, `{"field":"comment"`, `{"field":"name"`, 1),
		"deleted with changes":          strings.Replace(del, `}}}`, `},"changes":[{"field":"name","from":"a","to":"b"}]}}`, 1),
		"deleted with a suffixed id":    strings.Replace(del, `"id":"del-237"`, `"id":"del-237-1"`, 1),
		"deleted without its task":      regexp.MustCompile(`,"task":\{.*\}\}\}$`).ReplaceAllString(del, `}}`),
		"deleted, a task without an id": strings.Replace(del, `"task":{"id":237,`, `"task":{`, 1),
	} {
		require.NotEqual(t, bad, upd, name)
		assert.Error(t, v.Validate([]byte(bad)), name)
	}
}

// editEvents returns the changes that leave no log of the test's task
// read again: every task field changed (a long description cut, status
// and assignee with no log to explain them), a comment edited, then the
// same again without updated_at moving (ids with -1), and task.deleted
// both with the last values seen and for a task seen by a version that
// kept none.
func editEvents(t *testing.T, task *diff.Task, loc *time.Location) []diff.Event {
	t.Helper()
	all := func(int64) bool { return true }
	none := func(int64) bool { return false }
	before := diff.Observe(task, nil, all)
	long := strings.Repeat("长", diff.MaxValue)
	raw := strings.NewReplacer(
		`"creation_id":3,"auth_id":1,"name":"回访","description":"","type":1,"user_name":"Erin","user_phone":"62815","assignee_username":"incs_1","status":1`,
		`"creation_id":4,"auth_id":2,"name":"回访 2","description":"`+long+`","type":2,"user_name":"Erin W","user_phone":"62816","assignee_username":"incs_2","status":2`,
		`"updated_at":"2026-04-08 10:00:00"`, `"updated_at":"2026-04-08 11:00:00"`,
		`"comment":"已经跟进","created_at":"2026-04-08 09:03:00","updated_at":"2026-04-08 09:03:00"`,
		`"comment":"已经跟进 (edited)","created_at":"2026-04-08 09:03:00","updated_at":"2026-04-08 10:30:00"`,
	).Replace(sampleTask)
	var edited diff.Task
	require.NoError(t, json.Unmarshal([]byte(raw), &edited))
	out, after, err := diff.Edits(&edited, &before, all, none, loc)
	require.NoError(t, err)
	require.Len(t, out, 2)
	require.Len(t, out[1].Data.Changes, len(diff.Fields))
	raw = strings.NewReplacer(`"name":"回访 2"`, `"name":"回访 3"`, `"comment":"已经跟进 (edited)"`, `"comment":"已经跟进 (edited twice)"`).Replace(raw)
	var again diff.Task
	require.NoError(t, json.Unmarshal([]byte(raw), &again))
	more, after, err := diff.Edits(&again, &after, all, none, loc)
	require.NoError(t, err)
	require.Len(t, more, 2)
	require.True(t, strings.HasSuffix(more[0].ID, "-1") && strings.HasSuffix(more[1].ID, "-1"), "%s %s", more[0].ID, more[1].ID)
	out = append(out, more...)
	confirmed := time.Date(2026, 4, 8, 12, 0, 0, 0, loc)
	return append(out, diff.Deleted(task.ID, &after, confirmed), diff.Deleted(task.ID, &diff.Before{}, confirmed))
}

func TestSchema_PerRule(t *testing.T) {
	b, ok := Schema("task.stalled_resolved", true)
	require.True(t, ok)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	assert.Equal(t, map[string]any{"const": "task.stalled_resolved"}, m["properties"].(map[string]any)["type"])
	_, ok = Schema("task.nope", false)
	assert.False(t, ok)
	_, ok = Schema("task.assigned", false)
	assert.True(t, ok)
}

// TestAsyncAPI_Valid validates docs/asyncapi.yaml against the AsyncAPI 3.0
// JSON Schema of the npm package @asyncapi/specs (schemas/3.0.0.json),
// named by INCS_ASYNCAPI_SCHEMA; .ci/run fetches it. Without it the test
// only checks the document is YAML with the 3.0.0 version and its message
// payloads name existing schema files.
func TestAsyncAPI_Valid(t *testing.T) {
	var doc any
	require.NoError(t, yaml.Unmarshal(AsyncAPI(), &doc))
	m := doc.(map[string]any)
	assert.Equal(t, "3.0.0", m["asyncapi"])
	schemas := Schemas()
	named := map[string]int{}
	for name, msg := range m["components"].(map[string]any)["messages"].(map[string]any) {
		ref := msg.(map[string]any)["payload"].(map[string]any)["$ref"].(string)
		assert.Contains(t, schemas, strings.TrimPrefix(ref, "schemas/"), "message %s", name)
		named[msg.(map[string]any)["name"].(string)]++
	}
	// Every type the relay emits has its own schema and a message on
	// both channels (NATS and webhooks).
	for _, typ := range diff.Types {
		assert.Contains(t, schemas, typ+".json")
		assert.Equal(t, 2, named[typ], "messages named %s", typ)
	}

	path := os.Getenv("INCS_ASYNCAPI_SCHEMA")
	if path == "" {
		t.Skip("INCS_ASYNCAPI_SCHEMA is not set: the AsyncAPI 3.0 JSON Schema (npm @asyncapi/specs, schemas/3.0.0.json) is needed to validate docs/asyncapi.yaml; .ci/run fetches it")
	}
	raw, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		t.Skipf("INCS_ASYNCAPI_SCHEMA=%s does not exist: fetch @asyncapi/specs with npm (see .ci/run)", path)
	}
	require.NoError(t, err)
	sdoc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	require.NoError(t, err)
	c := jsonschema.NewCompiler()
	require.NoError(t, c.AddResource("asyncapi-3.0.0.json", sdoc))
	s, err := c.Compile("asyncapi-3.0.0.json")
	require.NoError(t, err)
	// Through JSON, so that YAML maps become what the validator expects.
	j, err := json.Marshal(doc)
	require.NoError(t, err)
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	require.NoError(t, err)
	require.NoError(t, s.Validate(inst))
}
