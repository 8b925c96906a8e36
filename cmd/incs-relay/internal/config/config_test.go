package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config/configtest"
)

const validConfig = `
upstream:
  base_url: "http://127.0.0.1:8089"
  token: "${INCS_TOKEN}"
poll:
  interval: 2s
store:
  path: "/tmp/x.db"
sinks:
  - name: bus
    type: nats
    url: "nats://127.0.0.1:4222"
  - name: hooks
    type: webhook
    url: "https://example.com/incs?key=abc"
    secret: "${HOOK_SECRET}"
    events: ["task.assigned"]
    retry: { initial: 1s, max: 5m, max_elapsed: 72h }
  - name: ops-chat
    type: feishu
    url: "https://open.feishu.cn/open-apis/bot/v2/hook/x"
    locale: zh
`

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func TestParseConfig_Valid(t *testing.T) {
	cfg, err := Parse("relay.yaml", []byte(validConfig), configtest.Env("INCS_TOKEN", "tok#\"en", "HOOK_SECRET", testSecret))
	require.NoError(t, err)
	assert.Equal(t, `tok#"en`, cfg.Upstream.Token, "a secret with quotes and # survives expansion")
	assert.Equal(t, 2*time.Second, cfg.Poll.Interval.D())
	assert.Equal(t, 720*time.Hour, cfg.Poll.Lookback.D(), "default")
	assert.Equal(t, "snapshot", cfg.Poll.Initial)
	assert.Equal(t, "Asia/Shanghai", cfg.Location().String())
	assert.Equal(t, "incs.tasks.{task_id}.{event}", cfg.Sinks[0].Subject)
	assert.Equal(t, []string{testSecret}, cfg.Sinks[1].AllSecrets())
	assert.Equal(t, 72*time.Hour, cfg.Sinks[1].Retry.MaxElapsed.D())
	assert.Equal(t, "json", cfg.Sinks[1].Format, "the default webhook format")
	for _, f := range []string{"json", "cloudevents", "binary"} {
		y := strings.Replace(validConfig, "    events: [\"task.assigned\"]\n", "    format: "+f+"\n", 1)
		cfg, err := Parse("relay.yaml", []byte(y), configtest.Env("INCS_TOKEN", "t", "HOOK_SECRET", testSecret))
		require.NoError(t, err, f)
		assert.Equal(t, f, cfg.Sinks[1].Format)
	}
}

