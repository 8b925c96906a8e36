package config

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config/configtest"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/sink"
)

// TestParseConfig_OwnedRules: rules the config asks of their owning
// package (sink.ParseSubject, sink.CheckChatConfig, sink.CheckNetworks,
// sink.CheckStatuses, rules.Rule.Validate) come back as one line naming
// the file, the line and the sink's or rule's key, exactly.
func TestParseConfig_OwnedRules(t *testing.T) {
	lookup := configtest.Env("INCS_TOKEN", "t")
	const slack = "upstream: {token: t}\nsinks:\n  - name: c\n    type: slack\n    url: \"https://hooks.slack.com/services/x\"\n"
	const nats = "upstream: {token: t}\nsinks:\n  - name: a\n    type: nats\n    url: embedded\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"subject placeholder", nats + "    subject: \"x.{task}\"\n", `relay.yaml:6: sinks[0].subject: unknown placeholder {task} (want {task_id}, {event} or {type})`},
		{"subject wildcard", nats + "    subject: \"x.*\"\n", `relay.yaml:6: sinks[0].subject: "x.*" is not a valid NATS subject`},
		{"subject unclosed", nats + "    subject: \"x.{event\"\n", `relay.yaml:6: sinks[0].subject: "x.{event": unclosed {`},
		{"locale", slack + "    locale: fr\n", `relay.yaml:6: sinks[0].locale: must be en or zh, got "fr"`},
		{"link", slack + "    link: \"https://app.example/{task}\"\n", `relay.yaml:6: sinks[0].link: "https://app.example/{task}": unknown placeholder; known: {task_id}, {event_id}`},
		{"burst", slack + "    burst: -1\n", `relay.yaml:6: sinks[0].burst: must not be negative`},
		{"rate limit", slack + "    rate_limit: -2\n", `relay.yaml:6: sinks[0].rate_limit: must not be negative`},
		{"status", nats + "    statuses: [1, 5]\n", `relay.yaml:6: sinks[0].statuses[1]: 5 is not a task status (0 not started, 1 in progress, 2 completed, 3 terminated)`},
		{"network", slack + "    deny_networks:\n      - 10.0.0.0/8\n      - nope\n", `relay.yaml:8: sinks[0].deny_networks[1]: "nope" is not a CIDR network such as 10.0.0.0/8`},
		{"rule status", "upstream: {token: t}\nrules:\n  - name: r\n    event: task.stalled\n    since: created\n    after: 1h\n    when:\n      status: [2, 4]\n",
			`relay.yaml:8: rules[0].when.status[1]: want 0 (not started) to 3 (terminated), got 4`},
		{"rule since", "upstream: {token: t}\nrules:\n  - {name: r, event: task.stalled, after: 1h}\n",
			`relay.yaml: rules[0].since: required: created, last_log, last_status_change or last_assignment`},
		{"page size", "upstream: {token: t, page_size: 101}\n", `relay.yaml:1: upstream.page_size: must be 1 to 100, got 101`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("relay.yaml", []byte(tc.yaml), lookup)
			require.EqualError(t, err, tc.want)
		})
	}
}

// TestDefaultConfig_PollerDefaults: the config's upstream and poll
// defaults are poller's, so the relay polls as a zero poller.Config would.
func TestDefaultConfig_PollerDefaults(t *testing.T) {
	c := Default()
	assert.Equal(t, poller.DefaultBaseURL, c.Upstream.BaseURL)
	assert.Equal(t, poller.DefaultTimezone, c.Upstream.Timezone)
	assert.Equal(t, poller.DefaultPageSize, c.Upstream.PageSize)
	assert.Equal(t, poller.DefaultRateLimit, c.Upstream.RateLimit)
	assert.Equal(t, poller.DefaultTimeout, c.Upstream.Timeout.D())
	assert.Equal(t, poller.DefaultInterval, c.Poll.Interval.D())
	assert.Equal(t, poller.DefaultLookback, c.Poll.Lookback.D())
	assert.Equal(t, poller.DefaultFullSweep, c.Poll.FullSweep.D())
	assert.Equal(t, poller.DefaultBudget(poller.DefaultRateLimit, poller.DefaultInterval), c.EffectiveBudget())

	cfg, err := Parse("relay.yaml", []byte("upstream: {token: t}\nsinks:\n  - {name: a, type: nats, url: embedded}\n"), configtest.Env())
	require.NoError(t, err)
	assert.Equal(t, sink.DefaultNATSSubject, cfg.Sinks[0].Subject)
}
