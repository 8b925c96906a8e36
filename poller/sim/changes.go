package sim

// Changing the world: the calls that change one task (NewTask, Comment,
// SetStatus), the random changes of Step, StepFinished and Run, and the
// bookkeeping every change goes through (logs, updated_at, the open and
// by-status indexes).

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/incs-relay/incs-relay/diff"
)

// NewTask creates a task now, with its created log, and returns its id.
func (s *Sim) NewTask() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().Unix()
	t := s.newTaskAt(now)
	s.appendLog(t, now, wireLog{Type: diff.LogCreated})
	return t.w.ID
}

// Comment adds a comment log to the task with the given id now. It
// reports whether the task exists.
func (s *Sim) Comment(id int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.task(id)
	if t == nil {
		return false
	}
	s.comment(t, s.now().Unix())
	return true
}

func (s *Sim) comment(t *task, now int64) {
	s.appendLog(t, now, wireLog{Type: diff.LogCommented, Status: t.w.Status, PreStatus: t.w.Status,
		AssigneeUsername: t.w.AssigneeUsername, Comment: pick(s.rng, comments)})
}

// SetStatus changes the status of the task with the given id now, with a
// status log, as the API would for any move (0..3 to 0..3). It reports
// whether the task exists and the status is valid.
func (s *Sim) SetStatus(id int64, status int) bool {
	if status < diff.StatusNotStarted || status > diff.StatusTerminated {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.task(id)
	if t == nil {
		return false
	}
	from := t.w.Status
	s.setStatus(t, status)
	s.appendLog(t, s.now().Unix(), wireLog{Type: diff.LogStatusChanged, Status: status, PreStatus: from,
		AssigneeUsername: t.w.AssigneeUsername})
	return true
}

// StepFinished adds a comment now to each of n finished tasks (status 2 or
// 3) picked at random, as happens when someone follows up on a closed task.
// It does nothing when no task is finished.
func (s *Sim) StepFinished(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	finished := len(s.tasks) - len(s.open)
	if finished == 0 {
		return
	}
	now := s.now().Unix()
	for range n {
		for {
			t := pick(s.rng, s.tasks)
			if t.openPos < 0 {
				s.comment(t, now)
				break
			}
		}
	}
}

// Step applies n random changes at the current time: new tasks (a created
// log and often an assigned one), assignments, status changes 0→1→2 or →3,
// comments in Chinese with emoji, edits of name or description that touch
// updated_at without a log, and now and then a log of unknown type 9; with
// the rates of Options, comment edits, other field edits and deletions
// too. Then it deletes tasks past Options.MaxTasks.
func (s *Sim) Step(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().Unix()
	for range n {
		s.change(now)
	}
	s.age(now)
}

// Run calls Step(ChangesPerTick) every Tick until ctx ends. It blocks.
func (s *Sim) Run(ctx context.Context) {
	t := time.NewTicker(s.o.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Step(s.o.ChangesPerTick)
		}
	}
}

// change applies one random change at unix time now: one that leaves no
// log at the rates of Options (edits.go), else one of the mix below.
func (s *Sim) change(now int64) {
	if s.edit(now) {
		return
	}
	r := s.rng
	pNew := 0.12
	if float64(len(s.open)) < s.o.OpenFraction*float64(len(s.tasks))/2 {
		pNew = 0.4
	}
	x := r.Float64()
	switch {
	case x < pNew || len(s.open) == 0:
		t := s.newTaskAt(now)
		s.appendLog(t, now, wireLog{Type: diff.LogCreated})
		if r.IntN(10) < 7 {
			s.assign(t, now)
		}
	case x < pNew+0.15:
		s.assign(pick(r, s.open), now)
	case x < pNew+0.45:
		t := pick(r, s.open)
		from := t.w.Status
		to := diff.StatusInProgress
		switch {
		case from == diff.StatusNotStarted && r.IntN(10) == 0:
			to = diff.StatusTerminated
		case from == diff.StatusInProgress:
			to = diff.StatusCompleted
			if r.IntN(7) == 0 {
				to = diff.StatusTerminated
			}
		}
		s.setStatus(t, to)
		s.appendLog(t, now, wireLog{Type: diff.LogStatusChanged, Status: to, PreStatus: from, AssigneeUsername: t.w.AssigneeUsername})
	case x < pNew+0.73:
		t := pick(r, s.open)
		if r.IntN(5) == 0 {
			t = pick(r, s.tasks)
		}
		s.appendLog(t, now, wireLog{Type: diff.LogCommented, Status: t.w.Status, PreStatus: t.w.Status,
			AssigneeUsername: t.w.AssigneeUsername, Comment: pick(r, comments)})
	case x < pNew+0.85:
		t := pick(r, s.tasks)
		if r.IntN(2) == 0 {
			s.setField(t, fieldDescription, pick(r, descs)+"（已修改）", now)
		} else {
			s.setField(t, fieldName, fmt.Sprintf("%s #%d", pick(r, taskNames), t.w.ID), now)
		}
	default:
		t := pick(r, s.open)
		s.appendLog(t, now, wireLog{Type: LogUnknown, Status: t.w.Status, PreStatus: t.w.Status,
			AssigneeUsername: t.w.AssigneeUsername, Comment: pick(r, unknownComments)})
	}
}

func (s *Sim) assign(t *task, now int64) {
	t.w.AssigneeUsername = s.otherAssignee(t.w.AssigneeUsername)
	s.appendLog(t, now, wireLog{Type: diff.LogAssigned, Status: t.w.Status, PreStatus: t.w.Status,
		AssigneeUsername: t.w.AssigneeUsername})
}

