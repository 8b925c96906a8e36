// Package sim is an in-process simulator of the incsapp task API
// (GET /external/tasks): a seeded, evolving world of tasks and their history
// logs served over HTTP exactly as the vendor page shows it, with injectable
// faults. Tests, `incs-relay demo` and `incs-relay sim` use it; Logs returns
// every log it ever created, the ground truth a relay's events are checked
// against.
//
// Contract details the vendor page leaves open, chosen here:
//   - page counts from 1; page < 1 is page 1. page_size defaults to 20 and
//     values above 100 are capped at 100, as the real API most likely does;
//     page_size < 1 means the default.
//   - start_at and end_at filter by creation time, both inclusive, as
//     wall-clock times of the simulator's Location compared like a database
//     column without a zone: across a daylight-saving fall-back, a task of
//     the repeated hour's second pass counts as created before one of its
//     first pass. name matches a substring; a malformed parameter is HTTP
//     400 with an error envelope.
//   - a wrong or missing bearer token is HTTP 401 with an error envelope;
//     an empty Options.Token accepts any request.
//   - tasks are listed newest id first unless Options.Order says otherwise;
//     each task's logs are in id order.
package sim

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller"
)

// Options configures a Sim. Zero fields take the defaults named on each.
type Options struct {
	// Token is the bearer token requests must carry; empty accepts any.
	Token string
	// Tasks is the number of tasks created, with their history, by New.
	Tasks int
	// Seed seeds every random choice: equal options give equal worlds.
	Seed int64
	// Tick is how often Run applies ChangesPerTick changes; default 1s.
	Tick time.Duration
	// Location is the API's zone; default poller.DefaultLocation().
	Location *time.Location
	// Now returns the current time; default time.Now.
	Now func() time.Time
	// Order is the list order; default IDDesc.
	Order Order
	// Faults are injected into served requests; see SetFaults.
	Faults Faults
	// ChangesPerTick is how many changes Run applies per tick; default
	// Tasks/200, at least 1.
	ChangesPerTick int
	// OpenFraction is the fraction of tasks left open (status 0 or 1) by
	// New; default 0.3.
	OpenFraction float64
	// Extra adds members the vendor page does not list ("priority" and
	// "tags" on tasks, "source" on logs), as a newer API version might.
	Extra bool
}

// LogRef names one log the simulator created: the ground truth for tests.
type LogRef struct {
	TaskID    int64
	LogID     int64
	Type      int
	CreatedAt string
	// PreStatus is the task's status just before the log was added: 0 or 1
	// for a change to an open task, 2 or 3 for one to a finished task.
	PreStatus int
}

// Sim is a simulated incsapp task API. It is an http.Handler and safe for
// concurrent use; one mutex guards its world.
type Sim struct {
	requests atomic.Int64

	mu       sync.Mutex
	o        Options
	loc      *time.Location
	now      func() time.Time
	rng      *rand.Rand // the world's changes
	faultRng *rand.Rand // fault decisions, apart so requests do not change the world
	faults   Faults

	tasks      []*task    // in id order; task i has id i+1
	open       []*task    // tasks with status 0 or 1, in no order
	byStatus   [4][]*task // tasks of each status, in id order
	logs       []LogRef
	nextTaskID int64
	nextLogID  int64
	creationID int64
	// createdSorted is true while tasks in id order are also in wall-clock
	// creation time order, which a clock that goes back, or a
	// daylight-saving fall-back, can break.
	createdSorted bool
	// indexed is set once New has built byStatus; from then on every
	// status change keeps it up to date.
	indexed bool

	version     uint64  // bumped by every change
	byUpdated   []*task // UpdatedDesc order, valid for byUpdatedAt
	byUpdatedAt uint64
}

type task struct {
	w       wireTask
	created int64  // unix seconds of created_at
	wall    int64  // created_at as wall-clock seconds: the time filters compare these
	updated int64  // unix seconds of updated_at
	lastLog int64  // unix seconds of the newest log
	openPos int    // index in Sim.open, -1 when closed
	json    []byte // cached encoding of w; nil after a change
}

type wireTask struct {
	ID               int64     `json:"id"`
	CreationID       int64     `json:"creation_id"`
	AuthID           int64     `json:"auth_id"`
	Name             string    `json:"name"`
	Description      string    `json:"description"`
	Type             int       `json:"type"`
	UserName         string    `json:"user_name"`
	UserPhone        string    `json:"user_phone"`
	AssigneeUsername string    `json:"assignee_username"`
	Status           int       `json:"status"`
	CreatedAt        string    `json:"created_at"`
	UpdatedAt        string    `json:"updated_at"`
	Logs             []wireLog `json:"logs"`
	Priority         *int      `json:"priority,omitempty"`
	Tags             []string  `json:"tags,omitempty"`
}

