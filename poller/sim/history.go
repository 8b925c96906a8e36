package sim

// The world New starts from: tasks spread over two weeks, each with a
// plausible history of logs, their ids handed out in time order.

import (
	"cmp"
	"slices"

	"github.com/incs-relay/incs-relay/diff"
)

// draft is a log of the initial history before its id is known.
type draft struct {
	t   *task
	at  int64
	seq int
	l   wireLog
}

// populate builds n tasks with histories spread over two weeks before now.
// Log ids are handed out in global time order, as a real API would.
func (s *Sim) populate(n int) {
	if n <= 0 {
		return
	}
	r := s.rng
	now := s.now().Unix()
	const span = 14 * 24 * 60 * 60
	start := now - span
	step := max(int64(span)/int64(n), 1)
	drafts := make([]draft, 0, n*5)
	for i := range n {
		at := min(start+int64(i)*step+r.Int64N(step), now)
		t := s.newTaskAt(at)
		drafts = s.history(t, now, drafts)
	}
	slices.SortFunc(drafts, func(a, b draft) int {
		return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.t.w.ID, b.t.w.ID), cmp.Compare(a.seq, b.seq))
	})
	for i := range drafts {
		d := &drafts[i]
		s.appendLog(d.t, d.at, d.l)
	}
}

// Kinds of history entries.
const (
	hCreated = iota
	hAssign
	hStatus
	hComment
	hUnknown
)

// history plans the logs of t from its creation up to now and appends them
// as drafts; it sets t's final status and assignee.
func (s *Sim) history(t *task, now int64, drafts []draft) []draft {
	r := s.rng
	var final int
	if r.Float64() < s.o.OpenFraction {
		final = diff.StatusInProgress
		if r.IntN(5) < 2 {
			final = diff.StatusNotStarted
		}
	} else {
		final = diff.StatusCompleted
		if r.IntN(7) == 0 {
			final = diff.StatusTerminated
		}
	}
	var path []int // statuses passed through, in order
	switch final {
	case diff.StatusInProgress:
		path = []int{1}
	case diff.StatusCompleted:
		path = []int{1, 2}
	case diff.StatusTerminated:
		if r.IntN(2) == 0 {
			path = []int{3}
		} else {
			path = []int{1, 3}
		}
	}
	plan := []int{hCreated}
	if final != diff.StatusNotStarted || r.IntN(10) < 7 {
		plan = append(plan, hAssign)
	}
	for i, st := range path {
		if r.IntN(4) == 0 {
			plan = append(plan, hComment)
		}
		plan = append(plan, hStatus|st<<4)
		if i == 0 && r.IntN(10) == 0 {
			plan = append(plan, hAssign)
		}
	}
	if r.IntN(4) == 0 {
		plan = append(plan, hComment)
	}
	if r.IntN(100) == 0 {
		plan = append(plan, hUnknown)
	}

	at := t.created
	status, assignee := 0, ""
	for i, p := range plan {
		if i > 0 {
			left := int64(len(plan) - i)
			at += r.Int64N((now-at)/(left+1) + 1)
		}
		l := wireLog{Status: status, PreStatus: status, AssigneeUsername: assignee}
		switch p & 0xf {
		case hCreated:
			l = wireLog{Type: diff.LogCreated}
		case hAssign:
			assignee = s.otherAssignee(assignee)
			l.Type, l.AssigneeUsername = diff.LogAssigned, assignee
		case hStatus:
			l.Type, l.Status = diff.LogStatusChanged, p>>4
			status = l.Status
		case hComment:
			l.Type, l.Comment = diff.LogCommented, pick(r, comments)
		case hUnknown:
			l.Type, l.Comment = LogUnknown, pick(r, unknownComments)
		}
		drafts = append(drafts, draft{t: t, at: at, seq: i, l: l})
	}
	t.w.Status, t.w.AssigneeUsername = status, assignee
	if status == diff.StatusCompleted || status == diff.StatusTerminated {
		s.setOpen(t, false)
	}
	if r.IntN(10) == 0 { // an edit after the last log
		t.updated = at + r.Int64N(now-at+1)
	}
	return drafts
}
