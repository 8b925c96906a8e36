package docs

import (
	"bytes"
	"encoding/json"
	"os"
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
	seen := map[string]bool{}
	for i := range evs {
		evs[i].Offset = uint64(i + 1)
		b, err := json.Marshal(&evs[i])
		require.NoError(t, err)
		assert.NoError(t, v.Validate(b), evs[i].Type)
		seen[evs[i].Type] = true
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
	for name, msg := range m["components"].(map[string]any)["messages"].(map[string]any) {
		ref := msg.(map[string]any)["payload"].(map[string]any)["$ref"].(string)
		assert.Contains(t, schemas, strings.TrimPrefix(ref, "schemas/"), "message %s", name)
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
