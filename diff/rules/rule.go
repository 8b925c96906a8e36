package rules

// A rule's definition and its validation: when it applies (status, type,
// assignee), what it counts from (Since), its deadline and repeats.

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/incs-relay/incs-relay/diff"
)

// Since moments: which log's created_at a rule counts from.
const (
	SinceCreated          = "created"            // the task's creation log
	SinceLastLog          = "last_log"           // its newest log
	SinceLastStatusChange = "last_status_change" // its newest status change, else its creation
	SinceLastAssignment   = "last_assignment"    // its newest assignment, else its creation
)

// sinceKinds lists the Since values in anchor index order.
var sinceKinds = []string{SinceCreated, SinceLastLog, SinceLastStatusChange, SinceLastAssignment}

// MaxRepeat is the largest Repeat.Max.
const MaxRepeat = 1000

var nameRe = regexp.MustCompile(`^[a-z0-9_]+$`)

// Assignee filters on a task's assignee_username. The zero value matches
// any task.
type Assignee struct {
	Present bool     // an assignee is set
	Absent  bool     // none is set
	Names   []string // one of these is the assignee
}

func (a *Assignee) matches(name string) bool {
	switch {
	case a.Present:
		return name != ""
	case a.Absent:
		return name == ""
	case len(a.Names) > 0:
		return slices.Contains(a.Names, name)
	}
	return true
}

// When is a rule's condition on the task as read. Empty lists match any.
type When struct {
	Status    []int
	TaskTypes []int
	Assignee  Assignee
}

// Matches reports whether t meets w.
func (w *When) Matches(t *diff.Task) bool {
	return (len(w.Status) == 0 || slices.Contains(w.Status, t.Status)) &&
		(len(w.TaskTypes) == 0 || slices.Contains(w.TaskTypes, t.Type)) &&
		w.Assignee.matches(t.AssigneeUsername)
}

// Repeat makes a rule fire again every Every (business time with a
// calendar) after its first firing, up to Max firings in all.
type Repeat struct {
	Every time.Duration
	Max   int
}

// Rule is one derived event type. Build rules with New, which validates
// them.
type Rule struct {
	Name     string        // [a-z0-9_]+, unique; part of every event id
	Event    string        // CloudEvents type: "task." + [a-z0-9_]+, no log event type
	When     When          // the condition
	Since    string        // one of the Since constants
	After    time.Duration // how long after the Since moment it fires
	Calendar *Calendar     // nil: count wall time; else only its business hours
	Repeat   Repeat        // zero: fire once
	Resolve  bool          // emit ResolvedType(Event) once a fired condition clears

	since int // index into sinceKinds
}

// FieldError is an invalid rule or calendar: Key is the offending field
// relative to the rule or calendar ("after", "hours.mon-fri[1]").
type FieldError struct {
	Key string
	Msg string
}

// Error returns "key: msg".
func (e *FieldError) Error() string { return e.Key + ": " + e.Msg }

func fieldErr(key, format string, args ...any) *FieldError {
	return &FieldError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Steps returns how many times an occurrence fires at most.
func (r *Rule) Steps() int {
	if r.Repeat.Max > 0 {
		return r.Repeat.Max
	}
	return 1
}

// ResolvedType returns the type of the event that resolves r's event.
func (r *Rule) ResolvedType() string { return diff.ResolvedType(r.Event) }

// Types returns the event types r emits.
func (r *Rule) Types() []string {
	if r.Resolve {
		return []string{r.Event, r.ResolvedType()}
	}
	return []string{r.Event}
}

// Validate checks r and prepares it for an Engine. Its error is a
// *FieldError.
func (r *Rule) Validate() error {
	if !nameRe.MatchString(r.Name) {
		return fieldErr("name", "must match [a-z0-9_]+, got %q", r.Name)
	}
	short, ok := strings.CutPrefix(r.Event, "task.")
	if !ok || !nameRe.MatchString(short) {
		return fieldErr("event", `must be "task." followed by [a-z0-9_]+, got %q`, r.Event)
	}
	for _, typ := range diff.Types {
		if r.Event == typ || diff.ResolvedType(r.Event) == typ {
			return fieldErr("event", "%q is a log event type; pick another name", r.Event)
		}
	}
	if r.Since == "" {
		last := len(sinceKinds) - 1
		return fieldErr("since", "required: %s or %s", strings.Join(sinceKinds[:last], ", "), sinceKinds[last])
	}
	r.since = slices.Index(sinceKinds, r.Since)
	if r.since < 0 {
		return fieldErr("since", "must be one of %s, got %q", strings.Join(sinceKinds, ", "), r.Since)
	}
	if r.After <= 0 {
		return fieldErr("after", "must be above 0")
	}
	for i, s := range r.When.Status {
		if s < diff.StatusNotStarted || s > diff.StatusTerminated {
			return fieldErr(fmt.Sprintf("when.status[%d]", i), "want 0 (not started) to 3 (terminated), got %d", s)
		}
	}
	if a := r.When.Assignee; a.Present && a.Absent || (a.Present || a.Absent) && len(a.Names) > 0 {
		return fieldErr("when.assignee", "is present, absent or a list of names")
	}
	if r.Repeat != (Repeat{}) || r.Repeat.Max != 0 {
		if r.Repeat.Every <= 0 {
			return fieldErr("repeat.every", "must be above 0")
		}
		if r.Repeat.Max < 1 || r.Repeat.Max > MaxRepeat {
			return fieldErr("repeat.max", "must be 1 to %d (it counts every firing, the first included), got %d", MaxRepeat, r.Repeat.Max)
		}
	}
	return nil
}

// CheckSet validates rules and checks their names and event types are
// unique across the set. The error's key is prefixed with "[i].".
func CheckSet(rs []*Rule) error {
	names := map[string]bool{}
	types := map[string]string{}
	for i, r := range rs {
		if err := r.Validate(); err != nil {
			fe := err.(*FieldError)
			return &FieldError{Key: fmt.Sprintf("[%d].%s", i, fe.Key), Msg: fe.Msg}
		}
		if names[r.Name] {
			return fieldErr(fmt.Sprintf("[%d].name", i), "duplicate rule name %q", r.Name)
		}
		names[r.Name] = true
		for _, typ := range r.Types() {
			if other, dup := types[typ]; dup {
				return fieldErr(fmt.Sprintf("[%d].event", i), "type %s is already emitted by rule %q", typ, other)
			}
			types[typ] = r.Name
		}
	}
	return nil
}

// due returns when step of the occurrence anchored at anchor is due.
func (r *Rule) due(anchor time.Time, step int) time.Time {
	d := r.After + time.Duration(step)*r.Repeat.Every
	if r.Calendar == nil {
		return anchor.Add(d)
	}
	return r.Calendar.Add(anchor, d)
}
