package relay

// Partitioned delivery on a jetstream store: a dispatcher per partition
// this replica owns.

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/store"
	"github.com/incs-relay/incs-relay/store/jsstore"
)

// dispatcher is what a Relay needs of a sink's delivery: one
// *sink.Dispatcher with a bbolt store, a *partitioned with a jetstream one.
type dispatcher interface {
	Run(ctx context.Context) error
	State() sink.DispatcherState
	Reset(ctx context.Context, fn func() error) error
	Resume()
}

var (
	_ dispatcher = (*sink.Dispatcher)(nil)
	_ dispatcher = (*partitioned)(nil)
)

// partitioned delivers one sink's events of the partitions the store
// assigns to this replica: one *sink.Dispatcher per owned partition, each
// on that partition's outbox, started and stopped as the assignment
// changes. Per-task order holds as in bbolt mode, since a task's events
// all fall in one partition.
type partitioned struct {
	name    string
	store   *JetStream
	newDisp func(out sink.Outbox, p int, paused string) *sink.Dispatcher
	log     zerolog.Logger
	changes <-chan struct{} // role changes; set before Run
	rewind  chan struct{}   // buffered 1: the sink was rewound somewhere

	life sync.Mutex // held while partitions start or stop, and by Reset
	mu   sync.Mutex // guards runs and gone
	runs map[int]*partRun
	gone sink.DispatcherState // totals of dispatchers that stopped
	// running is true while Run is in its loop.
	running bool
	// pausedSince is when followResume first saw a partition paused.
	pausedSince time.Time
	// pauseSaved is whether the last state save saw a partition paused
	// (replicaPause).
	pauseSaved bool
	// lastOwner is each partition's last owner seen, gained when this
	// replica was given it by another (startable); Run's only.
	lastOwner map[int]string
	gained    map[int]time.Time
}

// partRun is one partition's running dispatcher.
type partRun struct {
	d      *sink.Dispatcher
	cancel context.CancelFunc
	done   chan struct{}
}

func newPartitioned(name string, st *JetStream, log zerolog.Logger, newDisp func(out sink.Outbox, p int, paused string) *sink.Dispatcher) *partitioned {
	return &partitioned{name: name, store: st, newDisp: newDisp, log: log.With().Str("sink", name).Logger(),
		rewind: make(chan struct{}, 1), runs: map[int]*partRun{}}
}

// rewound tells Run that the sink was rewound (by any replica): its
// running partitions reread their cursors.
func (p *partitioned) rewound() {
	select {
	case p.rewind <- struct{}{}:
	default:
	}
}

// Run keeps one dispatcher running per owned partition until ctx ends,
// then stops them all (each drains and persists its cursor).
func (p *partitioned) Run(ctx context.Context) error {
	p.mu.Lock()
	p.running = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.running = false
		p.mu.Unlock()
	}()
	check := time.NewTicker(time.Second)
	defer check.Stop()
	for {
		p.sync(ctx, p.startable(p.store.Role(), time.Now()))
		select {
		case <-ctx.Done():
			p.sync(ctx, nil)
			return nil
		case <-p.changes:
		case now := <-check.C:
			p.followResume(now)
		case <-p.rewind:
			p.reread(context.WithoutCancel(ctx))
		}
	}
}

// handoffDelay is how long a partition that another replica delivered
// waits before delivery starts here: the other replica stops its
// dispatcher when the partition is taken from it (or it stops) and stores
// its cursor, which takes a moment to reach this replica; starting at once
// would deliver again what it did after the cursor seen here. It adds to
// the failover of a dead replica's partitions (after its membership
// lapsed) a second.
const handoffDelay = time.Second

// startable returns the partitions role gives this replica that may run
// now: all but those just taken from another replica, for handoffDelay.
func (p *partitioned) startable(role jsstore.Role, now time.Time) []int {
	if p.lastOwner == nil {
		p.lastOwner, p.gained = map[int]string{}, map[int]time.Time{}
	}
	p.mu.Lock()
	running := make(map[int]bool, len(p.runs))
	for part := range p.runs {
		running[part] = true
	}
	p.mu.Unlock()
	var out []int
	for _, part := range role.Owned {
		prev := p.lastOwner[part]
		switch at, waiting := p.gained[part]; {
		case running[part]:
		case waiting && now.Sub(at) < handoffDelay:
			continue
		case waiting:
			delete(p.gained, part)
		case prev != "" && prev != role.Self:
			p.gained[part] = now
			continue
		}
		out = append(out, part)
	}
	for id, parts := range role.Assignments {
		for _, part := range parts {
			p.lastOwner[part] = id
		}
	}
	return out
}

