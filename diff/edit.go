package diff

// Changes that leave no log: a task's own fields edited, a seen log
// edited (its comment, its updated_at), a task deleted. Edits compares a
// task as read with what the store last saw of it (Before) and returns
// task.updated and task.log_updated events and the Before to keep;
// Deleted builds the task.deleted event from the last Before.

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// Event types of changes that leave no log (CONTRACT, "Changes that
// leave no log").
const (
	TypeTaskUpdated    = "task.updated"
	TypeTaskLogUpdated = "task.log_updated"
	TypeTaskDeleted    = "task.deleted"
)

// MaxValue is the most bytes of a field's value kept and reported in a
// change; a longer value is cut (on a UTF-8 boundary) and its change says
// Truncated.
const MaxValue = 4096

// Fields are the task fields whose change task.updated reports, sorted
// (a change list is sorted by field).
var Fields = [NumFields]string{"assignee_username", "auth_id", "creation_id", "description", "name", "status", "type", "user_name", "user_phone"}

// NumFields is len(Fields).
const NumFields = 9

// Indexes into Fields of the fields a new log can explain, and of the
// numeric ones.
const (
	fieldAssignee = 0
	fieldStatus   = 5
)

// numeric reports whether Fields[i] is a JSON number.
func numeric(i int) bool {
	switch Fields[i] {
	case "auth_id", "creation_id", "status", "type":
		return true
	}
	return false
}

// Change is one field's change in task.updated or task.log_updated: From
// and To are JSON values (a string or a number, as the API sends the
// field), cut to MaxValue bytes when Truncated.
type Change struct {
	Field     string          `json:"field"`
	From      json.RawMessage `json:"from"`
	To        json.RawMessage `json:"to"`
	Truncated bool            `json:"truncated,omitempty"`
}

// Edit is what an event of a change that leaves no log adds to its data:
// the changes (none for task.deleted). Its data has no status, comment or
// previous_* members: task_id, task, log (task.log_updated) and changes.
// See Data.MarshalJSON.
type Edit struct {
	Changes []Change `json:"changes,omitempty"`
}

// IDCounter is the last id an edit event of a task or log took: the
// updated_at it named (Unix seconds) and its -<n> suffix (0: none). Two
// different events never share an id, so an edit whose updated_at did not
// move takes the next n.
type IDCounter struct {
	At int64
	N  int
}

// next returns the counter of an edit event named by updated_at at.
func (c IDCounter) next(at int64) IDCounter {
	if c.At == at && c.At != 0 {
		return IDCounter{At: at, N: c.N + 1}
	}
	return IDCounter{At: at}
}

// suffix is the id's "-<at>[-<n>]" ending.
func (c IDCounter) suffix() string {
	s := "-" + strconv.FormatInt(c.At, 10)
	if c.N > 0 {
		s += "-" + strconv.Itoa(c.N)
	}
	return s
}

// LogBefore is what the store last saw of one seen log.
type LogBefore struct {
	ID        int64
	UpdatedAt string    // as the API sent it
	Comment   string    // cut to MaxValue
	Cut       bool      // Comment was cut
	Upd       IDCounter // the last task.log_updated id of this log
}

// Before is what the store last saw of a task beyond its seen log ids:
// the values of Fields (cut to MaxValue; numbers as their JSON text), the
// task's updated_at, its seen logs' updated_at and comments, and the
// counters of the edit events' ids. The zero Before (Known false) is a
// task seen by a version that kept none of it: Edits then records the
// values and reports nothing.
type Before struct {
	Known     bool
	Values    [NumFields]string
	Cut       [NumFields]bool
	UpdatedAt string
	Logs      []LogBefore // by ID
	Upd       IDCounter   // the last task.updated id
}

// log returns the seen log id's entry, or nil.
func (b *Before) log(id int64) *LogBefore {
	i, ok := slices.BinarySearchFunc(b.Logs, id, func(l LogBefore, id int64) int { return cmp.Compare(l.ID, id) })
	if !ok {
		return nil
	}
	return &b.Logs[i]
}

// cut returns s cut to MaxValue bytes on a UTF-8 boundary, and whether it
// was.
func cut(s string) (string, bool) {
	if len(s) <= MaxValue {
		return s, false
	}
	n := MaxValue
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n], true
}

