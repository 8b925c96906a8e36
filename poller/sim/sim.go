package sim

// The Sim: its options, its world's types and their wire form, New, and
// the calls that read the world (the ground truth for tests). Changing
// the world is changes.go and history.go; serving it, server.go.

import (
	"cmp"
	"encoding/json"
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

	// Changes that leave no log (edits.go). Each rate is the fraction,
	// 0..1, of Step's changes of that kind; all default to 0, which keeps
	// the world, and every random choice, as without them. Rates summing
	// to more than 1 are scaled down to sum to 1.

	// CommentEdits is the rate of comment edits: an existing comment log
	// (type 4) gets a new comment and its updated_at moves to the edit
	// time; its id and created_at stay.
	CommentEdits float64
	// CommentEditTouch says whether a comment edit also moves its task's
	// updated_at, which the vendor page leaves open; default TouchEither.
	CommentEditTouch Touch
	// FieldEdits is the rate of edits of one of a task's own fields
	// (EditFields), moving the task's updated_at.
	FieldEdits float64
	// EditFields are the fields FieldEdits picks from, named as in
	// diff.Fields; default all of them (status and assignee_username
	// included: changed with no log, as an administrator might).
	EditFields []string
	// Deletions is the rate of deletions of a task picked at random: it is
	// listed no more and a task_id look-up finds nothing.
	Deletions float64
	// MaxTasks, when positive, bounds the world: a Step that leaves more
	// tasks deletes the oldest finished ones (the oldest ones when none
	// is finished) down to MaxTasks. Each is an Edit of kind TaskDeleted.
	MaxTasks int
	// HistoryLimit, when positive, bounds the ground truth kept: Logs and
	// Edits keep at least the newest HistoryLimit records (at most twice
	// that). LogCount, EditCount, LogsFrom and EditsFrom still count from
	// the first record ever made. Default 0: everything is kept.
	HistoryLimit int
}

// Touch says whether a comment edit moves its task's updated_at.
type Touch int

// Touch values.
const (
	TouchEither  Touch = iota // each edit picks at random: both kinds happen
	TouchTask                 // the task's updated_at moves too
	TouchLogOnly              // only the log's updated_at moves
)

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

	tasks      []*task    // in id order; deleted tasks removed
	open       []*task    // tasks with status 0 or 1, in no order
	byStatus   [4][]*task // tasks of each status, in id order
	logs       []LogRef
	logsBase   int // records of logs dropped by HistoryLimit
	edits      []Edit
	editsBase  int // records of edits dropped by HistoryLimit
	rates      rates
	editFields []int // indexes into diff.Fields
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
	s.rates, s.editFields = normEdits(o)
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

// Logs returns a copy of every log ever created, in log id order, those
// of deleted tasks included (with HistoryLimit, of the newest ones).
func (s *Sim) Logs() []LogRef {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.logs)
}

// LogCount returns how many logs the simulator has created.
func (s *Sim) LogCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logsBase + len(s.logs)
}

// LogsFrom returns a copy of the logs created after the first i, in log id
// order: LogsFrom(LogCount()) taken before a change returns its logs.
func (s *Sim) LogsFrom(i int) []LogRef {
	s.mu.Lock()
	defer s.mu.Unlock()
	return from(s.logs, i-s.logsBase)
}

// from returns a copy of xs[i:], all of xs for i < 0, nil for i past it.
func from[T any](xs []T, i int) []T {
	if i >= len(xs) {
		return nil
	}
	return slices.Clone(xs[max(i, 0):])
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

// TaskCount returns how many tasks the world holds (deleted ones gone).
func (s *Sim) TaskCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tasks)
}

// task returns the task with the given id, or nil. Call with s.mu held.
func (s *Sim) task(id int64) *task {
	if id >= 1 && id <= int64(len(s.tasks)) && s.tasks[id-1].w.ID == id {
		return s.tasks[id-1] // no task deleted before it
	}
	if i, ok := s.taskIndex(id); ok {
		return s.tasks[i]
	}
	return nil
}

// taskIndex finds the task with the given id in s.tasks. Call with s.mu
// held.
func (s *Sim) taskIndex(id int64) (int, bool) {
	return slices.BinarySearchFunc(s.tasks, id, func(t *task, id int64) int { return cmp.Compare(t.w.ID, id) })
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
