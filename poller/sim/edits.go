package sim

// Changes that leave no log: a task's own field edited, a comment log
// edited, a task deleted; the calls that make one (SetField, EditComment,
// Delete), the random ones of Step (Options.CommentEdits, FieldEdits,
// Deletions), MaxTasks, and their record (Edits), the ground truth of
// task.updated, task.log_updated and task.deleted.

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/incs-relay/incs-relay/diff"
)

// EditKind is the kind of a change that leaves no log.
type EditKind int

// Edit kinds.
const (
	TaskEdited    EditKind = iota + 1 // one of the task's own fields changed
	CommentEdited                     // a comment log's comment changed
	TaskDeleted                       // the task is gone
)

var editKindNames = map[EditKind]string{TaskEdited: "task-edited", CommentEdited: "comment-edited", TaskDeleted: "task-deleted"}

// String returns the kind's name, e.g. "comment-edited".
func (k EditKind) String() string {
	if n, ok := editKindNames[k]; ok {
		return n
	}
	return "edit-" + strconv.Itoa(int(k))
}

// Edit records one change that left no log.
type Edit struct {
	Kind   EditKind
	TaskID int64
	// LogID is the edited log (CommentEdited).
	LogID int64
	// Field is the field changed: one of diff.Fields (TaskEdited) or
	// "comment" (CommentEdited); empty for TaskDeleted.
	Field string
	// From and To are the field's values before and after, numbers as
	// decimal text. An edit is recorded only when they differ.
	From, To string
	// At is when, as an API time: the edited task's or log's updated_at
	// after the edit; for TaskDeleted, the time of the deletion.
	At string
	// UpdatedFrom is the edited task's or log's updated_at before the
	// edit; for TaskDeleted, the task's last updated_at.
	UpdatedFrom string
	// TaskUpdatedAt is the task's updated_at after the edit.
	TaskUpdatedAt string
	// TaskTouched is whether the edit touched the task (always for
	// TaskEdited; for CommentEdited, see Options.CommentEditTouch). The
	// task's updated_at moves unless it already names that second.
	TaskTouched bool
	// Task is, for TaskDeleted, the task as last served, logs included.
	Task json.RawMessage
}

// Edits returns a copy of every change that left no log, in the order made
// (with HistoryLimit, of the newest ones).
func (s *Sim) Edits() []Edit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.edits)
}

// EditCount returns how many changes that left no log the simulator made.
func (s *Sim) EditCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.editsBase + len(s.edits)
}

// EditsFrom returns a copy of the edits made after the first i:
// EditsFrom(EditCount()) taken before a change returns its edits.
func (s *Sim) EditsFrom(i int) []Edit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return from(s.edits, i-s.editsBase)
}

// SetField sets one of the task's own fields (named as in diff.Fields;
// numbers as decimal text) now, without a log, moving its updated_at. It
// reports whether the task exists and the field and value are valid.
// Setting status keeps the indexes; it is what an administrator's fix
// looks like, not a status change with its log (see SetStatus).
func (s *Sim) SetField(id int64, field, value string) bool {
	i := slices.Index(diff.Fields[:], field)
	if i < 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.task(id)
	if t == nil {
		return false
	}
	return s.setField(t, i, value, s.now().Unix())
}

// EditComment gives the comment log logID of the task taskID a new
// comment now, without a new log: the log's updated_at moves to now, and
// the task's updated_at too when touchTask. It reports whether the task
// has that log and it is a comment (type 4).
func (s *Sim) EditComment(taskID, logID int64, comment string, touchTask bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.task(taskID)
	if t == nil {
		return false
	}
	i := slices.IndexFunc(t.w.Logs, func(l wireLog) bool { return l.ID == logID })
	if i < 0 || t.w.Logs[i].Type != diff.LogCommented {
		return false
	}
	s.editComment(t, i, comment, touchTask, s.now().Unix())
	return true
}

// Delete removes the task with the given id now: no list shows it and a
// task_id look-up finds nothing. Its logs stay in Logs. It reports whether
// the task existed.
func (s *Sim) Delete(id int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.taskIndex(id)
	if !ok {
		return false
	}
	s.delete(i, s.now().Unix())
	return true
}

// rates are Step's rates of changes that leave no log, cumulative.
type rates struct{ comment, field, deletion float64 }

