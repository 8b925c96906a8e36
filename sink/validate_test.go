package sink

// Tests of the setting checks (validate.go), and of ParseSubject's errors
// (subject.go).

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/sink/chat"
)

// TestParseSubject_Errors: the one subject check, as the config shows it
// under sinks[i].subject and NewNATS under "nats <name>: subject".
func TestParseSubject_Errors(t *testing.T) {
	for _, tc := range []struct{ tmpl, want string }{
		{"x.{task}", "unknown placeholder {task} (want {task_id}, {event} or {type})"},
		{"x.{a{b}", "unknown placeholder {a{b} (want {task_id}, {event} or {type})"},
		{"x.{}", "unknown placeholder {} (want {task_id}, {event} or {type})"},
		{"x.{event", `"x.{event": unclosed {`},
		{"x.event}", `"x.event}": unmatched }`},
		{"x..{task_id}", `"x..{task_id}" is not a valid NATS subject`},
		{".x", `".x" is not a valid NATS subject`},
		{"x.", `"x." is not a valid NATS subject`},
		{"x y", `"x y" is not a valid NATS subject`},
		{"x.*", `"x.*" is not a valid NATS subject`},
		{"x.>", `"x.>" is not a valid NATS subject`},
		{"", `"" is not a valid NATS subject`},
	} {
		t.Run(tc.tmpl, func(t *testing.T) {
			_, err := ParseSubject(tc.tmpl)
			require.EqualError(t, err, tc.want)
		})
	}
	s, err := ParseSubject(DefaultNATSSubject)
	require.NoError(t, err)
	ev := &diff.Event{Type: diff.TypeTaskAssigned, Data: diff.Data{TaskID: 42}}
	assert.Equal(t, "incs.tasks.42.assigned", s.Render(ev))
	got, err := NATSSubject("a.{type}", ev)
	require.NoError(t, err)
	assert.Equal(t, "a.task.assigned", got)
}

func TestCheckStatuses(t *testing.T) {
	require.NoError(t, CheckStatuses(nil))
	require.NoError(t, CheckStatuses([]int{diff.StatusNotStarted, diff.StatusInProgress, diff.StatusCompleted, diff.StatusTerminated}))
	for _, tc := range []struct {
		in        []int
		field, ms string
	}{
		{[]int{2, 4}, "statuses[1]", "4 is not a task status (0 not started, 1 in progress, 2 completed, 3 terminated)"},
		{[]int{-1}, "statuses[0]", "-1 is not a task status (0 not started, 1 in progress, 2 completed, 3 terminated)"},
	} {
		var fe *FieldError
		require.ErrorAs(t, CheckStatuses(tc.in), &fe)
		assert.Equal(t, tc.field, fe.Field)
		assert.Equal(t, tc.ms, fe.Msg)
	}
}

// TestCheckLocale: every locale the renderer has passes, and nothing else.
func TestCheckLocale(t *testing.T) {
	require.NoError(t, CheckLocale(""), "empty takes the platform's default")
	for _, l := range chat.Locales() {
		require.NoError(t, CheckLocale(l))
	}
	for _, l := range []string{"fr", "ZH", "zh-CN", " en"} {
		err := CheckLocale(l)
		var fe *FieldError
		require.ErrorAs(t, err, &fe, l)
		assert.Equal(t, "locale", fe.Field)
		assert.Equal(t, "must be en or zh, got \""+l+"\"", fe.Msg)
	}
}

func TestCheckNetworks(t *testing.T) {
	require.NoError(t, CheckNetworks([]string{"10.0.0.0/8", "fd00::/8"}, []string{"127.0.0.1/32"}))
	require.EqualError(t, CheckNetworks([]string{"10.0.0.0/8", "bogus"}, nil), `deny_networks[1]: "bogus" is not a CIDR network such as 10.0.0.0/8`)
	require.EqualError(t, CheckNetworks(nil, []string{"10.0.0.1"}), `allow_networks[0]: "10.0.0.1" is not a CIDR network such as 10.0.0.0/8`)
	_, err := NewGuard(nil, []string{"x/99"})
	require.EqualError(t, err, `guard: allow_networks[0]: "x/99" is not a CIDR network such as 10.0.0.0/8`, "the guard parses through the same rule")
}

// TestCheckChatConfig: each setting checked without I/O names its field.
func TestCheckChatConfig(t *testing.T) {
	require.NoError(t, CheckChatConfig(ChatConfig{}))
	require.NoError(t, CheckChatConfig(ChatConfig{Locale: "zh", Link: "https://app.example/tasks/{task_id}#{event_id}", RateLimit: 1, Burst: 2}))
	for _, tc := range []struct {
		name  string
		cfg   ChatConfig
		field string
	}{
		{"locale", ChatConfig{Locale: "fr"}, "locale"},
		{"link placeholder", ChatConfig{Link: "https://app.example/{task}"}, "link"},
		{"link scheme", ChatConfig{Link: "ftp://app.example/{task_id}"}, "link"},
		{"rate limit", ChatConfig{RateLimit: -1}, "rate_limit"},
		{"burst", ChatConfig{Burst: -1}, "burst"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var fe *FieldError
			require.ErrorAs(t, CheckChatConfig(tc.cfg), &fe)
			assert.Equal(t, tc.field, fe.Field)
		})
	}
}
