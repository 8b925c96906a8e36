package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

// runMain runs the command line args through Main.Run with the process
// environment and returns the exit code, stdout and stderr.
func runMain(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	m := &Main{Stdout: &out, Stderr: &errb, Getenv: os.LookupEnv}
	return m.Run(context.Background(), args), out.String(), errb.String()
}

func TestPreview(t *testing.T) {
	dir := t.TempDir()
	cfg := `upstream: {token: t}
store: {path: "` + filepath.Join(dir, "x.db") + `"}
sinks:
  - name: ops
    type: feishu
    url: "https://open.feishu.cn/open-apis/bot/v2/hook/x"
    secret: "s3cr3t"
    locale: zh
    link: "https://app.example/tasks/{task_id}"
  - name: slack
    type: slack
    url: "https://hooks.slack.com/services/T/B/X"
    locale: en
    events: [task.status_changed]
  - name: broken
    type: slack
    url: "https://hooks.slack.com/services/T/B/X"
    template: "{{ .NoSuchField }"
`
	path := filepath.Join(dir, "relay.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	run := runMain

	// A broken template is a config error naming the sink, not a runtime surprise.
	code, _, stderr := run("check-config", "--config", path)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "sinks[2]")
	require.NoError(t, os.WriteFile(path, []byte(strings.SplitN(cfg, "  - name: broken", 2)[0]), 0o600))

	code, out, stderr := run("preview", "--config", path, "--sink", "ops")
	require.Equal(t, 0, code, stderr)
	for _, ev := range diff.SampleEvents() {
		assert.Contains(t, out, "# "+ev.Type+" "+ev.ID)
	}
	assert.Contains(t, out, `"msg_type": "interactive"`)
	assert.Contains(t, out, "https://app.example/tasks/")
	assert.Contains(t, out, "未开始 → 进行中", "status names in the sink's locale")
	assert.Contains(t, out, "# task.stalled rule-stalled-237-", "derived events are previewed")
	assert.Contains(t, out, "任务已停滞 4 小时")
	assert.NotContains(t, out, "s3cr3t")
	assert.NotContains(t, out, "6281519140316", "phone numbers are redacted by default in chat sinks")
	assert.NotContains(t, out, "6281519140361", "in the changes of task.updated too")
	assert.Contains(t, out, "任务已修改：Callback 4.8 (VIP)", "the changes that leave no log are previewed")
	assert.Contains(t, out, `名称：Callback 4.8 → Callback 4.8 (VIP)\n电话：6281****0316 → 6281****0361`)
	assert.Contains(t, out, "任务备注已修改：Callback 4.8 (VIP)")
	assert.Contains(t, out, "任务已删除：Callback 4.8 (VIP)")

	code, out, stderr = run("preview", "--config", path, "--sink", "slack")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "filtered out", "events the sink does not take are shown as such")
	assert.Contains(t, out, `"blocks"`)
	assert.Contains(t, out, "not started → in progress")

	// With rules configured, preview shows each rule's events.
	withRules := strings.Replace(strings.SplitN(cfg, "  - name: broken", 2)[0], "    events: [task.status_changed]\n", "    events: [task.status_changed, task.stalled, task.stalled_resolved]\n", 1) +
		"rules:\n  - {name: stalled, event: task.stalled, when: {status: [1]}, since: last_log, after: 4h, resolve: true}\n"
	require.NoError(t, os.WriteFile(path, []byte(withRules), 0o600))
	code, out, stderr = run("preview", "--config", path, "--sink", "slack")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "Task stalled for 4 h")
	assert.Contains(t, out, "no longer stalled")
	require.NoError(t, os.WriteFile(path, []byte(strings.SplitN(cfg, "  - name: broken", 2)[0]), 0o600))

	// a given event file, as printed by `incs-relay events`
	ev := diff.SampleEvents()[2]
	b, err := json.Marshal(ev)
	require.NoError(t, err)
	evPath := filepath.Join(dir, "ev.json")
	require.NoError(t, os.WriteFile(evPath, b, 0o600))
	code, out, stderr = run("preview", "--config", path, "--sink", "slack", "--event", evPath)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, 1, strings.Count(out, "# "), out)
	// a task.deleted, whose data has no changes, keeps its shape
	del := diff.SampleEvents()[slices.Index(diff.Types, diff.TypeTaskDeleted)]
	require.NoError(t, os.WriteFile(evPath, del.Body, 0o600))
	code, out, stderr = run("preview", "--config", path, "--sink", "ops", "--event", evPath)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "任务已删除：Callback 4.8 (VIP)")
	assert.Contains(t, out, "**状态**\\n进行中", "the last status seen")

	code, _, stderr = run("preview", "--config", path, "--sink", "nope")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, `no sink "nope"`)
}