// sync starts a dispatcher for every owned partition without one and
// stops those of partitions no longer owned, waiting for them to drain.
func (p *partitioned) sync(ctx context.Context, owned []int) {
	p.life.Lock()
	defer p.life.Unlock()
	p.mu.Lock()
	var stopping []*partRun
	for part, run := range p.runs {
		if !slices.Contains(owned, part) {
			stopping = append(stopping, run)
			delete(p.runs, part)
			run.cancel()
		}
	}
	p.mu.Unlock()
	for _, run := range stopping {
		<-run.done
		p.addGone(run.d.State())
	}
	if ctx.Err() != nil {
		return
	}
	for _, part := range owned {
		p.mu.Lock()
		_, ok := p.runs[part]
		p.mu.Unlock()
		if ok {
			continue
		}
		paused := ""
		if ss, err := p.store.SinkState(p.name); err == nil && ss.Paused {
			paused = ss.PauseReason
			if paused == "" {
				paused = "paused by another replica or an earlier run"
			}
			// The stored state already says paused: this replica's
			// saves must not write that pause again over a resume made
			// elsewhere (replicaPause), and nothing reports this pause
			// to the state saver, since the dispatcher starts with it.
			p.mu.Lock()
			p.pauseSaved = true
			p.mu.Unlock()
		}
		d := p.newDisp(newGuardedOutbox(p.store.Partition(part), p.rewound), part, paused)
		rctx, cancel := context.WithCancel(ctx)
		run := &partRun{d: d, cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(run.done)
			if err := d.Run(rctx); err != nil {
				p.log.Error().Err(err).Int("partition", part).Msg("partition dispatcher stopped")
			}
		}()
		p.mu.Lock()
		p.runs[part] = run
		p.mu.Unlock()
	}
	if len(stopping) > 0 || len(owned) > 0 {
		p.log.Debug().Ints("partitions", owned).Msg("delivering partitions")
	}
}

func (p *partitioned) addGone(st sink.DispatcherState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gone.Delivered += st.Delivered
	p.gone.Retried += st.Retried
	p.gone.DeadLettered += st.DeadLettered
	if st.LastDeliveryAt.After(p.gone.LastDeliveryAt) {
		p.gone.LastDeliveryAt = st.LastDeliveryAt
	}
	if st.LastErrorAt.After(p.gone.LastErrorAt) {
		p.gone.LastError, p.gone.LastErrorAt = st.LastError, st.LastErrorAt
	}
}

func (p *partitioned) runList() []*partRun {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Collect(maps.Values(p.runs))
}

// reread makes every running partition reread its cursor after a rewind
// made elsewhere.
func (p *partitioned) reread(ctx context.Context) {
	p.life.Lock()
	defer p.life.Unlock()
	for _, run := range p.runList() {
		if err := run.d.Reset(ctx, nil); err != nil {
			p.log.Warn().Err(err).Msg("reread cursor after a rewind")
		}
	}
}

// State sums the partitions' states. Cursor and Persisted stay 0: the
// sink's cursor is the store's (the lowest over the partitions).
func (p *partitioned) State() sink.DispatcherState {
	p.mu.Lock()
	st := p.gone
	st.Sink, st.Running = p.name, p.running
	runs := make([]*partRun, 0, len(p.runs))
	for _, run := range p.runs {
		runs = append(runs, run)
	}
	p.mu.Unlock()
	for _, run := range runs {
		s := run.d.State()
		st.InFlight += s.InFlight
		st.Pending += s.Pending
		st.Delivered += s.Delivered
		st.Retried += s.Retried
		st.DeadLettered += s.DeadLettered
		if s.Paused && !st.Paused {
			st.Paused, st.PauseReason = true, s.PauseReason
		}
		st.Failing = st.Failing || s.Failing
		if s.LastErrorAt.After(st.LastErrorAt) {
			st.LastError, st.LastErrorAt = s.LastError, s.LastErrorAt
		}
		if s.LastDeliveryAt.After(st.LastDeliveryAt) {
			st.LastDeliveryAt = s.LastDeliveryAt
		}
	}
	return st
}

