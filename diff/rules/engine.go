package rules

// The engine: per task and rule, the current occurrence, its due time
// and what fired; evaluating each read of a task, and the heap of due tasks.

import (
	"container/heap"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/incs-relay/incs-relay/diff"
)

// Engine tracks, per task and rule, the current occurrence (its anchor),
// when its next step is due and what has fired, and evaluates each read of
// a task against it. A task is tracked while one of its rules matches it
// or has fired for its current anchor.
//
// Reads are evaluated with Evaluate, which does not change the Engine; the
// caller persists the returned Batch (state records and events in one
// transaction) and then calls Commit. Evaluate/Commit pairs must not
// interleave. Due may be called concurrently with them. All methods are
// safe for concurrent use.
type Engine struct {
	rules []*Rule
	loc   *time.Location

	mu      sync.Mutex
	tasks   map[int64]*taskState
	due     dueHeap
	overdue map[int64]*taskState // popped by Due, not yet read since
	scratch taskState            // evalDecoded's working state
	seen    map[int64]bool       // Evaluate's working set
}

// taskState is what the Engine keeps of one tracked task.
type taskState struct {
	id       int64
	status   int
	assignee string
	updated  string       // updated_at as last read
	occ      []occurrence // one per rule, in rule order
	next     int64        // unix nanoseconds of the earliest due step; 0 none
	idx      int          // index in the heap; -1 when not in it
}

// occurrence is one rule's state for one task.
type occurrence struct {
	AnchorID int64 `json:"anchor_log_id"`
	AnchorAt int64 `json:"anchor_at"`          // unix seconds
	Match    bool  `json:"match,omitempty"`    // the task matched When when last read
	Fired    int   `json:"fired,omitempty"`    // steps fired for this anchor
	LastDue  int64 `json:"last_due,omitempty"` // unix nanoseconds of the last fired step's due time
	NextDue  int64 `json:"next_due,omitempty"` // unix nanoseconds the step Fired is due; 0 not computed yet
	Cleared  bool  `json:"cleared,omitempty"`  // fired, then stopped matching: done for this anchor
}

// record is the stored form of a taskState.
type record struct {
	Status   int                   `json:"status"`
	Assignee string                `json:"assignee,omitempty"`
	Updated  string                `json:"updated_at,omitempty"`
	Rules    map[string]occurrence `json:"rules"`
}

// NewEngine returns an Engine for rules, which must have passed CheckSet.
// API times (log created_at) are read in loc.
func NewEngine(rules []*Rule, loc *time.Location) *Engine {
	return &Engine{rules: rules, loc: loc, tasks: make(map[int64]*taskState), overdue: make(map[int64]*taskState)}
}

// Rules returns the engine's rules.
func (e *Engine) Rules() []*Rule { return e.rules }

// Load adds a task's stored state record, as a Change carried it. It is
// for startup, before any Evaluate; rules the record names that are no
// longer configured are dropped.
func (e *Engine) Load(taskID int64, rec []byte) error {
	var r record
	if err := json.Unmarshal(rec, &r); err != nil {
		return fmt.Errorf("rules: state of task %d: %w", taskID, err)
	}
	st := &taskState{id: taskID, status: r.Status, assignee: r.Assignee, updated: r.Updated, occ: make([]occurrence, len(e.rules)), idx: -1}
	for i, rule := range e.rules {
		st.occ[i] = r.Rules[rule.Name]
	}
	st.next = e.nextDue(st)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.install(st)
	return nil
}

// Len returns the number of tracked tasks.
func (e *Engine) Len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.tasks)
}

// Overdue returns the number of tasks due but not read since.
func (e *Engine) Overdue() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.overdue)
}

// Due returns, in increasing order, the tasks with a step due at or before
// now that have not been read since it came due: a read made now or later
// confirms or clears them. A task stays in the list until a read is
// evaluated and committed.
func (e *Engine) Due(now time.Time) []int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := now.UnixNano()
	for len(e.due) > 0 && e.due[0].next <= n {
		st := heap.Pop(&e.due).(*taskState)
		e.overdue[st.id] = st
	}
	out := make([]int64, 0, len(e.overdue))
	for id := range e.overdue {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// NextDue returns the earliest due time of a step not yet overdue, or the
// zero time.
func (e *Engine) NextDue() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.due) == 0 {
		return time.Time{}
	}
	return time.Unix(0, e.due[0].next).In(e.loc)
}

