package config

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config/configtest"
)

const rulesConfig = `upstream: {token: t}
calendars:
  office:
    timezone: Asia/Shanghai
    hours: { mon-fri: ["09:00-12:00", "13:30-18:30"] }
    holidays: ["2026-10-01..2026-10-08"]
rules:
  - name: stalled
    event: task.stalled
    when: { status: [1], assignee: present }
    since: last_log
    after: 4h
    calendar: office
    repeat: { every: 4h, max: 3 }
    resolve: true
  - name: unassigned
    event: task.unassigned
    when: { status: [0, 1], task_types: [1, 2], assignee: absent }
    since: created
    after: 30m
  - name: vip
    event: task.vip_waiting
    when: { assignee: [incs_1, incs_2] }
    since: last_assignment
    after: 1h
sinks:
  - {name: bus, type: nats, url: embedded, events: [task.stalled, task.stalled_resolved, task.assigned]}
`

func TestParseConfig_Rules(t *testing.T) {
	cfg, err := Parse("relay.yaml", []byte(rulesConfig), configtest.Env())
	require.NoError(t, err)
	rs := cfg.ValidRules()
	require.Len(t, rs, 3)
	assert.Equal(t, 4*time.Hour, rs[0].After)
	require.NotNil(t, rs[0].Calendar)
	assert.Equal(t, "Asia/Shanghai", rs[0].Calendar.Location.String())
	assert.True(t, rs[0].When.Assignee.Present)
	assert.Equal(t, 3, rs[0].Repeat.Max)
	assert.True(t, rs[1].When.Assignee.Absent)
	assert.Equal(t, []string{"incs_1", "incs_2"}, rs[2].When.Assignee.Names)
	assert.True(t, cfg.KnownEventType("task.stalled_resolved"))
	assert.False(t, cfg.KnownEventType("task.unassigned_resolved"), "no resolve: no resolving type")
	assert.Contains(t, cfg.EventTypes(), "task.vip_waiting")
}

func TestParseConfig_RulesErrors(t *testing.T) {
	swap := func(old, new string) string {
		require.Contains(t, rulesConfig, old)
		return strings.Replace(rulesConfig, old, new, 1)
	}
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"unknown rule key", swap("    resolve: true", "    resolve: true\n    colour: red"), []string{"relay.yaml:16", `unknown key "colour"`}},
		{"unknown calendar key", swap("    timezone: Asia/Shanghai", "    timezone: Asia/Shanghai\n    weekends: true"), []string{"relay.yaml:5", `unknown key "weekends"`}},
		{"bad name", swap("name: stalled", "name: Stalled"), []string{"relay.yaml:8", "rules[0].name", "[a-z0-9_]+"}},
		{"bad event", swap("event: task.stalled", "event: stalled"), []string{"relay.yaml:9", "rules[0].event", `"task."`}},
		{"log event type", swap("event: task.unassigned", "event: task.assigned"), []string{"rules[1].event", "log event type"}},
		{"resolved collides with log type", swap("event: task.unassigned", "event: task.status_changed"), []string{"rules[1].event"}},
		{"duplicate name", swap("name: vip", "name: stalled"), []string{"rules[2].name", "duplicate"}},
		{"bad since", swap("since: last_log", "since: updated"), []string{"relay.yaml:11", "rules[0].since", "last_status_change"}},
		{"missing since", swap("    since: created\n", ""), []string{"rules[1].since", "required"}},
		{"bad after", swap("after: 4h", "after: 4 hours"), []string{"relay.yaml:12", "rules[0].after", `bad duration "4 hours"`}},
		{"zero after", swap("after: 30m", "after: 0s"), []string{"rules[1].after", "above 0"}},
		{"unknown calendar", swap("calendar: office", "calendar: home"), []string{"relay.yaml:13", "rules[0].calendar", `"home"`}},
		{"repeat without max", swap("repeat: { every: 4h, max: 3 }", "repeat: { every: 4h }"), []string{"rules[0].repeat.max"}},
		{"repeat max 0 every", swap("repeat: { every: 4h, max: 3 }", "repeat: { max: 3 }"), []string{"rules[0].repeat.every"}},
		{"bad assignee", swap("assignee: present", "assignee: someone"), []string{"relay.yaml:10", "rules[0].when.assignee", "present, absent"}},
		{"bad status", swap("status: [1], assignee", "status: [7], assignee"), []string{"rules[0].when.status[0]"}},
		{"bad zone", swap("timezone: Asia/Shanghai", "timezone: Mars/Base"), []string{"relay.yaml:4", "calendars.office.timezone", "Mars/Base"}},
		{"bad hours", swap(`"13:30-18:30"`, `"13:30-25:00"`), []string{"relay.yaml:5", "calendars.office.hours.mon-fri[1]"}},
		{"bad day", swap("mon-fri:", "weekdays:"), []string{"calendars.office.hours.weekdays", "mon-fri"}},
		{"bad holiday", swap(`"2026-10-01..2026-10-08"`, `"2026-10-08..2026-10-01"`), []string{"relay.yaml:6", "calendars.office.holidays[0]", "ends before"}},
		{"unknown type in sink filter", swap("task.stalled_resolved, task.assigned", "task.stalled_resolved, task.late"), []string{"sinks[0].events[2]", "task.late"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("relay.yaml", []byte(tt.yaml), configtest.Env())
			require.Error(t, err)
			msg := err.Error()
			assert.NotContains(t, msg, "\n", "one line")
			for _, w := range tt.want {
				assert.Contains(t, msg, w)
			}
		})
	}
}
