package diff

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// Seen reports whether a log was already turned into an event. The store
// implements it; a nil Seen treats every log as new.
type Seen interface {
	Seen(taskID, logID int64) bool
}

// SeenFunc adapts a function to Seen.
type SeenFunc func(taskID, logID int64) bool

// Seen calls f.
func (f SeenFunc) Seen(taskID, logID int64) bool { return f(taskID, logID) }

// Diff returns one event for every log of t that seen does not report as
// seen, in log id order. Times are read in loc. Offsets are left zero: the
// store assigns them. A log whose created_at does not parse is an error, so
// the caller keeps it unseen rather than emitting a wrong time.
func Diff(t *Task, seen Seen, loc *time.Location) ([]Event, error) {
	logs := t.Logs
	if !slices.IsSortedFunc(logs, cmpLog) {
		logs = slices.Clone(logs)
		slices.SortStableFunc(logs, cmpLog)
	}
	var (
		out      []Event
		taskJSON []byte
		assignee string // assignee before the log being looked at
	)
	subject := strconv.FormatInt(t.ID, 10)
	for i := range logs {
		l := &logs[i]
		prevAssignee := assignee
		if l.Type == LogAssigned {
			assignee = l.AssigneeUsername
		}
		if i > 0 && l.ID == logs[i-1].ID {
			continue // the API repeated a log; one log is one event
		}
		if seen != nil && seen.Seen(t.ID, l.ID) {
			continue
		}
		ts, err := ParseTime(l.CreatedAt, loc)
		if err != nil {
			return nil, fmt.Errorf("task %d log %d: created_at %q: %w", t.ID, l.ID, l.CreatedAt, err)
		}
		if taskJSON == nil {
			if taskJSON, err = t.JSONWithoutLogs(); err != nil {
				return nil, fmt.Errorf("task %d: %w", t.ID, err)
			}
		}
		ev := Event{
			SpecVersion:     SpecVersion,
			ID:              EventID(l.ID),
			Source:          Source,
			Type:            TypeOf(l.Type),
			Subject:         subject,
			Time:            ts,
			DataContentType: DataContentType,
			Data: Data{
				TaskID:             t.ID,
				Task:               taskJSON,
				Log:                l.JSON(),
				Status:             l.Status,
				StatusName:         StatusName(l.Status),
				PreviousStatus:     l.PreStatus,
				PreviousStatusName: StatusName(l.PreStatus),
				AssigneeUsername:   l.AssigneeUsername,
				Comment:            l.Comment,
			},
		}
		if l.Type == LogAssigned {
			ev.Data.PreviousAssignee = prevAssignee
		}
		if out == nil {
			out = make([]Event, 0, len(logs)-i) // at most the logs left: one allocation
		}
		out = append(out, ev)
	}
	return out, nil
}

func cmpLog(a, b Log) int { return cmp.Compare(a.ID, b.ID) }