func TestParseConfig_Errors(t *testing.T) {
	base := configtest.Env("INCS_TOKEN", "t", "HOOK_SECRET", testSecret, "EMPTY", "")
	tests := []struct {
		name string
		yaml string
		env  func(string) (string, bool)
		want []string // substrings of the one-line error
	}{
		{"unknown top key", "upstrem: {}\n", base, []string{"relay.yaml:1", `unknown key "upstrem"`}},
		{"unknown nested key", "upstream:\n  token: t\n  tokn: x\n", base, []string{"relay.yaml:3", "upstream.tokn", `unknown key "tokn"`}},
		{"unknown sink key", "upstream: {token: t}\nsinks:\n  - name: a\n    type: nats\n    url: embedded\n    colour: red\n", base, []string{"relay.yaml:6", `unknown key "colour"`}},
		{"bad duration", "upstream: {token: t}\npoll:\n  interval: 10\n", base, []string{"relay.yaml:3", "poll.interval", `bad duration "10"`}},
		{"bad duration unit", "upstream: {token: t}\npoll:\n  lookback: 30d\n", base, []string{"poll.lookback", `bad duration "30d"`}},
		{"missing token", "upstream: {token: \"\"}\n", base, []string{"upstream.token", "required"}},
		{"token empty after expansion", "upstream: {token: \"${EMPTY}\"}\n", base, []string{"upstream.token", "required"}},
		{"unset variable", "upstream: {token: \"${NOPE}\"}\n", base, []string{"upstream.token", "NOPE is not set"}},
		{"bad zone", "upstream: {token: t, timezone: Mars/Base}\n", base, []string{"upstream.timezone", "Mars/Base"}},
		{"page size", "upstream: {token: t, page_size: 500}\n", base, []string{"upstream.page_size", "1 to 100"}},
		{"initial", "upstream: {token: t}\npoll: {initial: everything}\n", base, []string{"poll.initial", "snapshot or replay"}},
		{"wrong type", "upstream: {token: t, page_size: many}\n", base, []string{"relay.yaml:1", "wrong type"}},
		{"duplicate sink", "upstream: {token: t}\nsinks:\n  - {name: a, type: nats, url: embedded}\n  - {name: a, type: nats, url: embedded}\n", base, []string{"sinks[1].name", "duplicate"}},
		{"unknown sink type", "upstream: {token: t}\nsinks:\n  - {name: a, type: kafka, url: x}\n", base, []string{"sinks[0].type", "kafka"}},
		{"webhook without secret", "upstream: {token: t}\nsinks:\n  - {name: h, type: webhook, url: \"https://x.example/h\"}\n", base, []string{"sinks[0].secret", "required"}},
		{"webhook secret empty after expansion", "upstream: {token: t}\nsinks:\n  - {name: h, type: webhook, url: \"https://x.example/h\", secret: \"${EMPTY}\"}\n", base, []string{"sinks[0].secret", "required"}},
		{"webhook bad secret", "upstream: {token: t}\nsinks:\n  - {name: h, type: webhook, url: \"https://x.example/h\", secret: \"hunter2hunter2\"}\n", base, []string{"sinks[0].secret", "whsec_"}},
		{"webhook url missing", "upstream: {token: t}\nsinks:\n  - {name: h, type: webhook, secret: \"" + testSecret + "\"}\n", base, []string{"sinks[0].url", "required"}},
		{"subject on webhook", "upstream: {token: t}\nsinks:\n  - {name: h, type: webhook, url: \"https://x.example\", secret: \"" + testSecret + "\", subject: a.b}\n", base, []string{"sinks[0].subject", "not a setting of a webhook sink"}},
		{"unknown webhook format", "upstream: {token: t}\nsinks:\n  - name: h\n    type: webhook\n    url: \"https://x.example/h\"\n    secret: \"" + testSecret + "\"\n    format: xml\n", base, []string{"relay.yaml:7", "sinks[0].format", `unknown format "xml" (want json, cloudevents, binary)`}},
		{"format on nats", "upstream: {token: t}\nsinks:\n  - name: a\n    type: nats\n    url: embedded\n    format: binary\n", base, []string{"relay.yaml:6", "sinks[0].format", "not a setting of a nats sink (only webhook)"}},
		{"unknown event type", "upstream: {token: t}\nsinks:\n  - {name: a, type: nats, url: embedded, events: [task.archived]}\n", base, []string{"sinks[0].events[0]", "task.archived"}},
		{"bad subject placeholder", "upstream: {token: t}\nsinks:\n  - {name: a, type: nats, url: embedded, subject: \"x.{task}\"}\n", base, []string{"sinks[0].subject", "{task}"}},
		{"bad locale", "upstream: {token: t}\nsinks:\n  - {name: c, type: slack, url: \"https://hooks.slack.com/services/x\", locale: fr}\n", base, []string{"sinks[0].locale", "en or zh"}},
		{"admin off loopback without token", "upstream: {token: t}\nadmin: {addr: \"0.0.0.0:8086\"}\n", base, []string{"admin.token", "loopback"}},
		{"not yaml", "upstream: [\n", base, []string{"relay.yaml"}},
		{"budget above the rate limit", "upstream: {token: t, rate_limit: 5}\npoll: {interval: 10s, budget: 60}\n", base, []string{"poll.budget", "upstream.rate_limit", "poll.interval", "50"}},
		{"negative budget", "upstream: {token: t}\npoll: {budget: -1}\n", base, []string{"poll.budget", "above 0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("relay.yaml", []byte(tt.yaml), tt.env)
			require.Error(t, err)
			msg := err.Error()
			assert.NotContains(t, msg, "\n", "one line")
			assert.True(t, strings.HasPrefix(msg, "relay.yaml"), "names the file: %s", msg)
			for _, w := range tt.want {
				assert.Contains(t, msg, w)
			}
			assert.NotContains(t, msg, testSecret[6:], "never quotes a secret")
		})
	}
}

func TestParseConfig_SecretNeverInError(t *testing.T) {
	y := "upstream: {token: \"${TOK}\", base_url: \"ftp://u:pw@h/x?token=${TOK}\"}\n"
	_, err := Parse("relay.yaml", []byte(y), configtest.Env("TOK", "s3cr3t-token"))
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "s3cr3t-token")
	assert.NotContains(t, err.Error(), "pw")
}

func TestConfigFiles_Valid(t *testing.T) {
	files, err := filepath.Glob("../../../../configs/*.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			require.NoError(t, err)
			_, err = Parse(f, b, configtest.Env("INCS_TOKEN", "t", "WEBHOOK_SECRET", testSecret, "FEISHU_SECRET", "x", "SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/X", "FEISHU_WEBHOOK_URL", "https://open.feishu.cn/open-apis/bot/v2/hook/x"))
			require.NoError(t, err)
		})
	}
}
