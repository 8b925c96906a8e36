package consume_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/sink/consume"
)

// TestDecode_EveryType: an event of every type the relay emits reads
// back in every webhook format, as the relay sends it, and its data
// encodes back to the body's.
func TestDecode_EveryType(t *testing.T) {
	samples := diff.SampleEvents()
	require.Len(t, samples, len(diff.Types))
	for _, ev := range samples {
		for format, got := range decodeEveryFormat(t, &ev) {
			assert.True(t, ev.Time.Equal(got.Time), format)
			assert.Equal(t, string(ev.Body), string(got.Body), "%s %s: the stored body", format, ev.ID)
			assert.Equal(t, consume.IsEdit(ev.Type), got.Data.Edit != nil, "%s %s", format, ev.ID)
			got.Body = nil
			again, err := json.Marshal(got)
			require.NoError(t, err)
			assert.JSONEq(t, string(ev.Body), string(again), "%s %s encodes back the same", format, ev.ID)
		}
	}
}

// TestChanges: the changes of task.updated and task.log_updated, none of
// task.deleted or of a log's event; their tasks and logs decode, and
// task.updated and task.deleted carry no log.
func TestChanges(t *testing.T) {
	samples := diff.SampleEvents()
	byType := func(typ string) *consume.Event {
		ev, err := consume.Decode(samples[slices.Index(diff.Types, typ)].Body)
		require.NoError(t, err)
		return ev
	}

	upd := byType(consume.TypeTaskUpdated)
	require.True(t, consume.IsEdit(upd.Type))
	assert.Equal(t, []consume.Change{
		{Field: "name", From: json.RawMessage(`"Callback 4.8"`), To: json.RawMessage(`"Callback 4.8 (VIP)"`)},
		{Field: "user_phone", From: json.RawMessage(`"6281519140316"`), To: json.RawMessage(`"6281519140361"`)},
	}, consume.Changes(upd))
	task, err := consume.Task(upd)
	require.NoError(t, err)
	assert.Equal(t, "Callback 4.8 (VIP)", task.Name)
	_, err = consume.Log(upd)
	assert.ErrorIs(t, err, consume.ErrBody)

	lu := byType(consume.TypeTaskLogUpdated)
	require.Len(t, consume.Changes(lu), 2)
	var from, to string
	require.NoError(t, json.Unmarshal(consume.Changes(lu)[0].From, &from))
	require.NoError(t, json.Unmarshal(consume.Changes(lu)[0].To, &to))
	assert.Equal(t, "comment", consume.Changes(lu)[0].Field)
	assert.Contains(t, from, "<tomorrow>")
	assert.Contains(t, to, "<Thursday>")
	l, err := consume.Log(lu)
	require.NoError(t, err)
	assert.Equal(t, to, l.Comment)

	del := byType(consume.TypeTaskDeleted)
	assert.Empty(t, consume.Changes(del))
	assert.NotNil(t, del.Data.Edit)
	task, err = consume.Task(del)
	require.NoError(t, err)
	assert.Equal(t, int64(237), task.ID)
	assert.Equal(t, "Erin", task.UserName)
	_, err = consume.Log(del)
	assert.ErrorIs(t, err, consume.ErrBody)
	bare := diff.Deleted(9, nil, time.Date(2026, 4, 8, 10, 0, 0, 0, time.UTC))
	bare.Offset = 1
	b, err := json.Marshal(&bare)
	require.NoError(t, err)
	ev, err := consume.Decode(b)
	require.NoError(t, err)
	task, err = consume.Task(ev)
	require.NoError(t, err)
	assert.Equal(t, diff.Task{ID: 9, Raw: json.RawMessage(`{"id":9}`)}, task)

	assert.Nil(t, consume.Changes(byType(diff.TypeTaskCommented)))
	assert.False(t, consume.IsEdit(diff.TypeTaskCommented))
	assert.False(t, consume.IsDerived(consume.TypeTaskDeleted))
}

// TestDecode_EditIDs: an edit type's event must have its type's id.
func TestDecode_EditIDs(t *testing.T) {
	for _, ev := range diff.SampleEvents() {
		if !consume.IsEdit(ev.Type) {
			continue
		}
		prefix, _, _ := strings.Cut(ev.ID, "-")
		for _, other := range []string{"log", "rule", "upd", "logupd", "del"} {
			if other == prefix {
				continue
			}
			body := strings.Replace(string(ev.Body), `"id":"`+prefix+`-`, `"id":"`+other+`-`, 1)
			_, err := consume.Decode([]byte(body))
			assert.ErrorIs(t, err, consume.ErrBody, "%s with id %s-…", ev.Type, other)
		}
	}
}
