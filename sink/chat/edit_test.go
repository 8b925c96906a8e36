package chat

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

// sampleOf returns the sample event of typ.
func sampleOf(typ string) diff.Event {
	return diff.SampleEvents()[slices.Index(diff.Types, typ)]
}

func change(field, from, to string, cut bool) diff.Change {
	return diff.Change{Field: field, From: json.RawMessage(from), To: json.RawMessage(to), Truncated: cut}
}

// TestCard_Updated: one "renamed: A → B" line per change, in each
// locale, statuses by name, no assignee as unassigned, a long value
// shortened and a cut one ending in "…"; the status and assignee fields
// are the task's, since the data has none of its own.
func TestCard_Updated(t *testing.T) {
	ev := sampleOf(diff.TypeTaskUpdated)
	long := strings.Repeat("很长的描述 ", 400)[:diff.MaxValue-1] // cut on a rune boundary, as diff does
	ev.Data.Edit = &diff.Edit{Changes: []diff.Change{
		change("assignee_username", `"incs_1"`, `""`, false),
		change("description", `"short"`, string(mustJSON(t, long)), true),
		change("name", `"Callback 4.8"`, `"Callback 4.8 (VIP)"`, false),
		change("status", `0`, `1`, false),
		change("type", `3`, `4`, false),
	}}
	for locale, want := range map[string][]string{
		"en": {"reassigned: incs_1 → unassigned", "description: short → " + truncate(oneLine(long), 200),
			"renamed: Callback 4.8 → Callback 4.8 (VIP)", "status: not started → in progress", "type: 3 → 4"},
		"zh": {"负责人：incs_1 → 未分配", "描述：short → " + truncate(oneLine(long), 200),
			"名称：Callback 4.8 → Callback 4.8 (VIP)", "状态：未开始 → 进行中", "类型：3 → 4"},
	} {
		r, err := NewRenderer(RendererConfig{Locale: locale})
		require.NoError(t, err)
		c, err := r.Card(&ev)
		require.NoError(t, err)
		assert.Equal(t, want, c.Changes, locale)
		assert.Equal(t, locales[locale].labelChanges, c.ChangesTag)
		assert.Equal(t, []Field{{locales[locale].labelStatus, locales[locale].status[1]}, {locales[locale].labelAssignee, "incs_1"},
			{locales[locale].labelUser, "Erin" + paren("6281519140361", locale)}}, c.Fields)
		assert.Contains(t, c.Title, "Callback 4.8 (VIP)")
		assert.Empty(t, c.Quote)

		d := r.Digest([]*diff.Event{&ev})
		require.Len(t, d.Lines, 1)
		assert.LessOrEqual(t, len([]rune(d.Lines[0].Text)), 120)
		assert.Contains(t, d.Lines[0].Text, strings.Split(want[0], " → ")[0])
	}
}

// TestCard_LogUpdated: an edited comment is quoted with what it was
// before; a log whose comment did not change lists its changes.
func TestCard_LogUpdated(t *testing.T) {
	ev := sampleOf(diff.TypeTaskLogUpdated)
	r, err := NewRenderer(RendererConfig{Locale: "en"})
	require.NoError(t, err)
	c, err := r.Card(&ev)
	require.NoError(t, err)
	assert.Equal(t, "Comment edited on Callback 4.8 (VIP)", c.Title)
	assert.Equal(t, "已经跟进 — customer will call back <Thursday> & confirm", c.Quote)
	assert.Equal(t, []string{"已经跟进 — customer will call back <tomorrow> & confirm"}, c.Changes)
	assert.Equal(t, "Before the edit", c.ChangesTag)
	assert.Contains(t, c.Fallback, "comment edited: ")

	ev.Data.Edit = &diff.Edit{Changes: []diff.Change{change("updated_at", `"2026-04-08 17:25:01"`, `"2026-04-08 17:30:40"`, false)}}
	c, err = r.Card(&ev)
	require.NoError(t, err)
	assert.Equal(t, "Task log updated: Callback 4.8 (VIP)", c.Title)
	assert.Empty(t, c.Quote)
	assert.Equal(t, []string{"updated at: 2026-04-08 17:25:01 → 2026-04-08 17:30:40"}, c.Changes)
	assert.Equal(t, "Task log updated: Callback 4.8 (VIP) — log 535 updated", c.Fallback)
}

