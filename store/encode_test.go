package store

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

func TestEncodeEvent(t *testing.T) {
	require.True(t, fastEncoding, "diff.Event changed: update encodeEvent and its layout list")

	tests := []struct {
		name   string
		modify func(ev *diff.Event)
	}{
		{name: "plain", modify: func(ev *diff.Event) {}},
		{name: "offset", modify: func(ev *diff.Event) { ev.Offset = 18446744073709551615 }},
		{name: "html and quotes", modify: func(ev *diff.Event) {
			ev.Data.Comment = `<b>"a" & 'b'</b> \ /`
			ev.Data.Task = json.RawMessage(`{"name":"<x>&amp;","n":1}`)
		}},
		{name: "control and separators", modify: func(ev *diff.Event) {
			ev.Data.Comment = "a\nb\tc\r\x00\x1f\b\f\u2028\u2029\x7f"
			ev.Data.Log = json.RawMessage("{\"c\":\"\u2028\"}")
		}},
		{name: "invalid utf-8", modify: func(ev *diff.Event) {
			ev.Data.Comment = "ok \xff\xfe 已经跟进 \xe4\xb8"
		}},
		{name: "pretty raw", modify: func(ev *diff.Event) {
			ev.Data.Task = json.RawMessage("{\n    \"id\": 237,\n    \"name\": \"4.8 回访\",\n    \"tags\": [ 1, 2 ]\n}")
			ev.Data.Log = json.RawMessage(" {\"id\" :531} ")
		}},
		{name: "escapes in raw", modify: func(ev *diff.Event) {
			ev.Data.Task = json.RawMessage(`{"a":"x\"y","b":"\\","c":"\u00e9 "}`)
		}},
		{name: "previous assignee", modify: func(ev *diff.Event) { ev.Data.PreviousAssignee = "incs_2" }},
		{name: "negative numbers", modify: func(ev *diff.Event) {
			ev.Data.TaskID, ev.Data.Status, ev.Data.PreviousStatus = -5, -1, 99
		}},
		{name: "utc and nanoseconds", modify: func(ev *diff.Event) {
			ev.Time = time.Date(2026, 4, 8, 9, 22, 6, 123456789, time.UTC)
		}},
		{name: "null raw falls back", modify: func(ev *diff.Event) { ev.Data.Log = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := diff.Diff(new(task(237, 531, 532, 533, 534)), nil, shanghai)
			require.NoError(t, err)
			ev := &evs[3]
			tt.modify(ev)
			want, err := json.Marshal(ev)
			require.NoError(t, err)
			var enc eventEncoder
			got, at, err := enc.encode([]byte("prefix"), ev)
			require.NoError(t, err)
			got = patchOffset(got, at, ev.Offset)
			assert.Equal(t, "prefix"+string(want), string(got))
			assert.True(t, assertDecodes(t, want), "the fast decode takes what the store writes")
		})
	}
}

// FuzzEncodeEvent checks that the store's encoder and json.Marshal agree.
func FuzzEncodeEvent(f *testing.F) {
	f.Add("已经跟进", `{"id":237,"name":"4.8"}`, `{"id":531}`, int64(237), uint64(1))
	f.Add("<&>\u2028\xff", "{ \"a\" : [1, 2] }", `"x"`, int64(-1), uint64(0))
	f.Fuzz(func(t *testing.T, comment, taskJSON, logJSON string, taskID int64, offset uint64) {
		if !json.Valid([]byte(taskJSON)) || !json.Valid([]byte(logJSON)) {
			return // diff only ever hands over valid JSON
		}
		ev := diff.Event{
			SpecVersion: diff.SpecVersion, ID: "log-1", Source: diff.Source, Type: comment,
			Subject: comment, Time: time.Unix(taskID%1e10, 0).In(shanghai), DataContentType: diff.DataContentType,
			Offset: offset,
			Data: diff.Data{
				TaskID: taskID, Task: json.RawMessage(taskJSON), Log: json.RawMessage(logJSON),
				StatusName: comment, AssigneeUsername: comment, PreviousAssignee: comment, Comment: comment,
			},
		}
		want, werr := json.Marshal(&ev)
		var enc eventEncoder
		got, at, gerr := enc.encode(nil, &ev)
		if werr != nil {
			assert.Error(t, gerr)
			return
		}
		require.NoError(t, gerr)
		assert.Equal(t, string(want), string(patchOffset(got, at, offset)))
		assertDecodes(t, want)
	})
}

// assertDecodes checks that decodeEventFast, if it takes body, decodes it
// exactly as encoding/json does, and reports whether it took it.
func assertDecodes(t *testing.T, body []byte) bool {
	t.Helper()
	var want diff.Event
	require.NoError(t, json.Unmarshal(body, &want))
	var got diff.Event
	if !decodeEventFast(&got, body) {
		return false
	}
	assert.True(t, want.Time.Equal(got.Time), "time")
	_, wantOff := want.Time.Zone()
	_, gotOff := got.Time.Zone()
	assert.Equal(t, wantOff, gotOff, "time zone offset")
	got.Time, want.Time = time.Time{}, time.Time{}
	assert.Equal(t, want, got)
	return true
}
