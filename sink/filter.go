package sink

// Filter, the test a Dispatcher applies to each event before its sink
// sees it, and FilterConfig, the config it is built from.

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/incs-relay/incs-relay/diff"
)

// Filter decides whether a sink wants an event. Events a sink does not want
// count as delivered to it. A nil Filter accepts everything.
type Filter func(ev *diff.Event) bool

// FilterConfig selects the events a sink receives, for every sink type.
// Each list that is set must match; an empty list matches any event.
type FilterConfig struct {
	// Events lists event types, e.g. "task.status_changed".
	Events []string
	// Statuses lists task statuses (0-3): the event's status, for
	// task.status_changed the new one; for the changes that leave no log
	// (task.updated, task.log_updated, task.deleted), whose data has no
	// status, the task's (for task.deleted the last seen; none when the
	// relay kept none, which matches no status).
	Statuses []int
	// Assignees lists usernames: the log's assignee or, when the log
	// names none, the task's.
	Assignees []string
	// TaskTypes lists values of the task's "type"; a task without one
	// matches none.
	TaskTypes []int
}

// Validate reports the first status that is not a task status.
func (c FilterConfig) Validate() error {
	for _, s := range c.Statuses {
		if s < diff.StatusNotStarted || s > diff.StatusTerminated {
			return fmt.Errorf("statuses: %d is not a task status (0-3)", s)
		}
	}
	return nil
}

// Filter returns the filter c describes, or nil when no list is set. The
// returned Filter is safe for concurrent use; c's slices are copied.
func (c FilterConfig) Filter() Filter {
	if len(c.Events) == 0 && len(c.Statuses) == 0 && len(c.Assignees) == 0 && len(c.TaskTypes) == 0 {
		return nil
	}
	events := make(map[string]bool, len(c.Events))
	for _, t := range c.Events {
		events[t] = true
	}
	statuses, assignees, types := slices.Clone(c.Statuses), slices.Clone(c.Assignees), slices.Clone(c.TaskTypes)
	return func(ev *diff.Event) bool {
		if len(events) > 0 && !events[ev.Type] {
			return false
		}
		edit := diff.IsEdit(ev.Type) // its status is the task's
		if len(statuses) > 0 && !edit && !slices.Contains(statuses, ev.Data.Status) {
			return false
		}
		if len(assignees) == 0 && len(types) == 0 && (!edit || len(statuses) == 0) {
			return true
		}
		var t struct {
			Type     *int   `json:"type"`
			Assignee string `json:"assignee_username"`
			Status   *int   `json:"status"`
		}
		_ = json.Unmarshal(ev.Data.Task, &t) // a task that does not decode matches no type
		if edit && len(statuses) > 0 && (t.Status == nil || !slices.Contains(statuses, *t.Status)) {
			return false
		}
		if len(assignees) > 0 {
			a := ev.Data.AssigneeUsername
			if a == "" {
				a = t.Assignee
			}
			if !slices.Contains(assignees, a) {
				return false
			}
		}
		if len(types) > 0 && (t.Type == nil || !slices.Contains(types, *t.Type)) {
			return false
		}
		return true
	}
}