// Change is what one read did to one task: its new state record (nil: no
// longer tracked, delete it), the task as read (nil when the read did not
// decode it: keep the stored one) and the events to append, in order.
// Events whose Data.Task is empty carry the stored task.
type Change struct {
	TaskID int64
	Record []byte
	Task   json.RawMessage
	Events []diff.Event

	state *taskState // nil when untracked
}

// Batch is the outcome of one Evaluate.
type Batch struct {
	Changes []Change
}

// Events returns the number of events in b.
func (b *Batch) Events() int {
	n := 0
	for i := range b.Changes {
		n += len(b.Changes[i].Events)
	}
	return n
}

// Evaluate evaluates one page of reads made at at (the time the request
// was sent, or earlier): tasks were decoded; unchanged lists tasks the
// read showed unchanged since their last decoded read, so their state
// stands. A step fires only when at is at or after its due time; a fired
// occurrence whose condition cleared resolves. Tasks whose state did not
// change produce no Change. Evaluate does not change the Engine.
func (e *Engine) Evaluate(tasks []diff.Task, unchanged []int64, at time.Time) *Batch {
	b := &Batch{}
	e.mu.Lock()
	defer e.mu.Unlock()
	atN := at.UnixNano()
	var seen map[int64]bool // a page may list a task twice: the last listing counts
	if len(tasks) > 1 || len(tasks) > 0 && len(unchanged) > 0 {
		if e.seen == nil {
			e.seen = make(map[int64]bool, len(tasks))
		}
		clear(e.seen)
		seen = e.seen
	}
	for i := len(tasks) - 1; i >= 0; i-- {
		t := &tasks[i]
		if seen != nil {
			if seen[t.ID] {
				continue
			}
			seen[t.ID] = true
		}
		old := e.tasks[t.ID]
		if c, ok := e.evalDecoded(t, old, at); ok {
			b.Changes = append(b.Changes, c)
		}
	}
	for _, id := range unchanged {
		old := e.tasks[id]
		if old == nil || seen[id] || old.next == 0 || old.next > atN {
			continue
		}
		if c, ok := e.evalUnchanged(old, at); ok {
			b.Changes = append(b.Changes, c)
		}
	}
	return b
}

// Commit installs b's states; call it once b was persisted.
func (e *Engine) Commit(b *Batch) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range b.Changes {
		c := &b.Changes[i]
		if old := e.tasks[c.TaskID]; old != nil {
			e.remove(old)
		}
		if c.state != nil {
			e.install(c.state)
		}
	}
}

// install tracks st; call with e.mu held.
func (e *Engine) install(st *taskState) {
	e.tasks[st.id] = st
	if st.next != 0 {
		heap.Push(&e.due, st)
	}
}

// remove stops tracking st; call with e.mu held.
func (e *Engine) remove(st *taskState) {
	delete(e.tasks, st.id)
	delete(e.overdue, st.id)
	if st.idx >= 0 {
		heap.Remove(&e.due, st.idx)
	}
}

// anchors holds a task's anchor log per since kind.
type anchors [4]*diff.Log

// findAnchors returns t's anchor log per since kind, in one pass over its
// logs; nil entries when t has no logs.
func findAnchors(t *diff.Task) (a anchors) {
	var first, last, status, assign *diff.Log
	for i := range t.Logs {
		l := &t.Logs[i]
		if first == nil || l.ID < first.ID {
			first = l
		}
		if l.Type == diff.LogCreated && (a[0] == nil || l.ID < a[0].ID) {
			a[0] = l
		}
		if last == nil || l.ID > last.ID {
			last = l
		}
		if l.Type == diff.LogStatusChanged && (status == nil || l.ID > status.ID) {
			status = l
		}
		if l.Type == diff.LogAssigned && (assign == nil || l.ID > assign.ID) {
			assign = l
		}
	}
	if a[0] == nil {
		a[0] = first // no creation log: the oldest stands in
	}
	a[1] = last
	a[2], a[3] = a[0], a[0]
	if status != nil {
		a[2] = status
	}
	if assign != nil {
		a[3] = assign
	}
	return a
}