// normEdits returns o's edit rates, cumulative and scaled to sum to at most
// 1, and the indexes of its EditFields.
func normEdits(o Options) (rates, []int) {
	c, f, d := max(o.CommentEdits, 0), max(o.FieldEdits, 0), max(o.Deletions, 0)
	if sum := c + f + d; sum > 1 {
		c, f, d = c/sum, f/sum, d/sum
	}
	var fields []int
	for i, name := range diff.Fields {
		if len(o.EditFields) == 0 || slices.Contains(o.EditFields, name) {
			fields = append(fields, i)
		}
	}
	if len(fields) == 0 {
		f = 0 // only unknown names: no field edits
	}
	return rates{comment: c, field: c + f, deletion: c + f + d}, fields
}

// edit applies one random change that leaves no log at unix time now, with
// the probability of the rates, and reports whether it did. It draws
// nothing when every rate is 0, so the world stays as without them.
func (s *Sim) edit(now int64) bool {
	if s.rates.deletion <= 0 || len(s.tasks) == 0 {
		return false
	}
	r := s.rng
	x := r.Float64()
	switch {
	case x < s.rates.comment:
		for range 8 { // a task with a comment; most have none
			t := pick(r, s.tasks)
			if len(s.open) > 0 && r.IntN(2) == 0 {
				t = pick(r, s.open) // edits of live tasks are likelier
			}
			var idx []int
			for i, l := range t.w.Logs {
				if l.Type == diff.LogCommented {
					idx = append(idx, i)
				}
			}
			if len(idx) == 0 {
				continue
			}
			i := pick(r, idx)
			touch := s.o.CommentEditTouch == TouchTask || s.o.CommentEditTouch == TouchEither && r.IntN(2) == 0
			s.editComment(t, i, s.otherValue(comments, t.w.Logs[i].Comment), touch, now)
			return true
		}
	case x < s.rates.field:
		t := pick(r, s.tasks)
		i := pick(r, s.editFields)
		return s.setField(t, i, s.randomValue(t, i), now)
	case x < s.rates.deletion:
		s.delete(r.IntN(len(s.tasks)), now)
		return true
	}
	return false
}

// otherValue picks a value of xs other than cur, or cur marked edited.
func (s *Sim) otherValue(xs []string, cur string) string {
	for range 4 {
		if v := pick(s.rng, xs); v != cur {
			return v
		}
	}
	return cur + "（已修改）"
}

// field returns t's field i as decimal text for numbers.
func field(t *task, i int) string {
	w := &t.w
	switch diff.Fields[i] {
	case "assignee_username":
		return w.AssigneeUsername
	case "auth_id":
		return strconv.FormatInt(w.AuthID, 10)
	case "creation_id":
		return strconv.FormatInt(w.CreationID, 10)
	case "description":
		return w.Description
	case "name":
		return w.Name
	case "status":
		return strconv.Itoa(w.Status)
	case "type":
		return strconv.Itoa(w.Type)
	case "user_name":
		return w.UserName
	case "user_phone":
		return w.UserPhone
	}
	panic("sim: unknown field " + diff.Fields[i])
}