// valuesOf returns t's Fields values, cut, numbers as decimal text.
func valuesOf(t *Task) (v [NumFields]string, c [NumFields]bool) {
	v[0], c[0] = cut(t.AssigneeUsername)
	v[1] = strconv.FormatInt(t.AuthID, 10)
	v[2] = strconv.FormatInt(t.CreationID, 10)
	v[3], c[3] = cut(t.Description)
	v[4], c[4] = cut(t.Name)
	v[5] = strconv.Itoa(t.Status)
	v[6] = strconv.Itoa(t.Type)
	v[7], c[7] = cut(t.UserName)
	v[8], c[8] = cut(t.UserPhone)
	return v, c
}

// jsonValue is field i's value s as JSON.
func jsonValue(i int, s string) json.RawMessage {
	if numeric(i) {
		if s == "" {
			return json.RawMessage("0")
		}
		return json.RawMessage(s)
	}
	b, _ := json.Marshal(s)
	return b
}

func jsonString(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

// Observe returns the Before of t as read now, keeping the counters and
// the entries of seen logs t no longer lists from prev (nil for a task
// not seen before). seen reports whether a log of t is seen once this
// read is stored: only seen logs are kept.
func Observe(t *Task, prev *Before, seen func(logID int64) bool) Before {
	b := Before{Known: true, UpdatedAt: t.UpdatedAt}
	b.Values, b.Cut = valuesOf(t)
	if prev != nil {
		b.Upd = prev.Upd
	}
	logs := make([]LogBefore, 0, len(t.Logs))
	for i := range t.Logs {
		l := &t.Logs[i]
		if !seen(l.ID) {
			continue
		}
		lb := LogBefore{ID: l.ID, UpdatedAt: l.UpdatedAt}
		lb.Comment, lb.Cut = cut(l.Comment)
		if prev != nil {
			if p := prev.log(l.ID); p != nil {
				lb.Upd = p.Upd
			}
		}
		logs = append(logs, lb)
	}
	if prev != nil {
		// Seen logs the API no longer lists keep their entry.
		listed := make([]int64, len(t.Logs))
		for i := range t.Logs {
			listed[i] = t.Logs[i].ID
		}
		slices.Sort(listed)
		for _, p := range prev.Logs {
			if _, ok := slices.BinarySearch(listed, p.ID); !ok {
				logs = append(logs, p)
			}
		}
	}
	slices.SortFunc(logs, func(a, b LogBefore) int { return cmp.Compare(a.ID, b.ID) })
	b.Logs = slices.CompactFunc(logs, func(a, b LogBefore) bool { return a.ID == b.ID })
	return b
}

// Edits returns the events of the changes of t since prev that left no
// log, and the Before to keep (prev's counters moved on by the events).
// seen reports whether a log of t is seen once this read is stored (the
// Before keeps those); newLog whether it is new in this read (its own
// event is emitted now, or it is marked seen quietly): a status change with a new type-3 log, or an
// assignment with a new type-2 log, is not repeated in task.updated. A
// prev that is not Known gives no events (nothing to compare with).
// Events come in this order: task.log_updated by log id, then
// task.updated. Times are read in loc; an updated_at that does not parse
// is an error.
func Edits(t *Task, prev *Before, seen, newLog func(logID int64) bool, loc *time.Location) ([]Event, Before, error) {
	now := Observe(t, prev, seen)
	if prev == nil || !prev.Known {
		return nil, now, nil
	}
	var (
		out      []Event
		taskJSON json.RawMessage
	)
	subject := strconv.FormatInt(t.ID, 10)
	taskNow := func() (json.RawMessage, error) {
		if taskJSON == nil {
			var err error
			if taskJSON, err = t.JSONWithoutLogs(); err != nil {
				return nil, fmt.Errorf("task %d: %w", t.ID, err)
			}
		}
		return taskJSON, nil
	}
	logs := t.Logs
	if !slices.IsSortedFunc(logs, cmpLog) {
		logs = slices.Clone(logs)
		slices.SortStableFunc(logs, cmpLog)
	}
	for i := range logs {
		l := &logs[i]
		if i > 0 && l.ID == logs[i-1].ID {
			continue
		}
		p := prev.log(l.ID)
		if p == nil || newLog(l.ID) {
			continue
		}
		comment, cutNow := cut(l.Comment)
		var changes []Change
		if comment != p.Comment || cutNow != p.Cut {
			changes = append(changes, Change{Field: "comment", From: jsonString(p.Comment), To: jsonString(comment), Truncated: cutNow || p.Cut})
		}
		if l.UpdatedAt != p.UpdatedAt {
			changes = append(changes, Change{Field: "updated_at", From: jsonString(p.UpdatedAt), To: jsonString(l.UpdatedAt)})
		}
		if len(changes) == 0 {
			continue
		}
		ts, err := ParseTime(l.UpdatedAt, loc)
		if err != nil {
			return nil, now, fmt.Errorf("task %d log %d: updated_at %q: %w", t.ID, l.ID, l.UpdatedAt, err)
		}
		task, err := taskNow()
		if err != nil {
			return nil, now, err
		}
		nb := now.log(l.ID)
		nb.Upd = p.Upd.next(ts.Unix())
		out = append(out, Event{
			SpecVersion: SpecVersion, ID: "logupd-" + strconv.FormatInt(l.ID, 10) + nb.Upd.suffix(), Source: Source,
			Type: TypeTaskLogUpdated, Subject: subject, Time: ts, DataContentType: DataContentType,
			Data: Data{TaskID: t.ID, Task: task, Log: l.JSON(), Edit: &Edit{Changes: changes}},
		})
	}
	explained := [NumFields]bool{}
	for i := range logs {
		if !newLog(logs[i].ID) {
			continue
		}
		switch logs[i].Type {
		case LogAssigned:
			explained[fieldAssignee] = true
		case LogStatusChanged:
			explained[fieldStatus] = true
		}
	}
	var changes []Change
	for i := range NumFields {
		if explained[i] || (now.Values[i] == prev.Values[i] && now.Cut[i] == prev.Cut[i]) {
			continue
		}
		changes = append(changes, Change{Field: Fields[i], From: jsonValue(i, prev.Values[i]), To: jsonValue(i, now.Values[i]),
			Truncated: now.Cut[i] || prev.Cut[i]})
	}
	if len(changes) > 0 {
		ts, err := ParseTime(t.UpdatedAt, loc)
		if err != nil {
			return nil, now, fmt.Errorf("task %d: updated_at %q: %w", t.ID, t.UpdatedAt, err)
		}
		task, err := taskNow()
		if err != nil {
			return nil, now, err
		}
		now.Upd = prev.Upd.next(ts.Unix())
		out = append(out, Event{
			SpecVersion: SpecVersion, ID: "upd-" + subject + now.Upd.suffix(), Source: Source,
			Type: TypeTaskUpdated, Subject: subject, Time: ts, DataContentType: DataContentType,
			Data: Data{TaskID: t.ID, Task: task, Edit: &Edit{Changes: changes}},
		})
	}
	return out, now, nil
}

// Deleted returns the task.deleted event of a task whose look-up by id
// confirmed it gone at confirmed: its data's task is the last values
// seen (id, Fields, updated_at).
func Deleted(taskID int64, last *Before, confirmed time.Time) Event {
	subject := strconv.FormatInt(taskID, 10)
	b := []byte(`{"id":`)
	b = strconv.AppendInt(b, taskID, 10)
	if last != nil && last.Known {
		for i := range NumFields {
			b = append(b, ',')
			b = append(b, jsonString(Fields[i])...)
			b = append(b, ':')
			b = append(b, jsonValue(i, last.Values[i])...)
		}
		b = append(b, `,"updated_at":`...)
		b = append(b, jsonString(last.UpdatedAt)...)
	}
	b = append(b, '}')
	return Event{
		SpecVersion: SpecVersion, ID: "del-" + subject, Source: Source, Type: TypeTaskDeleted, Subject: subject,
		Time: confirmed, DataContentType: DataContentType,
		Data: Data{TaskID: taskID, Task: b, Edit: &Edit{}},
	}
}

// IsEdit reports whether typ is the type of a change that leaves no log.
func IsEdit(typ string) bool {
	return typ == TypeTaskUpdated || typ == TypeTaskLogUpdated || typ == TypeTaskDeleted
}
