package config

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config/configtest"
)

// reloadBase is the config the reload tests change.
const reloadBase = `upstream:
  token: "${TOKEN}"
  page_size: 50
poll:
  interval: 10s
admin:
  token: "${ADMIN}"
log:
  level: info
sinks:
  - name: bus
    type: nats
    url: "nats://127.0.0.1:4222"
  - name: hook
    type: webhook
    url: "https://x.example/h"
    secret: "${HOOK_SECRET}"
  - name: old
    type: slack
    url: "https://hooks.slack.com/services/x"
`

const otherSecret = "whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA=="

var reloadEnv = []string{"TOKEN", "tok-1", "ADMIN", "adm-1", "HOOK_SECRET", testSecret, "NEW_SECRET", otherSecret}

func parseReload(t *testing.T, y string, env ...string) *Config {
	t.Helper()
	cfg, err := Parse("relay.yaml", []byte(y), configtest.Env(append(append([]string(nil), reloadEnv...), env...)...))
	require.NoError(t, err)
	return cfg
}

// TestCompare: each category of change, and sinks matched by name.
func TestCompare(t *testing.T) {
	old := parseReload(t, reloadBase)
	rep := func(from, to string) string {
		y := strings.Replace(reloadBase, from, to, 1)
		require.NotEqual(t, reloadBase, y, "the replacement applies: %q", from)
		return y
	}
	tests := []struct {
		name    string
		yaml    string
		env     []string
		want    Changes
		summary string
	}{
		{"nothing", reloadBase, nil, Changes{SinksSame: []string{"bus", "hook", "old"}}, "no changes"},
		{"reordered sinks are the same", "upstream:\n  token: \"${TOKEN}\"\n  page_size: 50\nadmin: {token: \"${ADMIN}\"}\nlog: {level: info}\nsinks:\n" +
			"  - {name: old, type: slack, url: \"https://hooks.slack.com/services/x\"}\n" +
			"  - {name: hook, type: webhook, url: \"https://x.example/h\", secret: \"${HOOK_SECRET}\"}\n" +
			"  - {name: bus, type: nats, url: \"nats://127.0.0.1:4222\", subject: \"incs.tasks.{task_id}.{event}\", start: now}\n",
			nil, Changes{SinksSame: []string{"old", "hook", "bus"}}, "no changes"},
		{"sink added", reloadBase + "  - name: slack-ops\n    type: slack\n    url: \"https://hooks.slack.com/services/y\"\n", nil,
			Changes{SinksAdded: []string{"slack-ops"}, SinksSame: []string{"bus", "hook", "old"}}, "sinks: +slack-ops"},
		{"sink removed", strings.Split(reloadBase, "  - name: old\n")[0], nil,
			Changes{SinksRemoved: []string{"old"}, SinksSame: []string{"bus", "hook"}}, "sinks: -old"},
		{"sink renamed", rep("  - name: old\n", "  - name: chat\n"), nil,
			Changes{SinksAdded: []string{"chat"}, SinksRemoved: []string{"old"}, SinksSame: []string{"bus", "hook"}}, "sinks: +chat, -old"},
		{"sink changed", rep("    url: \"https://x.example/h\"\n", "    url: \"https://x.example/h2\"\n    events: [task.assigned]\n"), nil,
			Changes{SinksChanged: []string{"hook"}, SinksSame: []string{"bus", "old"}, ChangedKeys: map[string][]string{"hook": {"url", "events"}}},
			"sinks: ~hook (url, events)"},
		{"a secret's value rotated", reloadBase, []string{"HOOK_SECRET", otherSecret},
			Changes{SinksChanged: []string{"hook"}, SinksSame: []string{"bus", "old"}, ChangedKeys: map[string][]string{"hook": {"secret"}}},
			"sinks: ~hook (secret)"},
		{"secret to secrets while rotating", rep("    secret: \"${HOOK_SECRET}\"\n", "    secrets: [\"${NEW_SECRET}\", \"${HOOK_SECRET}\"]\n"), nil,
			Changes{SinksChanged: []string{"hook"}, SinksSame: []string{"bus", "old"}, ChangedKeys: map[string][]string{"hook": {"secret", "secrets"}}},
			"sinks: ~hook (secret, secrets)"},
		{"a nats sink's inline keys", rep("    url: \"nats://127.0.0.1:4222\"\n", "    url: \"nats://127.0.0.1:4222\"\n    creds: /c.creds\n    start: 5\n"), nil,
			Changes{SinksChanged: []string{"bus"}, SinksSame: []string{"hook", "old"}, ChangedKeys: map[string][]string{"bus": {"start", "creds"}}},
			"sinks: ~bus (start, creds)"},
		{"upstream token", reloadBase, []string{"TOKEN", "tok-2"}, Changes{SinksSame: []string{"bus", "hook", "old"}, Poll: true}, "poll"},
		{"page size", rep("page_size: 50", "page_size: 100"), nil, Changes{SinksSame: []string{"bus", "hook", "old"}, Poll: true}, "poll"},
		{"rate limit and timeout", rep("  page_size: 50\n", "  page_size: 50\n  rate_limit: 2\n  timeout: 3s\n"), nil, Changes{SinksSame: []string{"bus", "hook", "old"}, Poll: true}, "poll"},
		{"poll interval", rep("interval: 10s", "interval: 20s"), nil, Changes{SinksSame: []string{"bus", "hook", "old"}, Poll: true}, "poll"},
		{"rules", reloadBase + "rules:\n  - {name: r, event: task.stalled, since: created, after: 1h}\n", nil, Changes{SinksSame: []string{"bus", "hook", "old"}, Poll: true}, "poll"},
		{"calendars", reloadBase + "calendars:\n  office: {timezone: UTC, hours: {mon-fri: [\"09:00-17:00\"]}}\n", nil, Changes{SinksSame: []string{"bus", "hook", "old"}, Poll: true}, "poll"},
		{"log level", rep("level: info", "level: debug"), nil, Changes{SinksSame: []string{"bus", "hook", "old"}, LogLevel: true}, "log level"},
		{"admin token", reloadBase, []string{"ADMIN", "adm-2"}, Changes{SinksSame: []string{"bus", "hook", "old"}, AdminToken: true}, "admin token"},
		{"admin hosts", rep("admin:\n", "admin:\n  hosts: [relay.internal]\n"), nil, Changes{SinksSame: []string{"bus", "hook", "old"}, Admin: true}, "admin hosts or redact"},
		{"everything at once", rep("  - name: old\n    type: slack\n    url: \"https://hooks.slack.com/services/x\"\n", "  - name: slack-ops\n    type: slack\n    url: \"https://hooks.slack.com/services/y\"\n") +
			"rules:\n  - {name: r, event: task.stalled, since: created, after: 1h}\n",
			[]string{"HOOK_SECRET", otherSecret, "ADMIN", "adm-2"},
			Changes{SinksAdded: []string{"slack-ops"}, SinksRemoved: []string{"old"}, SinksChanged: []string{"hook"}, SinksSame: []string{"bus"},
				ChangedKeys: map[string][]string{"hook": {"secret"}}, Poll: true, AdminToken: true},
			"sinks: +slack-ops, ~hook (secret), -old; poll; admin token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch, err := Compare(old, parseReload(t, tt.yaml, tt.env...))
			require.NoError(t, err)
			assert.Equal(t, tt.want, ch)
			assert.Equal(t, tt.summary, ch.Summary())
			assert.Equal(t, tt.summary == "no changes", ch.Empty())
			for _, secret := range []string{testSecret, otherSecret, "tok-1", "tok-2", "adm-1", "adm-2", "hooks.slack.com", "x.example"} {
				assert.NotContains(t, ch.Summary(), secret, "names keys, never values")
			}
		})
	}
}