// randomValue returns a plausible new value of t's field i, different
// from its value unless the field has one value only.
func (s *Sim) randomValue(t *task, i int) string {
	r := s.rng
	cur := field(t, i)
	switch diff.Fields[i] {
	case "assignee_username":
		return s.otherAssignee(t.w.AssigneeUsername)
	case "auth_id":
		v := 30000 + r.Int64N(100)
		if v == t.w.AuthID {
			v = 30000 + (v-30000+1)%100
		}
		return strconv.FormatInt(v, 10)
	case "creation_id": // moved to another batch
		n := max(s.creationID, 2)
		v := 1 + r.Int64N(n)
		if v == t.w.CreationID {
			v = v%n + 1
		}
		return strconv.FormatInt(v, 10)
	case "description":
		return s.otherValue(descs, cur) + "（已修改）"
	case "name":
		names := make([]string, len(taskNames))
		for j, n := range taskNames {
			names[j] = fmt.Sprintf("%s #%d", n, t.w.ID)
		}
		return s.otherValue(names, cur)
	case "status":
		return strconv.Itoa((t.w.Status + 1 + r.IntN(3)) % 4)
	case "type":
		return strconv.Itoa(1 + (t.w.Type+r.IntN(4))%5)
	case "user_name":
		return s.otherValue(userNames, cur)
	case "user_phone": // corrected: the same kind of number, other digits
		if len(cur) > 4 {
			return cur[:len(cur)-4] + fmt.Sprintf("%04d", (r.IntN(9999)+1+atoi(cur[len(cur)-4:]))%10000)
		}
		return fmt.Sprintf("138%08d", r.IntN(100000000))
	}
	return cur
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// setField sets t's field i to v at unix time now, touches t and records
// the edit if the value changed. It reports whether v is valid.
func (s *Sim) setField(t *task, i int, v string, now int64) bool {
	w := &t.w
	var n int64
	if slices.Contains([]string{"auth_id", "creation_id", "status", "type"}, diff.Fields[i]) {
		var err error
		if n, err = strconv.ParseInt(v, 10, 32); err != nil {
			return false
		}
		v = strconv.FormatInt(n, 10)
	}
	prev, was := field(t, i), w.UpdatedAt
	switch diff.Fields[i] {
	case "assignee_username":
		w.AssigneeUsername = v
	case "auth_id":
		w.AuthID = n
	case "creation_id":
		w.CreationID = n
	case "description":
		w.Description = v
	case "name":
		w.Name = v
	case "status":
		if n < diff.StatusNotStarted || n > diff.StatusTerminated {
			return false
		}
		s.setStatus(t, int(n))
	case "type":
		w.Type = int(n)
	case "user_name":
		w.UserName = v
	case "user_phone":
		w.UserPhone = v
	}
	s.touch(t, max(now, t.updated))
	if prev != v {
		s.record(Edit{Kind: TaskEdited, TaskID: w.ID, Field: diff.Fields[i], From: prev, To: v,
			At: w.UpdatedAt, UpdatedFrom: was, TaskUpdatedAt: w.UpdatedAt, TaskTouched: true})
	}
	return true
}

// editComment sets the comment of t's log i at unix time now.
func (s *Sim) editComment(t *task, i int, comment string, touchTask bool, now int64) {
	l := &t.w.Logs[i]
	prev, was := l.Comment, l.UpdatedAt
	at := now
	if c, err := diff.ParseTime(l.CreatedAt, s.loc); err == nil {
		at = max(at, c.Unix()) // never before the log was made
	}
	l.Comment, l.UpdatedAt = comment, s.format(at)
	if touchTask {
		s.touch(t, max(at, t.updated))
	} else {
		t.json = nil
		s.version++
	}
	if prev != comment || was != l.UpdatedAt {
		s.record(Edit{Kind: CommentEdited, TaskID: t.w.ID, LogID: l.ID, Field: "comment", From: prev, To: comment,
			At: l.UpdatedAt, UpdatedFrom: was, TaskUpdatedAt: t.w.UpdatedAt, TaskTouched: touchTask})
	}
}

// delete removes s.tasks[i] at unix time now.
func (s *Sim) delete(i int, now int64) {
	t := s.tasks[i]
	e := Edit{Kind: TaskDeleted, TaskID: t.w.ID, At: s.format(now), UpdatedFrom: t.w.UpdatedAt,
		TaskUpdatedAt: t.w.UpdatedAt, Task: s.encode(t)}
	s.setOpen(t, false)
	st := t.w.Status
	if j, ok := slices.BinarySearchFunc(s.byStatus[st], t.w.ID, byID); ok && s.indexed {
		s.byStatus[st] = slices.Delete(s.byStatus[st], j, j+1)
	}
	s.tasks = slices.Delete(s.tasks, i, i+1)
	s.version++
	s.record(e)
}

// age deletes the oldest finished tasks, then the oldest tasks, while the
// world holds more than MaxTasks.
func (s *Sim) age(now int64) {
	for s.o.MaxTasks > 0 && len(s.tasks) > s.o.MaxTasks {
		var oldest *task
		for _, st := range []int{diff.StatusCompleted, diff.StatusTerminated} {
			if l := s.byStatus[st]; len(l) > 0 && (oldest == nil || l[0].w.ID < oldest.w.ID) {
				oldest = l[0]
			}
		}
		i := 0
		if oldest != nil {
			i, _ = s.taskIndex(oldest.w.ID)
		}
		s.delete(i, now)
	}
}

// record keeps e, and drops the oldest records past HistoryLimit.
func (s *Sim) record(e Edit) {
	s.edits = append(s.edits, e)
	s.editsBase += trim(&s.edits, s.o.HistoryLimit)
}

// trim keeps the newest limit records of *xs once it holds twice that, and
// returns how many it dropped.
func trim[T any](xs *[]T, limit int) int {
	n := len(*xs)
	if limit <= 0 || n <= 2*limit {
		return 0
	}
	drop := n - limit
	copy(*xs, (*xs)[drop:])
	clear((*xs)[limit:])
	*xs = (*xs)[:limit]
	return drop
}

// byID orders tasks by id, for binary searches of id-ordered lists.
func byID(t *task, id int64) int { return cmp.Compare(t.w.ID, id) }

// Indexes into diff.Fields of the fields Step's base mix edits.
var (
	fieldName        = slices.Index(diff.Fields[:], "name")
	fieldDescription = slices.Index(diff.Fields[:], "description")
)