// Reset stops every running partition (each persists its cursor), runs fn
// once they all stopped (the store's rewind of the sink), and resumes them
// from the cursors fn left, clearing pauses.
func (p *partitioned) Reset(ctx context.Context, fn func() error) error {
	p.life.Lock()
	defer p.life.Unlock()
	runs := p.runList()
	if fn == nil {
		fn = func() error { return nil }
	}
	if len(runs) == 0 {
		return fn()
	}
	stopped := make(chan struct{}, len(runs))
	release := make(chan struct{})
	errs := make(chan error, len(runs))
	for _, run := range runs {
		go func() {
			errs <- run.d.Reset(ctx, func() error {
				stopped <- struct{}{}
				select {
				case <-release:
				case <-ctx.Done():
				}
				return nil
			})
		}()
	}
	var err error
	for range runs {
		select {
		case <-stopped:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			break
		}
	}
	if err == nil {
		err = fn()
	}
	close(release)
	for range runs {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	return err
}

// Resume clears a pause in every running partition.
func (p *partitioned) Resume() {
	for _, run := range p.runList() {
		run.d.Resume()
	}
}

// partitionedDispatcher returns the delivery of dc's sink on a jetstream
// store. max_in_flight is shared out over the partitions (at least one
// each), so the replicas together keep about max_in_flight deliveries
// under way, as one bbolt relay does.
func (r *Relay) partitionedDispatcher(dc sink.DispatcherConfig) *partitioned {
	parts := r.js.Partitions()
	perPart := max(1, (dc.MaxInFlight+parts-1)/parts)
	log := dc.Logger
	return newPartitioned(dc.Sink.Name(), r.js, log, func(out sink.Outbox, p int, paused string) *sink.Dispatcher {
		c := dc
		c.Outbox, c.Paused, c.MaxInFlight = out, paused, perPart
		c.Logger = log.With().Int("partition", p).Logger()
		return sink.NewDispatcher(c)
	})
}

// replicaPause settles what a jetstream replica writes of o's sink state,
// which all replicas share: it writes when one of its partitions paused
// since the last save, and nothing else (returning o.saved, which the
// caller skips), so it neither clears another replica's pause nor brings
// back one an operator resumed elsewhere (its own paused partitions follow
// that resume, see followResume); an operator's resume here is written by
// saveResumed. The live last error and delivery time are in the admin API.
// With bbolt ss is returned as it is.
func (r *Relay) replicaPause(o *output, ss store.SinkState) store.SinkState {
	p, ok := o.disp.(*partitioned)
	if r.js == nil || !ok {
		return ss
	}
	p.mu.Lock()
	newly := ss.Paused && !p.pauseSaved
	p.pauseSaved = ss.Paused
	p.mu.Unlock()
	if newly {
		return ss
	}
	return o.saved
}

// resumeFollowDelay is how long a partition stays paused before a resume
// made on another replica (the stored state no longer paused) resumes it:
// longer than the state loop's period, so that a pause is stored before
// it is compared.
const resumeFollowDelay = 5 * time.Second

// followResume resumes this replica's paused partitions once the stored
// sink state says an operator resumed the sink on another replica.
func (p *partitioned) followResume(now time.Time) {
	st := p.State()
	p.mu.Lock()
	if !st.Paused {
		p.pausedSince = time.Time{}
		p.mu.Unlock()
		return
	}
	if p.pausedSince.IsZero() {
		p.pausedSince = now
	}
	since := p.pausedSince
	p.mu.Unlock()
	if now.Sub(since) < resumeFollowDelay {
		return
	}
	if ss, err := p.store.SinkState(p.name); err == nil && !ss.Paused {
		p.log.Info().Msg("resumed on another replica: delivery resumes here too")
		p.Resume()
		p.mu.Lock()
		p.pausedSince = time.Time{}
		p.mu.Unlock()
	}
}

// guardedOutbox is a partition's outbox for one dispatcher that never
// undoes a rewind made elsewhere: a cursor write is dropped when the
// stored cursor went below the one this dispatcher last read or wrote
// (another replica, or the CLI, rewound the sink), and the dispatcher is
// told to reread it. Without it, the dispatcher's next flush would put
// its old position back over the rewind before the notice arrived.
type guardedOutbox struct {
	*jsstore.PartitionOutbox
	rewound func()
	mu      sync.Mutex
	last    map[string]uint64
}

func newGuardedOutbox(out *jsstore.PartitionOutbox, rewound func()) *guardedOutbox {
	return &guardedOutbox{PartitionOutbox: out, rewound: rewound, last: map[string]uint64{}}
}

// Cursor reads the stored cursor and remembers it.
func (g *guardedOutbox) Cursor(sink string) (uint64, error) {
	c, err := g.PartitionOutbox.Cursor(sink)
	if err == nil {
		g.mu.Lock()
		g.last[sink] = c
		g.mu.Unlock()
	}
	return c, err
}

// SetCursor writes the cursor unless a rewind lowered the stored one.
func (g *guardedOutbox) SetCursor(sink string, offset uint64) error {
	g.mu.Lock()
	last, known := g.last[sink]
	g.mu.Unlock()
	if known {
		if cur, err := g.PartitionOutbox.Cursor(sink); err == nil && cur < last {
			g.rewound()
			return nil
		}
	}
	if err := g.PartitionOutbox.SetCursor(sink, offset); err != nil {
		return err
	}
	g.mu.Lock()
	g.last[sink] = offset
	g.mu.Unlock()
	return nil
}

// PauseSaved reports whether this replica's last save of the named sink's
// state (on a jetstream store) saw one of its partitions paused: from
// then on its saves leave the stored pause to whoever resumes it. False
// with a bbolt store or an unknown sink.
func (r *Relay) PauseSaved(name string) bool {
	o := r.output(name)
	if o == nil {
		return false
	}
	p, ok := o.disp.(*partitioned)
	if !ok {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pauseSaved
}
