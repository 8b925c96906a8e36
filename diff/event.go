package diff

import (
	"encoding/json"
	"slices"
	"strconv"
	"time"
)

// Event types, one per upstream log type. TypeTaskLogged carries log types
// this version does not know; their raw log is kept in Data.Log. The
// changes that leave no log have theirs in edit.go.
const (
	TypeTaskCreated       = "task.created"
	TypeTaskAssigned      = "task.assigned"
	TypeTaskStatusChanged = "task.status_changed"
	TypeTaskCommented     = "task.commented"
	TypeTaskLogged        = "task.logged"
)

// Types lists every event type the relay emits but a rule's: the log
// types in log type order, then the changes that leave no log.
var Types = []string{TypeTaskCreated, TypeTaskAssigned, TypeTaskStatusChanged, TypeTaskCommented, TypeTaskLogged,
	TypeTaskUpdated, TypeTaskLogUpdated, TypeTaskDeleted}

// Envelope constants of every event.
const (
	SpecVersion     = "1.0"
	Source          = "incsapp/tasks"
	DataContentType = "application/json"
)

// Event is one CloudEvents 1.0 event: exactly one upstream log. Its ID is
// "log-<log id>" forever; Offset is assigned by the store when the event is
// committed and is kept when the event is replayed.
type Event struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Subject         string    `json:"subject"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	Offset          uint64    `json:"offset"`
	Data            Data      `json:"data"`

	// Body is the event's JSON encoding exactly as the store holds it: what
	// sinks send and sign. It is set on events read from the store.
	Body json.RawMessage `json:"-"`
	// StoredAt is when the store committed the event; set on events read
	// from the store.
	StoredAt time.Time `json:"-"`
}

type plainEvent Event

// UnmarshalJSON decodes an event. One of the changes that leave no log
// always gets its Data.Edit, also a task.deleted, whose JSON has no
// changes to make one: it encodes back the same and its Changes can be
// read.
func (e *Event) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, (*plainEvent)(e)); err != nil {
		return err
	}
	if IsEdit(e.Type) && e.Data.Edit == nil {
		e.Data.Edit = &Edit{}
	}
	return nil
}

// Data is the payload of an event.
type Data struct {
	TaskID int64 `json:"task_id"`
	// Task is the task as the API returned it, without its logs.
	Task json.RawMessage `json:"task"`
	// Log is the log as the API returned it.
	Log json.RawMessage `json:"log"`

	Status             int    `json:"status"`
	StatusName         string `json:"status_name"`
	PreviousStatus     int    `json:"previous_status"`
	PreviousStatusName string `json:"previous_status_name"`
	AssigneeUsername   string `json:"assignee_username"`
	// PreviousAssignee is the assignee before this log, where an earlier
	// assignment log of the task shows it.
	PreviousAssignee string `json:"previous_assignee_username,omitempty"`
	Comment          string `json:"comment"`

	// Derived is set on events a rule derived (types outside Types); their
	// data has no log: task_id, task, status, status_name and
	// assignee_username describe the task as last read, and Derived's
	// fields follow. See Data.MarshalJSON.
	*Derived
	// Edit is set on the events of changes that leave no log
	// (task.updated, task.log_updated, task.deleted): their data is
	// task_id, task, log (task.log_updated only) and changes.
	*Edit
}

// Derived is what a rule adds to the data of a derived event.
type Derived struct {
	Rule        string    `json:"rule"`          // the rule's name
	Since       string    `json:"since"`         // created, last_log, last_status_change or last_assignment
	AnchorLogID int64     `json:"anchor_log_id"` // the log whose created_at is the since moment
	AnchorAt    time.Time `json:"anchor_at"`     // that log's created_at
	DueAt       time.Time `json:"due_at"`        // when the step was due
	FiredAt     time.Time `json:"fired_at"`      // when the read that confirmed it was made
	Step        int       `json:"step"`          // 0 for the first firing, n for the n-th repeat
	// Resolved is set on the <event>_resolved event: the condition cleared
	// after Step was the last step fired.
	Resolved bool `json:"resolved,omitempty"`
}

type plainData Data

// derivedData is the JSON shape of a derived event's data.
type derivedData struct {
	TaskID           int64           `json:"task_id"`
	Task             json.RawMessage `json:"task"`
	Status           int             `json:"status"`
	StatusName       string          `json:"status_name"`
	AssigneeUsername string          `json:"assignee_username"`
	*Derived
}

// editData is the JSON shape of the data of a change that leaves no log.
type editData struct {
	TaskID  int64           `json:"task_id"`
	Task    json.RawMessage `json:"task"`
	Log     json.RawMessage `json:"log,omitempty"`
	Changes []Change        `json:"changes,omitempty"`
}

// MarshalJSON encodes d as the struct's fields for a log event, without
// the log, previous_* and comment members for a derived event, and as
// task_id, task, log and changes for a change that leaves no log.
func (d Data) MarshalJSON() ([]byte, error) {
	if d.Edit != nil {
		return json.Marshal(editData{TaskID: d.TaskID, Task: d.Task, Log: d.Log, Changes: d.Changes})
	}
	if d.Derived == nil {
		return json.Marshal((*plainData)(&d))
	}
	return json.Marshal(derivedData{TaskID: d.TaskID, Task: d.Task, Status: d.Status, StatusName: d.StatusName,
		AssigneeUsername: d.AssigneeUsername, Derived: d.Derived})
}

// IsDerived reports whether typ is none of Types: a rule's.
func IsDerived(typ string) bool { return !slices.Contains(Types, typ) }

// ResolvedType returns the type of the event that resolves a rule's event
// type: "task.stalled" becomes "task.stalled_resolved".
func ResolvedType(eventType string) string { return eventType + "_resolved" }

// RuleEventID returns the id of step of a rule's occurrence; step < 0
// returns the id of its resolving event.
func RuleEventID(rule string, taskID, anchorLogID int64, step int) string {
	b := make([]byte, 0, 48)
	b = append(b, "rule-"...)
	b = append(b, rule...)
	b = append(b, '-')
	b = strconv.AppendInt(b, taskID, 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, anchorLogID, 10)
	b = append(b, '-')
	if step < 0 {
		return string(append(b, "resolved"...))
	}
	return string(strconv.AppendInt(b, int64(step), 10))
}

// EventID returns the event id of the log with the given id.
func EventID(logID int64) string { return "log-" + strconv.FormatInt(logID, 10) }

// TypeOf returns the event type of an API log type.
func TypeOf(logType int) string {
	switch logType {
	case LogCreated:
		return TypeTaskCreated
	case LogAssigned:
		return TypeTaskAssigned
	case LogStatusChanged:
		return TypeTaskStatusChanged
	case LogCommented:
		return TypeTaskCommented
	}
	return TypeTaskLogged
}

// ShortType returns the short name of an event type used in NATS subjects:
// "task.status_changed" becomes "status_changed".
func ShortType(eventType string) string {
	if len(eventType) > 5 && eventType[:5] == "task." {
		return eventType[5:]
	}
	return eventType
}

// StatusName returns the contract name of a task status, or "unknown_<n>".
func StatusName(status int) string {
	switch status {
	case StatusNotStarted:
		return "not_started"
	case StatusInProgress:
		return "in_progress"
	case StatusCompleted:
		return "completed"
	case StatusTerminated:
		return "terminated"
	}
	return "unknown_" + strconv.Itoa(status)
}