// evalDecoded evaluates a decoded read of t against its old state.
func (e *Engine) evalDecoded(t *diff.Task, old *taskState, at time.Time) (Change, bool) {
	e.scratch.occ = append(e.scratch.occ[:0], make([]occurrence, len(e.rules))...)
	e.scratch = taskState{id: t.ID, status: t.Status, assignee: t.AssigneeUsername, updated: t.UpdatedAt, occ: e.scratch.occ, idx: -1}
	st := &e.scratch
	anch := findAnchors(t)
	var evs []diff.Event
	tracked, changed := false, old == nil
	if old != nil {
		changed = old.status != t.Status || old.assignee != t.AssigneeUsername || old.updated != t.UpdatedAt
	}
	var taskJSON json.RawMessage
	for i, r := range e.rules {
		var prev occurrence
		if old != nil {
			prev = old.occ[i]
		}
		cur := prev
		a := anch[r.since]
		if a == nil {
			// No logs: nothing to count from. A fired occurrence resolves.
			cur = occurrence{}
		} else if a.ID != prev.AnchorID {
			ts, err := diff.ParseTime(a.CreatedAt, e.loc)
			if err != nil {
				cur = occurrence{} // logs that do not parse are left unseen by the store too
			} else {
				cur = occurrence{AnchorID: a.ID, AnchorAt: ts.Unix()}
			}
		}
		if cur.AnchorID != prev.AnchorID && prev.Fired > 0 && !prev.Cleared && r.Resolve {
			evs = append(evs, e.resolved(r, t.ID, &prev, st, at))
		}
		cur.Match = cur.AnchorID != 0 && r.When.Matches(t)
		if !cur.Match && cur.Fired > 0 && !cur.Cleared {
			if r.Resolve {
				evs = append(evs, e.resolved(r, t.ID, &cur, st, at))
			}
			cur.Cleared = true
		}
		evs = e.fire(r, t.ID, &cur, st, at, evs)
		st.occ[i] = cur
		if cur != prev {
			changed = true
		}
		if cur.Match || cur.Fired > 0 {
			tracked = true
		}
	}
	if !tracked {
		if old == nil && len(evs) == 0 {
			return Change{}, false
		}
		if len(evs) > 0 {
			taskJSON = e.fillTask(t, evs)
		}
		return Change{TaskID: t.ID, Task: taskJSON, Events: evs}, true
	}
	if !changed && len(evs) == 0 {
		return Change{}, false // the same version as last read
	}
	st = &taskState{id: st.id, status: st.status, assignee: st.assignee, updated: st.updated, occ: slices.Clone(st.occ), idx: -1}
	st.next = e.nextDue(st)
	taskJSON = e.fillTask(t, evs)
	return Change{TaskID: t.ID, Record: st.encode(e.rules), Task: taskJSON, Events: evs, state: st}, true
}

// fillTask sets the task JSON of evs and returns it.
func (e *Engine) fillTask(t *diff.Task, evs []diff.Event) json.RawMessage {
	j, err := t.JSONWithoutLogs()
	if err != nil {
		return nil // the store keeps the task it has; events carry it
	}
	for i := range evs {
		evs[i].Data.Task = j
	}
	return j
}

// evalUnchanged fires what is due of a task a read showed unchanged.
func (e *Engine) evalUnchanged(old *taskState, at time.Time) (Change, bool) {
	st := &taskState{id: old.id, status: old.status, assignee: old.assignee, updated: old.updated, occ: slices.Clone(old.occ), idx: -1}
	var evs []diff.Event
	for i, r := range e.rules {
		evs = e.fire(r, old.id, &st.occ[i], st, at, evs)
	}
	st.next = e.nextDue(st)
	if len(evs) == 0 && st.next == old.next {
		return Change{}, false
	}
	return Change{TaskID: old.id, Record: st.encode(e.rules), Events: evs, state: st}, true
}

