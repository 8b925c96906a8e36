package sink

// Tests of masking and redaction (redact.go): MaskValue, RedactJSON,
// Redact and the Redacting wrapper.

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

// TestRedacting_KeepsAsync: a NATS sink with redact set still publishes
// through DeliverAsync (JetStream's pipelined acks, no goroutine per
// message), and what it publishes is masked. A sink without DeliverAsync
// gets a wrapper without it.
func TestRedacting_KeepsAsync(t *testing.T) {
	s := natsTestServer(t, t.TempDir(), -1, nil)
	n := newTestNATS(t, NATSConfig{URL: s.ClientURL(), JetStream: true, Stream: &StreamConfig{Name: "INCS"}})
	r := Redacting(n, []string{"user_phone"})
	as, ok := r.(AsyncSink)
	require.True(t, ok, "the redacting NATS sink keeps the async path")

	ev := diff.SampleEvents()[0]
	require.Contains(t, string(ev.Body), "6281519140316")
	done := make(chan error, 1)
	as.DeliverAsync(context.Background(), &ev, func(err error) { done <- err })
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("no ack")
	}
	js, err := jetstream.New(natsTestConn(t, s))
	require.NoError(t, err)
	st, err := js.Stream(context.Background(), "INCS")
	require.NoError(t, err)
	m, err := st.GetMsg(context.Background(), 1)
	require.NoError(t, err)
	assert.NotContains(t, string(m.Data), "6281519140316")
	assert.Contains(t, string(m.Data), "6281****0316")
	assert.Equal(t, ev.ID, m.Header.Get("Nats-Msg-Id"))

	sync := Redacting(syncOnly{n}, []string{"user_phone"})
	_, ok = sync.(AsyncSink)
	assert.False(t, ok, "no DeliverAsync where the sink has none")
	assert.Same(t, Sink(n), Redacting(n, nil), "no fields: the sink itself")
}

// syncOnly hides a sink's DeliverAsync.
type syncOnly struct{ Sink }

func TestMaskValue(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"phone", "6281519140316", "6281****0316"},
		{"china mobile", "13812345678", "138****678"},
		{"short", "12345", "1****5"},
		{"eight", "12345678", "12****78"},
		{"four", "1234", "****"},
		{"one", "x", "****"},
		{"empty", "", ""},
		{"runes", "王小明先生", "王****生"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, MaskValue(tt.in))
		})
	}
}

