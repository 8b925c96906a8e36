package diff

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/incs-relay/incs-relay/diff/jsonscan"
)

// TimeLayout is the layout of every time the incsapp API sends or accepts,
// e.g. "2026-04-07 17:00:00", in the API's local zone.
const TimeLayout = "2006-01-02 15:04:05"

// Log types as the API numbers them.
const (
	LogCreated       = 1 // task created
	LogAssigned      = 2 // task assigned; AssigneeUsername is the new assignee
	LogStatusChanged = 3 // status changed from PreStatus to Status
	LogCommented     = 4 // comment added; Comment holds it
)

// Task statuses as the API numbers them.
const (
	StatusNotStarted = 0
	StatusInProgress = 1
	StatusCompleted  = 2
	StatusTerminated = 3
)

// Task is one task as GET /external/tasks returns it. Raw keeps the task's
// exact JSON object so that fields this version does not know are passed on
// to consumers untouched.
type Task struct {
	ID               int64  `json:"id"`
	CreationID       int64  `json:"creation_id"`
	AuthID           int64  `json:"auth_id"`
	Name             string `json:"name"`
	Description      string `json:"description"`
	Type             int    `json:"type"`
	UserName         string `json:"user_name"`
	UserPhone        string `json:"user_phone"`
	AssigneeUsername string `json:"assignee_username"`
	Status           int    `json:"status"`
	CreatedAt        string `json:"created_at"`
	UpdatedAt        string `json:"updated_at"`
	Logs             []Log  `json:"logs"`

	// Raw is the task's JSON object as received, logs included. It is set
	// by UnmarshalJSON and is empty for tasks built in code.
	Raw json.RawMessage `json:"-"`
}

// Log is one entry of a task's history. Raw keeps its exact JSON object.
type Log struct {
	ID               int64  `json:"id"`
	Type             int    `json:"type"`
	Status           int    `json:"status"`
	PreStatus        int    `json:"pre_status"`
	AssigneeUsername string `json:"assignee_username"`
	Comment          string `json:"comment"`
	CreatedAt        string `json:"created_at"`
	UpdatedAt        string `json:"updated_at"`

	// Raw is the log's JSON object as received, set when the log was decoded
	// as part of a Task; empty otherwise.
	Raw json.RawMessage `json:"-"`
}

type plainTask Task

// UnmarshalJSON decodes a task and keeps a copy of its raw bytes (see
// AttachRaw). Decoding many tasks is faster with a type without methods
// (e.g. a slice of a defined type over Task) followed by AttachRaw, since
// encoding/json then scans each task once instead of three times.
func (t *Task) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, (*plainTask)(t)); err != nil {
		return err
	}
	t.AttachRaw(append([]byte(nil), b...))
	return nil
}

// AttachRaw sets t.Raw to b, the JSON object t was decoded from, and each
// log's Raw to its span within b. b is kept, not copied: it must not change
// afterwards.
func (t *Task) AttachRaw(b []byte) {
	t.Raw = b
	if _, _, elems, ok := jsonscan.Member(b, "logs"); ok && len(elems) == len(t.Logs) {
		for i, e := range elems {
			t.Logs[i].Raw = b[e[0]:e[1]:e[1]]
		}
	}
}

// JSON returns the log as the API sent it (set when it was decoded as part
// of a Task), or its known fields re-encoded.
func (l *Log) JSON() json.RawMessage {
	if len(l.Raw) > 0 {
		return l.Raw
	}
	b, _ := json.Marshal(l) // Raw is not encoded
	return b
}

// JSONWithoutLogs returns the task's JSON object as the API sent it, minus
// its "logs" member, with unknown fields kept. For tasks built in code it
// re-encodes the known fields.
func (t *Task) JSONWithoutLogs() (json.RawMessage, error) {
	if len(t.Raw) == 0 {
		c := *t
		c.Logs = nil
		b, err := json.Marshal(struct {
			*plainTask
			Logs []Log `json:"logs,omitempty"`
		}{plainTask: (*plainTask)(&c)})
		return b, err
	}
	if start, end, _, ok := jsonscan.Member(t.Raw, "logs"); ok {
		out := make([]byte, 0, len(t.Raw)-(end-start))
		out = append(out, t.Raw[:start]...)
		out = append(out, t.Raw[end:]...)
		return out, nil
	}
	return stripMember(t.Raw, "logs")
}

// stripMember returns the JSON object obj without its top-level member key.
func stripMember(obj []byte, key string) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(obj))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("task: not a JSON object")
	}
	out := make([]byte, 0, len(obj))
	out = append(out, '{')
	first := true
	for dec.More() {
		start := dec.InputOffset()
		kt, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k, _ := kt.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		end := dec.InputOffset()
		if k == key {
			continue
		}
		member := bytes.TrimLeft(obj[start:end], " \t\r\n,")
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, member...)
	}
	out = append(out, '}')
	return out, nil
}

// ParseTime parses an API time such as "2026-04-08 17:22:06" in loc.
func ParseTime(s string, loc *time.Location) (time.Time, error) {
	return time.ParseInLocation(TimeLayout, s, loc)
}