type wireLog struct {
	ID               int64  `json:"id"`
	Type             int    `json:"type"`
	Status           int    `json:"status"`
	PreStatus        int    `json:"pre_status"`
	AssigneeUsername string `json:"assignee_username"`
	Comment          string `json:"comment"`
	CreatedAt        string `json:"created_at"`
	UpdatedAt        string `json:"updated_at"`
	Source           string `json:"source,omitempty"`
}

// LogUnknown is the log type the simulator uses for logs the vendor page
// does not describe.
const LogUnknown = 9

// New returns a simulator whose world holds o.Tasks tasks created over the
// two weeks before o.Now, each with a plausible history, and whose JSON is
// encoded up front so that serving a page costs little.
func New(o Options) *Sim {
	if o.Tick <= 0 {
		o.Tick = time.Second
	}
	if o.Location == nil {
		o.Location = poller.DefaultLocation()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ChangesPerTick <= 0 {
		o.ChangesPerTick = max(1, o.Tasks/200)
	}
	if o.OpenFraction <= 0 || o.OpenFraction > 1 {
		o.OpenFraction = 0.3
	}
	seed := uint64(o.Seed)
	s := &Sim{
		o:             o,
		loc:           o.Location,
		now:           o.Now,
		rng:           rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)),
		faultRng:      rand.New(rand.NewPCG(seed, 0xc2b2ae3d27d4eb4f)),
		nextTaskID:    1,
		nextLogID:     1,
		creationID:    1,
		createdSorted: true,
	}
	s.faults = normFaults(o.Faults)
	s.populate(o.Tasks)
	for _, t := range s.tasks {
		s.encode(t)
		st := t.w.Status
		s.byStatus[st] = append(s.byStatus[st], t)
	}
	s.indexed = true
	return s
}

// Requests returns how many requests the simulator has received, failed
// ones included.
func (s *Sim) Requests() int64 { return s.requests.Load() }

// Logs returns a copy of every log ever created, in log id order.
func (s *Sim) Logs() []LogRef {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.logs)
}

// LogCount returns how many logs the simulator has created.
func (s *Sim) LogCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.logs)
}

// LogsFrom returns a copy of the logs created after the first i, in log id
// order: LogsFrom(LogCount()) taken before a change returns its logs.
func (s *Sim) LogsFrom(i int) []LogRef {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i >= len(s.logs) {
		return nil
	}
	return slices.Clone(s.logs[max(i, 0):])
}

// TaskStatus returns the status of the task with the given id.
func (s *Sim) TaskStatus(id int64) (status int, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.task(id)
	if t == nil {
		return 0, false
	}
	return t.w.Status, true
}

// task returns the task with the given id, or nil. Call with s.mu held.
func (s *Sim) task(id int64) *task {
	if id < 1 || id > int64(len(s.tasks)) {
		return nil
	}
	return s.tasks[id-1]
}

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
// updated_at without a log, and now and then a log of unknown type 9.
func (s *Sim) Step(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().Unix()
	for range n {
		s.change(now)
	}
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

// wallSeconds returns an API time as seconds of its wall clock, counted as
// if the zone were UTC, so that comparing them compares the strings.
func wallSeconds(apiTime string) int64 {
	t, err := time.Parse(diff.TimeLayout, apiTime)
	if err != nil {
		panic("sim: own time does not parse: " + apiTime) // s.format wrote it: cannot happen
	}
	return t.Unix()
}

// format returns unix seconds as an API time in the simulator's zone.
func (s *Sim) format(unix int64) string {
	return time.Unix(unix, 0).In(s.loc).Format(diff.TimeLayout)
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
	byID := func(x *task, id int64) int { return cmp.Compare(x.w.ID, id) }
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

// change applies one random change at unix time now.
func (s *Sim) change(now int64) {
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
			t.w.Description = pick(r, descs) + "（已修改）"
		} else {
			t.w.Name = fmt.Sprintf("%s #%d", pick(r, taskNames), t.w.ID)
		}
		s.touch(t, max(now, t.updated))
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

// encode returns t's cached JSON, encoding it after a change. A cached
// slice is never modified, so it may be used after the mutex is released.
func (s *Sim) encode(t *task) []byte {
	if t.json == nil {
		b, err := json.Marshal(&t.w)
		if err != nil {
			panic("sim: encode task: " + err.Error()) // only plain types: cannot happen
		}
		t.json = b
	}
	return t.json
}
