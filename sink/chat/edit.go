package chat

// The changes that leave no log (task.updated, task.log_updated,
// task.deleted) in messages: "renamed: A → B" lines, in the locale.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/incs-relay/incs-relay/diff"
)

// editCard fills c's title, changes and quote for an event of a change
// that leaves no log, and returns its one-line change for the fallback
// and digests.
func (r *Renderer) editCard(c *Card, ev *diff.Event, lm map[string]any, name string) string {
	l := r.loc
	switch ev.Type {
	case diff.TypeTaskUpdated:
		c.Title = fmt.Sprintf(l.titleUpdated, name)
		c.Changes, c.ChangesTag = l.changeLines(changesOf(ev), 200), l.labelChanges
	case diff.TypeTaskLogUpdated:
		from, edited := commentChange(ev)
		if edited {
			c.Title = fmt.Sprintf(l.titleCommentEdited, name)
			c.Quote, c.QuoteTag = truncate(str(lm["comment"]), 2000), l.labelComment
			c.Changes, c.ChangesTag = []string{truncate(orEmpty(from, l), 500)}, l.labelWas
		} else {
			c.Title = fmt.Sprintf(l.titleLogUpdated, name)
			c.Changes, c.ChangesTag = l.changeLines(changesOf(ev), 200), l.labelChanges
		}
	default: // diff.TypeTaskDeleted
		c.Title = fmt.Sprintf(l.titleDeleted, name)
	}
	return r.editLine(ev, lm, 40)
}

// editLine is the one-line change of an event of a change that leaves no
// log, its values shortened to n characters: "renamed: A → B; phone: …",
// "comment edited: …", "deleted".
func (r *Renderer) editLine(ev *diff.Event, lm map[string]any, n int) string {
	l := r.loc
	switch ev.Type {
	case diff.TypeTaskUpdated:
		return strings.Join(l.changeLines(changesOf(ev), n), "; ")
	case diff.TypeTaskLogUpdated:
		if _, edited := commentChange(ev); edited {
			return fmt.Sprintf(l.lineCommentEdited, truncate(oneLine(orEmpty(str(lm["comment"]), l)), n*3/2))
		}
		return fmt.Sprintf(l.lineLogUpdated, str(lm["id"]))
	}
	return l.lineDeleted
}

// editTemplateData sets d's status, assignee, comment and changes for
// an event of a change that leaves no log, whose data has none of the
// first three: the task's, the previous ones those a task.updated
// changed, and the log's comment. tm and lm are not escaped yet.
func (r *Renderer) editTemplateData(d *TemplateData, ev *diff.Event, tm, lm map[string]any) {
	esc, l := r.esc, r.loc
	status, err := strconv.Atoi(str(tm["status"]))
	if err != nil {
		status = -1 // a task.deleted whose values were not kept
	}
	d.Status, d.PreviousStatus = status, status
	d.Assignee = str(tm["assignee_username"])
	d.PreviousAssignee = ""
	for _, ch := range changesOf(ev) {
		switch ch.Field {
		case "status":
			if v, err := strconv.Atoi(jsonText(ch.From)); err == nil {
				d.PreviousStatus = v
			}
		case "assignee_username":
			d.PreviousAssignee = jsonText(ch.From)
		}
	}
	d.StatusName, d.PreviousStatusName = esc(l.statusName(d.Status)), esc(l.statusName(d.PreviousStatus))
	d.Assignee, d.PreviousAssignee = esc(d.Assignee), esc(d.PreviousAssignee)
	if ev.Type == diff.TypeTaskLogUpdated {
		d.Comment = esc(str(lm["comment"]))
	}
	for _, line := range l.changeLines(changesOf(ev), 200) {
		d.Changes = append(d.Changes, esc(line))
	}
}

// commentChange returns the comment before a task.log_updated event's
// edit, and whether its comment was edited.
func commentChange(ev *diff.Event) (string, bool) {
	for _, ch := range changesOf(ev) {
		if ch.Field == "comment" {
			return jsonText(ch.From), true
		}
	}
	return "", false
}

// ChangeLines returns the changes of a task.updated or task.log_updated
// event as chat messages show them, one line per change in locale ("en"
// or "zh"; another is "en"): "renamed: A → B", "status: not started → in
// progress", each value on one line and shortened to n characters.
func ChangeLines(locale string, changes []diff.Change, n int) []string {
	l, ok := locales[locale]
	if !ok {
		l = locales["en"]
	}
	return l.changeLines(changes, max(n, 1))
}

// changeLines returns one line per change: "renamed: A → B", each value
// on one line and shortened to n characters.
func (l *locale) changeLines(changes []diff.Change, n int) []string {
	out := make([]string, 0, len(changes))
	for _, ch := range changes {
		label, ok := l.fieldWords[ch.Field]
		if !ok {
			label = strings.ReplaceAll(ch.Field, "_", " ")
		}
		out = append(out, fmt.Sprintf(l.lineChange, label,
			l.changeValue(ch.Field, ch.From, ch.Truncated, n), l.changeValue(ch.Field, ch.To, ch.Truncated, n)))
	}
	return out
}

// changeValue shows one value of a change: a status by its name, no
// assignee as unassigned, "" as the locale's empty, a cut value ending in
// "…".
func (l *locale) changeValue(field string, raw json.RawMessage, cut bool, n int) string {
	s := jsonText(raw)
	switch {
	case field == "status":
		if v, err := strconv.Atoi(s); err == nil {
			return l.statusName(v)
		}
	case field == "assignee_username" && s == "":
		return l.unassigned
	}
	// A change says Truncated when either value was cut to diff.MaxValue
	// bytes: this one was if it is that long.
	cut = cut && len(s) > diff.MaxValue-utf8.UTFMax
	s = truncate(oneLine(orEmpty(s, l)), n)
	if cut && !strings.HasSuffix(s, "…") {
		s += "…"
	}
	return s
}

func orEmpty(s string, l *locale) string {
	if strings.TrimSpace(s) == "" {
		return l.empty
	}
	return s
}

// jsonText is a JSON string's text, or any other JSON value as it is.
func jsonText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	var s string
	if len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// changesOf returns ev's changes: none for a task.deleted, whose Edit a
// decoded event may not have (its JSON has no member to set it).
func changesOf(ev *diff.Event) []diff.Change {
	if ev.Data.Edit == nil {
		return nil
	}
	return ev.Data.Changes
}