func TestRedactJSON(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		fields []string
		want   string
	}{
		{name: "top level", in: `{"id":237,"user_phone":"6281519140316","name":"x"}`, fields: []string{"user_phone"},
			want: `{"id":237,"user_phone":"6281****0316","name":"x"}`},
		{name: "number", in: `{"user_phone":6281519140316}`, fields: []string{"user_phone"}, want: `{"user_phone":"6281****0316"}`},
		{name: "nested and arrays", in: `{"a":{"user_phone":"13812345678"},"l":[{"user_phone":"12345"},1]}`, fields: []string{"user_phone"},
			want: `{"a":{"user_phone":"138****678"},"l":[{"user_phone":"1****5"},1]}`},
		{name: "object value", in: `{"user":{"phone":"1"},"k":2}`, fields: []string{"user"}, want: `{"user":"****","k":2}`},
		{name: "null and empty kept", in: `{"user_phone":null,"email":""}`, fields: []string{"user_phone", "email"}, want: `{"user_phone":null,"email":""}`},
		{name: "no match keeps bytes", in: `{ "id" : 1 }`, fields: []string{"user_phone"}, want: `{ "id" : 1 }`},
		{name: "no fields", in: `{"user_phone":"6281519140316"}`, want: `{"user_phone":"6281519140316"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RedactJSON(json.RawMessage(tt.in), tt.fields)
			require.NoError(t, err)
			assert.Equal(t, tt.want, string(got))
		})
	}
	_, err := RedactJSON(json.RawMessage(`{"user_phone":`), []string{"user_phone"})
	assert.Error(t, err)
}

func TestRedact(t *testing.T) {
	ev := diff.SampleEvents()[3] // commented
	orig := diff.SampleEvents()[3]
	red := Redact(&ev, []string{"user_phone", "comment", "id"})

	assert.Equal(t, orig, ev, "the input is not modified")
	assert.Contains(t, string(red.Data.Task), `"user_phone":"6281****0316"`)
	assert.Contains(t, string(red.Data.Task), `"id":"****"`, "task id is masked when asked")
	assert.Equal(t, MaskValue(orig.Data.Comment), red.Data.Comment)

	var body map[string]any
	require.NoError(t, json.Unmarshal(red.Body, &body))
	assert.Equal(t, orig.ID, body["id"], "envelope fields are never masked")
	data := body["data"].(map[string]any)
	assert.Equal(t, MaskValue(orig.Data.Comment), data["comment"])
	assert.Equal(t, "6281****0316", data["task"].(map[string]any)["user_phone"])
	assert.NotContains(t, string(red.Body), "6281519140316")

	plain := Redact(&ev, nil)
	assert.Equal(t, ev, *plain)
	assert.NotSame(t, &ev, plain)
}

// TestRedact_Changes checks that a redacted field is masked in the
// changes of task.updated and task.log_updated too, "from" and "to",
// in the body and in the decoded event, and that other changes and the
// input are left as they are.
func TestRedact_Changes(t *testing.T) {
	samples := diff.SampleEvents()
	ev := samples[slices.Index(diff.Types, diff.TypeTaskUpdated)]
	orig := diff.SampleEvents()[slices.Index(diff.Types, diff.TypeTaskUpdated)]
	red := Redact(&ev, []string{"user_phone"})
	assert.Equal(t, orig, ev, "the input is not modified")
	require.NotNil(t, red.Data.Edit)
	want := []diff.Change{
		{Field: "name", From: json.RawMessage(`"Callback 4.8"`), To: json.RawMessage(`"Callback 4.8 (VIP)"`)},
		{Field: "user_phone", From: json.RawMessage(`"6281****0316"`), To: json.RawMessage(`"6281****0361"`)},
	}
	assert.Equal(t, want, red.Data.Changes)
	for _, b := range [][]byte{red.Body, mustMarshal(t, red)} {
		assert.NotContains(t, string(b), "6281519140316")
		assert.NotContains(t, string(b), "6281519140361")
		var body struct {
			Data struct {
				Task    map[string]any
				Changes []diff.Change
			}
		}
		require.NoError(t, json.Unmarshal(b, &body))
		assert.Equal(t, want, body.Data.Changes)
		assert.Equal(t, "6281****0361", body.Data.Task["user_phone"])
	}
	assert.JSONEq(t, string(mustMarshal(t, red)), string(red.Body), "the body is the redacted event")

	// A field named in changes but not redacted is kept; a number is
	// masked as its text, as the field itself is.
	num := Redact(&ev, []string{"auth_id", "name"})
	require.Len(t, num.Data.Changes, 2)
	assert.Equal(t, `"Call****VIP)"`, string(num.Data.Changes[0].To))
	assert.Equal(t, orig.Data.Changes[1], num.Data.Changes[1])
	assert.Contains(t, string(num.Body), `"auth_id":"3****8"`)
	assert.Contains(t, string(num.Body), `{"field":"user_phone","from":"6281519140316","to":"6281519140361"}`)
	assert.JSONEq(t, string(mustMarshal(t, num)), string(num.Body))

	// task.log_updated: the comment, and its updated_at when asked.
	lu := samples[slices.Index(diff.Types, diff.TypeTaskLogUpdated)]
	red = Redact(&lu, []string{"comment", "updated_at"})
	require.Len(t, red.Data.Changes, 2)
	for i, c := range red.Data.Changes {
		assert.Equal(t, string(chatMaskJSON(lu.Data.Changes[i].From)), string(c.From), c.Field)
		assert.Equal(t, string(chatMaskJSON(lu.Data.Changes[i].To)), string(c.To), c.Field)
		assert.NotEqual(t, string(lu.Data.Changes[i].To), string(c.To), c.Field)
	}
	assert.NotContains(t, string(red.Body), "Thursday")
	assert.NotContains(t, string(red.Body), "tomorrow")
	assert.NotContains(t, string(red.Body), "2026-04-08 17:30:40", "updated_at masked in the log and in changes")
	assert.Contains(t, string(red.Body), `"time":"2026-04-08T17:30:40+08:00"`, "envelope fields are never masked")
	assert.JSONEq(t, string(mustMarshal(t, red)), string(red.Body))

	// task.deleted has no changes; its last values are masked as a task.
	del := samples[slices.Index(diff.Types, diff.TypeTaskDeleted)]
	red = Redact(&del, []string{"user_phone"})
	assert.Contains(t, string(red.Body), `"user_phone":"6281****0361"`)
	assert.NotContains(t, string(red.Body), `changes`)
	assert.JSONEq(t, string(mustMarshal(t, red)), string(red.Body))
}

func mustMarshal(t *testing.T, ev *diff.Event) []byte {
	t.Helper()
	c := *ev
	c.Body = nil
	b, err := json.Marshal(&c)
	require.NoError(t, err)
	return b
}