// TestPreview_WebhookFormats: check-config accepts each webhook format and
// rejects an unknown one with its line; preview shows each format's
// Content-Type, the ce-* headers of binary mode and its data-only body.
func TestPreview_WebhookFormats(t *testing.T) {
	dir := t.TempDir()
	cfg := `upstream: {token: t}
store: {path: "` + filepath.Join(dir, "x.db") + `"}
sinks:
  - name: plain
    type: webhook
    url: "https://example.com/incs"
    secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
  - name: structured
    type: webhook
    url: "https://example.com/incs"
    secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    format: cloudevents
  - name: binary
    type: webhook
    url: "https://example.com/incs"
    secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    format: binary
    redact: [user_phone]
`
	path := filepath.Join(dir, "relay.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	run := runMain
	code, out, stderr := run("check-config", "--config", path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "ok (3 sinks")

	samples := diff.SampleEvents()
	// and, with no rule configured, a sample rule's event and its resolution
	previewed := len(samples) + 2
	code, out, stderr = run("preview", "--config", path, "--sink", "plain")
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, previewed, strings.Count(out, "content-type: application/json\n"), out)
	assert.NotContains(t, out, "ce-")
	assert.Contains(t, out, `"specversion": "1.0"`)

	code, out, stderr = run("preview", "--config", path, "--sink", "structured")
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, previewed, strings.Count(out, "content-type: application/cloudevents+json\n"), out)
	assert.NotContains(t, out, "ce-")
	assert.Contains(t, out, `"specversion": "1.0"`)

	code, out, stderr = run("preview", "--config", path, "--sink", "binary")
	require.Equal(t, 0, code, stderr)
	ev := samples[1]
	assert.Contains(t, out, "# "+ev.Type+" "+ev.ID+" (task 237)\nce-id: "+ev.ID+"\nce-offset: 2\nce-source: incsapp/tasks\nce-specversion: 1.0\nce-subject: 237\nce-time: "+ev.Time.Format(time.RFC3339)+"\nce-type: "+ev.Type+"\ncontent-type: application/json\n{\n  \"task_id\": 237,", out)
	assert.NotContains(t, out, `"specversion"`, "binary mode: the body is the data alone")
	assert.NotContains(t, out, "6281519140316", "redact applies to the data sent")
	assert.NotContains(t, out, "6281519140361", "and to the changes of a redacted field")
	assert.Contains(t, out, `"from": "6281****0316",`)
	assert.NotContains(t, out, "whsec_")

	// a task.deleted from a file keeps its shape: its data has no changes
	// and no log members
	del := samples[slices.Index(diff.Types, diff.TypeTaskDeleted)]
	evPath := filepath.Join(dir, "ev.json")
	require.NoError(t, os.WriteFile(evPath, del.Body, 0o600))
	code, out, stderr = run("preview", "--config", path, "--sink", "plain", "--event", evPath)
	require.Equal(t, 0, code, stderr)
	var shown bytes.Buffer
	require.NoError(t, json.Compact(&shown, []byte(out[strings.Index(out, "{"):])))
	assert.JSONEq(t, string(del.Body), shown.String())

	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(cfg, "format: binary", "format: protobuf", 1)), 0o600))
	code, _, stderr = run("check-config", "--config", path)
	assert.Equal(t, 2, code)
	assert.Equal(t, "incs-relay: "+path+`:17: sinks[2].format: unknown format "protobuf" (want json, cloudevents, binary)`+"\n", stderr)
}
