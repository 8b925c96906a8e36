package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/sink"
)

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
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		m := &Main{Stdout: &out, Stderr: &errb, Getenv: os.LookupEnv}
		return m.Run(context.Background(), args), out.String(), errb.String()
	}

	// A broken template is a config error naming the sink, not a runtime surprise.
	code, _, stderr := run("check-config", "--config", path)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "sinks[2]")
	require.NoError(t, os.WriteFile(path, []byte(strings.SplitN(cfg, "  - name: broken", 2)[0]), 0o600))

	code, out, stderr := run("preview", "--config", path, "--sink", "ops")
	require.Equal(t, 0, code, stderr)
	for _, ev := range sink.SampleEvents() {
		assert.Contains(t, out, "# "+ev.Type+" "+ev.ID)
	}
	assert.Contains(t, out, `"msg_type": "interactive"`)
	assert.Contains(t, out, "https://app.example/tasks/")
	assert.Contains(t, out, "未开始 → 进行中", "status names in the sink's locale")
	assert.Contains(t, out, "# task.stalled rule-stalled-237-", "derived events are previewed")
	assert.Contains(t, out, "任务已停滞 4 小时")
	assert.NotContains(t, out, "s3cr3t")
	assert.NotContains(t, out, "6281519140316", "phone numbers are redacted by default in chat sinks")

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
	ev := sink.SampleEvents()[2]
	b, err := json.Marshal(ev)
	require.NoError(t, err)
	evPath := filepath.Join(dir, "ev.json")
	require.NoError(t, os.WriteFile(evPath, b, 0o600))
	code, out, stderr = run("preview", "--config", path, "--sink", "slack", "--event", evPath)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, 1, strings.Count(out, "# "), out)

	code, _, stderr = run("preview", "--config", path, "--sink", "nope")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, `no sink "nope"`)
}