var (
	userNames = []string{"Erin", "李雷", "韩梅梅", "王芳", "张伟", "Budi", "Siti Rahma", "刘洋", "陈静", "Ahmad", "赵敏", "O'Brien"}
	assignees = []string{"incs_1", "incs_2", "incs_3", "incs_4", "incs_5", "incs_6", "incs_7", "incs_8", "incs_9", "incs_10", "incs_11", "incs_12"}
	taskNames = []string{"客户回访", "安装调试", "售后维修", "订单跟进", "投诉处理", "上门测量", "合同续签", "Delivery check"}
	descs     = []string{"1111", "客户要求尽快处理", "请带上工具箱 🧰", "地址：上海市浦东新区张江路 88 号", "需要二次确认，电话联系客户 📞",
		"Customer asked for a \"quick\" visit\nbefore 5pm", "优先级高 🔥 请今天完成"}
	comments = []string{"已经跟进", "客户未接电话，稍后再打 📞", "已上门，明天复查 ✅", "等待配件到货 🔧", "客户满意 👍",
		"地址有误，已联系客户更正", "需要主管审批 🙏", "问题已解决 🎉", "Called twice, no answer", "客户说：“下周再来”"}
	unknownComments = []string{"系统同步：工单已归档 🗂️", "SLA 提醒：即将超时 ⏰"}
)

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

// newTaskAt adds a task created at unix time at, without logs.
func (s *Sim) newTaskAt(at int64) *task {
	r := s.rng
	if r.IntN(20) == 0 {
		s.creationID++
	}
	id := s.nextTaskID
	s.nextTaskID++
	created := s.format(at)
	var phone string
	if r.IntN(2) == 0 {
		phone = fmt.Sprintf("62815%08d", r.IntN(100000000))
	} else {
		phone = fmt.Sprintf("138%08d", r.IntN(100000000))
	}
	t := &task{
		w: wireTask{
			ID:          id,
			CreationID:  s.creationID,
			AuthID:      30000 + int64(r.IntN(100)),
			Name:        fmt.Sprintf("%s #%d", pick(r, taskNames), id),
			Description: pick(r, descs),
			Type:        1 + r.IntN(5),
			UserName:    pick(r, userNames),
			UserPhone:   phone,
			CreatedAt:   created,
			UpdatedAt:   created,
			Logs:        make([]wireLog, 0, 6),
		},
		created: at,
		wall:    wallSeconds(created),
		updated: at,
		lastLog: at,
		openPos: -1,
	}
	if s.o.Extra {
		p := 1 + r.IntN(3)
		t.w.Priority = &p
		t.w.Tags = []string{pick(r, []string{"vip", "紧急", "回访"})}
	}
	if n := len(s.tasks); n > 0 && s.tasks[n-1].wall > t.wall {
		s.createdSorted = false
	}
	s.tasks = append(s.tasks, t)
	s.setOpen(t, true)
	if s.indexed {
		s.byStatus[0] = append(s.byStatus[0], t) // the newest id: order kept
	}
	return t
}

// setStatus sets t's status and keeps s.open and s.byStatus in step.
func (s *Sim) setStatus(t *task, to int) {
	from := t.w.Status
	t.w.Status = to
	s.setOpen(t, to == diff.StatusNotStarted || to == diff.StatusInProgress)
	if !s.indexed || from == to {
		return
	}
	if i, ok := slices.BinarySearchFunc(s.byStatus[from], t.w.ID, byID); ok {
		s.byStatus[from] = slices.Delete(s.byStatus[from], i, i+1)
	}
	i, _ := slices.BinarySearchFunc(s.byStatus[to], t.w.ID, byID)
	s.byStatus[to] = slices.Insert(s.byStatus[to], i, t)
}

func (s *Sim) setOpen(t *task, open bool) {
	switch {
	case open && t.openPos < 0:
		t.openPos = len(s.open)
		s.open = append(s.open, t)
	case !open && t.openPos >= 0:
		last := s.open[len(s.open)-1]
		s.open[t.openPos] = last
		last.openPos = t.openPos
		s.open = s.open[:len(s.open)-1]
		t.openPos = -1
	}
}

func (s *Sim) otherAssignee(cur string) string {
	for {
		if a := pick(s.rng, assignees); a != cur {
			return a
		}
	}
}

// appendLog gives l the next log id and the time at (never before the
// task's newest log) and appends it to t.
func (s *Sim) appendLog(t *task, at int64, l wireLog) {
	at = max(at, t.lastLog)
	l.ID = s.nextLogID
	s.nextLogID++
	l.CreatedAt = s.format(at)
	l.UpdatedAt = l.CreatedAt
	if s.o.Extra {
		l.Source = "web"
	}
	t.w.Logs = append(t.w.Logs, l)
	t.lastLog = at
	s.touch(t, at)
	s.logs = append(s.logs, LogRef{TaskID: t.w.ID, LogID: l.ID, Type: l.Type, CreatedAt: l.CreatedAt, PreStatus: l.PreStatus})
	s.logsBase += trim(&s.logs, s.o.HistoryLimit)
}

// touch marks t changed at unix time at.
func (s *Sim) touch(t *task, at int64) {
	if at > t.updated {
		t.updated = at
	}
	t.w.UpdatedAt = s.format(t.updated)
	t.json = nil
	s.version++
}