// TestCompare_Restart: keys that cannot change while the relay runs are
// an *Error naming each key (and its line) and the file; nothing applies.
func TestCompare_Restart(t *testing.T) {
	old := parseReload(t, reloadBase)
	const tail = "cannot change while incs-relay runs: restart it to apply (nothing of this file was applied)"
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"store.path", reloadBase + "store:\n  path: /tmp/other.db\n", "relay.yaml:22: store.path: " + tail},
		{"store.retention", reloadBase + "store:\n  retention: 24h\n", "relay.yaml:22: store.retention: " + tail},
		{"store.type", reloadBase + "store:\n  type: jetstream\n  url: \"nats://n1:4222\"\n  replicas: 3\n",
			"relay.yaml: store.type (line 22), store.url (line 23), store.replicas (line 24), store.lease, store.name, store.partitions, store.cache_mb: " + tail},
		{"admin.addr", strings.Replace(reloadBase, "admin:\n", "admin:\n  addr: \"127.0.0.1:9999\"\n", 1), "relay.yaml:7: admin.addr: " + tail},
		{"admin.addr disabled", strings.Replace(reloadBase, "admin:\n", "admin:\n  addr: \"\"\n", 1), "relay.yaml:7: admin.addr: " + tail},
		{"upstream.base_url", strings.Replace(reloadBase, "  page_size: 50\n", "  page_size: 50\n  base_url: \"https://other.example\"\n", 1), "relay.yaml:4: upstream.base_url: " + tail},
		{"upstream.timezone", strings.Replace(reloadBase, "  page_size: 50\n", "  page_size: 50\n  timezone: UTC\n", 1), "relay.yaml:4: upstream.timezone: " + tail},
		{"log.format", strings.Replace(reloadBase, "  level: info\n", "  level: info\n  format: json\n", 1), "relay.yaml:10: log.format: " + tail},
		{"several, with changes that could apply", strings.Replace(strings.Replace(reloadBase, "  page_size: 50\n", "  page_size: 50\n  timezone: UTC\n", 1), "  level: info\n", "  level: debug\n  format: json\n", 1) + "store:\n  retention: 24h\n",
			"relay.yaml: store.retention (line 24), upstream.timezone (line 4), log.format (line 11): " + tail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch, err := Compare(old, parseReload(t, tc.yaml))
			require.Error(t, err)
			var ce *Error
			require.ErrorAs(t, err, &ce, "exits 2")
			assert.Equal(t, tc.want, err.Error())
			assert.Equal(t, Changes{}, ch)
		})
	}

	// A key the new file leaves out has no line.
	_, err := Compare(parseReload(t, reloadBase+"store:\n  retention: 24h\n"), old)
	require.EqualError(t, err, "relay.yaml: store.retention: "+tail)

	// A jetstream store's url taken from the NATS sink: changing the sink
	// changes the store's cluster, and the error says where it comes from.
	js := "upstream: {token: t}\nstore: {type: jetstream}\nsinks:\n  - {name: bus, type: nats, url: \"nats://n1:4222\"}\n"
	a, err := Parse("relay.yaml", []byte(js), configtest.Env())
	require.NoError(t, err)
	b, err := Parse("relay.yaml", []byte(strings.Replace(js, "n1:4222", "n9:4222", 1)), configtest.Env())
	require.NoError(t, err)
	_, err = Compare(a, b)
	require.EqualError(t, err, "relay.yaml: store.url (the first NATS sink's, as the file sets none): "+tail)
}