// TestCard_Deleted: the last values seen, or the task id alone when the
// relay kept none; every platform's shape of it is valid JSON without an
// empty fields block.
func TestCard_Deleted(t *testing.T) {
	ev := sampleOf(diff.TypeTaskDeleted)
	r, err := NewRenderer(RendererConfig{Locale: "zh"})
	require.NoError(t, err)
	c, err := r.Card(&ev)
	require.NoError(t, err)
	assert.Equal(t, "任务已删除：Callback 4.8 (VIP)", c.Title)
	assert.Equal(t, "任务已删除：Callback 4.8 (VIP) — 已删除", c.Fallback)
	assert.Len(t, c.Fields, 3)

	// As the store decodes it: its JSON has no changes; the decoded
	// event still has its Edit (diff.Event.UnmarshalJSON), and a card
	// without one renders too.
	var decoded diff.Event
	require.NoError(t, json.Unmarshal(ev.Body, &decoded))
	require.NotNil(t, decoded.Data.Edit)
	noEdit := decoded
	noEdit.Data.Edit = nil
	_, err = r.Card(&noEdit)
	require.NoError(t, err)
	tr, err := NewRenderer(RendererConfig{Locale: "zh", Template: "{{.StatusName}} {{.Changes}}"})
	require.NoError(t, err)
	c, err = tr.Card(&decoded)
	require.NoError(t, err)
	assert.Equal(t, "任务已删除：Callback 4.8 (VIP)", c.Title)
	assert.Equal(t, "进行中 []", c.Custom)
	assert.Len(t, r.Digest([]*diff.Event{&decoded}).Lines, 1)

	bare := diff.Deleted(237, &diff.Before{}, time.Date(2026, 4, 8, 17, 32, 15, 0, time.UTC))
	c, err = r.Card(&bare)
	require.NoError(t, err)
	assert.Equal(t, "任务已删除：#237", c.Title)
	assert.Empty(t, c.Fields, "no status is known: none shown")
	b, err := SlackPayload(&c)
	require.NoError(t, err)
	assert.NotContains(t, string(b), `"section"`)
	b, err = FeishuPayload(&c, "", "")
	require.NoError(t, err)
	assert.NotContains(t, string(b), `"fields"`)
	assert.NotContains(t, string(b), `{"tag":"div"}`)
}

// TestCard_EditsRedacted: the renderer's redaction reaches the changes.
func TestCard_EditsRedacted(t *testing.T) {
	ev := sampleOf(diff.TypeTaskUpdated)
	r, err := NewRenderer(RendererConfig{Locale: "en", Redact: func(e *diff.Event) *diff.Event {
		c := *e
		ed := diff.Edit{Changes: slices.Clone(e.Data.Changes)}
		for i := range ed.Changes {
			if ed.Changes[i].Field == "user_phone" {
				ed.Changes[i].From, ed.Changes[i].To = json.RawMessage(`"****"`), json.RawMessage(`"****"`)
			}
		}
		c.Data.Edit = &ed
		return &c
	}})
	require.NoError(t, err)
	c, err := r.Card(&ev)
	require.NoError(t, err)
	assert.Equal(t, []string{"renamed: Callback 4.8 → Callback 4.8 (VIP)", "phone: **** → ****"}, c.Changes)
	assert.NotContains(t, c.Fallback, "6281519140316")
}

// TestTemplate_Edits: a template sees the task's status and assignee,
// the previous ones a task.updated changed, the edited comment and the
// change lines.
func TestTemplate_Edits(t *testing.T) {
	r, err := NewRenderer(RendererConfig{Locale: "en", Template: `{{.ShortType}} {{.PreviousStatusName}}→{{.StatusName}} {{.PreviousAssignee}}→{{.Assignee}} [{{.Comment}}] {{range .Changes}}<{{.}}>{{end}}`,
		Escape: SlackEscape})
	require.NoError(t, err)
	upd := sampleOf(diff.TypeTaskUpdated)
	upd.Data.Edit = &diff.Edit{Changes: []diff.Change{change("assignee_username", `"incs_2"`, `"incs_1"`, false), change("status", `0`, `1`, false)}}
	c, err := r.Card(&upd)
	require.NoError(t, err)
	assert.Equal(t, "updated not started→in progress incs_2→incs_1 [] <reassigned: incs_2 → incs_1><status: not started → in progress>", c.Custom)

	lu := sampleOf(diff.TypeTaskLogUpdated)
	c, err = r.Card(&lu)
	require.NoError(t, err)
	assert.Equal(t, "log_updated in progress→in progress →incs_1 [已经跟进 — customer will call back &lt;Thursday&gt; &amp; confirm] "+
		"<comment: 已经跟进 — customer will call back &lt;tomorrow&gt; &amp; confirm → 已经跟进 — customer will call back &lt;Thursday&gt; &amp; confirm>"+
		"<updated at: 2026-04-08 17:25:01 → 2026-04-08 17:30:40>", c.Custom)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// TestTemplate_EditsLenient: a template that served before the changes
// that leave no log existed still loads, naming a log member or a task
// member a task.deleted lacks, or rendering nothing for them; such an
// event gets the default body. Other errors on their samples still fail.
func TestTemplate_EditsLenient(t *testing.T) {
	for _, tmpl := range []string{
		"{{.Log.comment}} {{.Task.created_at}}",
		`{{if not (eq .ShortType "updated" "log_updated" "deleted")}}{{.TaskName}}{{end}}`,
	} {
		r, err := NewRenderer(RendererConfig{Locale: "en", Template: tmpl})
		require.NoError(t, err, tmpl)
		del := sampleOf(diff.TypeTaskDeleted)
		c, err := r.Card(&del)
		if err == nil {
			assert.Empty(t, c.Custom, tmpl)
		}
		assert.Equal(t, "Task deleted: Callback 4.8 (VIP)", c.Title, tmpl)
	}
	_, err := NewRenderer(RendererConfig{Locale: "en", Template: `{{if eq .ShortType "deleted"}}{{index .Changes 3}}{{end}}x`})
	assert.ErrorContains(t, err, "index out of range")
}