// fire appends the events of o's steps due at or before at.
func (e *Engine) fire(r *Rule, taskID int64, o *occurrence, st *taskState, at time.Time, evs []diff.Event) []diff.Event {
	if !o.Match || o.Cleared || o.AnchorID == 0 {
		return evs
	}
	for o.Fired < r.Steps() {
		due := o.due(r)
		if due.After(at) {
			break
		}
		evs = append(evs, e.event(r, r.Event, taskID, o, o.Fired, due, st, at))
		o.Fired++
		o.LastDue, o.NextDue = due.UnixNano(), 0
	}
	if o.Fired < r.Steps() {
		o.due(r)
	}
	return evs
}

// nextDue returns the earliest due time of st's unfired steps.
func (e *Engine) nextDue(st *taskState) int64 {
	var next int64
	for i, r := range e.rules {
		o := &st.occ[i]
		if !o.Match || o.Cleared || o.AnchorID == 0 || o.Fired >= r.Steps() {
			continue
		}
		d := o.due(r).UnixNano()
		if next == 0 || d < next {
			next = d
		}
	}
	return next
}

// due returns when step o.Fired is due, computing it once.
func (o *occurrence) due(r *Rule) time.Time {
	if o.NextDue == 0 {
		o.NextDue = r.due(time.Unix(o.AnchorAt, 0), o.Fired).UnixNano()
	}
	return time.Unix(0, o.NextDue)
}

// resolved builds the resolving event of the occurrence o.
func (e *Engine) resolved(r *Rule, taskID int64, o *occurrence, st *taskState, at time.Time) diff.Event {
	ev := e.event(r, r.ResolvedType(), taskID, o, o.Fired-1, time.Unix(0, o.LastDue), st, at)
	ev.ID = diff.RuleEventID(r.Name, taskID, o.AnchorID, -1)
	ev.Time = at.In(e.loc)
	ev.Data.Resolved = true
	return ev
}

// event builds step's event; Data.Task is filled by the caller or the
// store.
func (e *Engine) event(r *Rule, typ string, taskID int64, o *occurrence, step int, due time.Time, st *taskState, at time.Time) diff.Event {
	return diff.Event{
		SpecVersion:     diff.SpecVersion,
		ID:              diff.RuleEventID(r.Name, taskID, o.AnchorID, step),
		Source:          diff.Source,
		Type:            typ,
		Subject:         strconv.FormatInt(taskID, 10),
		Time:            due.In(e.loc),
		DataContentType: diff.DataContentType,
		Data: diff.Data{
			TaskID:           taskID,
			Status:           st.status,
			StatusName:       diff.StatusName(st.status),
			AssigneeUsername: st.assignee,
			Derived: &diff.Derived{
				Rule:        r.Name,
				Since:       r.Since,
				AnchorLogID: o.AnchorID,
				AnchorAt:    time.Unix(o.AnchorAt, 0).In(e.loc),
				DueAt:       due.In(e.loc),
				FiredAt:     at.In(e.loc),
				Step:        step,
			},
		},
	}
}

// encode returns st's stored record (see Engine.Load).
func (st *taskState) encode(rules []*Rule) []byte {
	r := record{Status: st.status, Assignee: st.assignee, Updated: st.updated, Rules: make(map[string]occurrence, len(rules))}
	for i, rule := range rules {
		if st.occ[i] != (occurrence{}) {
			r.Rules[rule.Name] = st.occ[i]
		}
	}
	b, _ := json.Marshal(r) // plain types: cannot fail
	return b
}

// dueHeap orders tracked tasks by their next due step.
type dueHeap []*taskState

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].next < h[j].next }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *dueHeap) Push(x any) {
	st := x.(*taskState)
	st.idx = len(*h)
	*h = append(*h, st)
}
func (h *dueHeap) Pop() any {
	old := *h
	st := old[len(old)-1]
	old[len(old)-1] = nil
	st.idx = -1
	*h = old[:len(old)-1]
	return st
}
