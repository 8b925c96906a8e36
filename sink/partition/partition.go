package partition

// The Dispatcher: one sink's dispatchers for the partitions this replica
// owns, started and stopped as the assignment changes, and the
// Assignment interface it is driven by.

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/sink"
)

// Assignment is what a Dispatcher needs of the store: how many partitions
// there are, which of them this replica delivers and who delivered the
// others, and the sink state every replica shares. *jsstore.Store
// satisfies it.
type Assignment interface {
	// Partitions returns the number of delivery partitions.
	Partitions() int
	// Ownership returns this replica's id and the partitions it
	// delivers now.
	Ownership() (self string, owned []int)
	// SinkPaused reports whether the sink's stored state says paused,
	// and the reason stored with the pause.
	SinkPaused(sink string) (paused bool, reason string, err error)

	// Claim makes this replica the owner of the sink's partition p if no
	// other live replica holds it (its record is released, or its
	// owner's membership lapsed), bumping the owner generation, and
	// returns that generation; ok is false while another holds it.
	Claim(sink string, p int) (gen uint64, ok bool, err error)
	// CursorOf returns the sink's cursor in partition p, the offsets
	// above it already delivered or dead-lettered, the replica holding p
	// ("" when released) and the owner generation.
	CursorOf(sink string, p int) (offset uint64, done []uint64, owner string, gen uint64, err error)
	// SetCursorAs stores the cursor and the offsets done above it only
	// while p is this replica's at gen; else it stores nothing and
	// returns ok false with the owner and generation now (this replica
	// at a later generation: an operator rewound the cursor).
	SetCursorAs(sink string, p int, gen, offset uint64, done []uint64) (ok bool, owner string, now uint64, err error)
	// Release gives up this replica's hold of p (taken at gen, or moved
	// on by a rewind since), keeping its cursor.
	Release(sink string, p int, gen uint64) error
}

// Config configures a Dispatcher. Dispatcher, Assignment and Outbox are
// required.
type Config struct {
	// Dispatcher is the sink's dispatcher config as for a single store.
	// Each partition's dispatcher gets a copy with Outbox, Paused,
	// MaxInFlight, ReadAhead and Logger set: MaxInFlight and ReadAhead
	// are shared out over the partitions (at least one each, and a read
	// ahead of at least four times the deliveries under way, as
	// sink.NewDispatcher keeps), so the replicas together keep about
	// MaxInFlight deliveries under way and the sink's read-ahead in
	// memory, as one dispatcher on a single store would; the pause comes
	// from the stored sink state. Dispatcher.Sink names the sink.
	Dispatcher sink.DispatcherConfig
	// Assignment is the store's partition assignment.
	Assignment Assignment
	// Outbox returns partition p's outbox, which each partition's
	// dispatcher reads events from and records dead letters in; it reads
	// and writes the partition's cursor through Assignment (CursorOf,
	// SetCursorAs), fenced on the generation it claimed, never through
	// this outbox.
	Outbox func(p int) sink.Outbox
	// Changes receives after each change of the assignment (buffered 1,
	// sent to without blocking); the assignment is also checked every
	// second, and a partition another replica still holds is asked for
	// every claimRetry. Each Dispatcher needs its own channel.
	Changes <-chan struct{}
}

// Dispatcher delivers one sink's events of the partitions the store
// assigns to this replica: one *sink.Dispatcher per owned partition, each
// on that partition's outbox, started and stopped as the assignment
// changes. Its methods are safe for concurrent use.
type Dispatcher struct {
	name    string
	self    string // this replica
	store   Assignment
	outbox  func(p int) sink.Outbox
	newDisp func(out *fencedOutbox, p int, paused string) *sink.Dispatcher
	log     zerolog.Logger
	changes <-chan struct{} // role changes
	rewind  chan struct{}   // buffered 1: the sink was rewound somewhere

	life sync.Mutex // held while partitions start or stop, and by Reset
	mu   sync.Mutex // guards runs and gone
	runs map[int]*partRun
	// unreleased holds each partition stopped here whose last cursor
	// write or release the store refused (failed), to try again.
	unreleased map[int]pendingRelease
	gone       sink.DispatcherState // totals of dispatchers that stopped
	// running is true while Run is in its loop.
	running bool
	// pausedSince is when followResume first saw a partition paused.
	pausedSince time.Time
	// pauseSaved is whether the last state save saw a partition paused
	// (NotePause).
	pauseSaved bool
}

// partRun is one partition's running dispatcher.
type partRun struct {
	d      *sink.Dispatcher
	out    *fencedOutbox
	cancel context.CancelFunc
	done   chan struct{}
}

// minPartReadAhead is the least read-ahead of a partition's dispatcher:
// one full read (a dispatcher reads up to 256 events at a time), so that
// a partition's reads are not cut short.
const minPartReadAhead = 256

// New returns the partitioned delivery of cfg.Dispatcher.Sink; nothing
// runs until Run.
func New(cfg Config) *Dispatcher {
	dc := cfg.Dispatcher
	parts := cfg.Assignment.Partitions()
	perPart := max(1, (dc.MaxInFlight+parts-1)/parts)
	readAheadPerPart := max(minPartReadAhead, (dc.EffectiveReadAhead()+parts-1)/parts)
	log := dc.Logger
	name := dc.Sink.Name()
	self, _ := cfg.Assignment.Ownership()
	return &Dispatcher{name: name, self: self, store: cfg.Assignment, outbox: cfg.Outbox, changes: cfg.Changes,
		log: log.With().Str("sink", name).Logger(), rewind: make(chan struct{}, 1), runs: map[int]*partRun{}, unreleased: map[int]pendingRelease{},
		newDisp: func(out *fencedOutbox, p int, paused string) *sink.Dispatcher {
			c := dc
			c.Outbox, c.Paused, c.MaxInFlight, c.ReadAhead = out, paused, perPart, readAheadPerPart
			c.Filter = out.filter(dc.Filter)
			if dc.Observer != nil {
				c.Observer = sink.MultiObserver{out, dc.Observer}
			} else {
				c.Observer = out
			}
			c.Logger = log.With().Int("partition", p).Logger()
			return sink.NewDispatcher(c)
		}}
}

// Rewound tells Run that the sink was rewound (by any replica, e.g. a
// notice on jsstore's Rewound channel): its running partitions reread
// their cursors. It never blocks.
func (p *Dispatcher) Rewound() {
	select {
	case p.rewind <- struct{}{}:
	default:
	}
}

// Run keeps one dispatcher running per owned partition until ctx ends,
// then stops them all (each drains and persists its cursor). It returns
// nil.
func (p *Dispatcher) Run(ctx context.Context) error {
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
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		_, owned := p.store.Ownership()
		if waiting := p.sync(ctx, owned); waiting {
			retry.Reset(claimRetry)
		}
		select {
		case <-ctx.Done():
			p.sync(ctx, nil)
			return nil
		case <-p.changes:
		case <-retry.C:
		case now := <-check.C:
			p.followResume(now)
		case <-p.rewind:
			p.reread(context.WithoutCancel(ctx))
		}
	}
}

// claimRetry is how often a partition assigned to this replica that
// another replica still holds (draining, writing its last cursor) is
// asked for again.
const claimRetry = 100 * time.Millisecond

// sync stops the dispatchers of partitions no longer owned, waiting for
// each to drain and write its last cursor before it releases the
// partition, and starts one for every owned partition without one that it
// can claim. It reports whether some owned partition is still held by
// another replica (to ask again after claimRetry). A dispatcher that was
// fenced (its partition taken while it ran) has stopped by itself and
// releases nothing.
func (p *Dispatcher) sync(ctx context.Context, owned []int) (waiting bool) {
	p.life.Lock()
	defer p.life.Unlock()
	p.mu.Lock()
	var stopping []int
	for part, run := range p.runs {
		if !slices.Contains(owned, part) || run.ended() {
			stopping = append(stopping, part)
			run.cancel()
		}
	}
	retry := maps.Clone(p.unreleased) // of earlier syncs
	p.mu.Unlock()
	for _, part := range stopping {
		p.stop(part)
	}
	for part, pr := range retry {
		if !slices.Contains(owned, part) {
			p.finish(part, pr.out, pr.watermark)
		}
	}
	if ctx.Err() != nil {
		return false
	}
	var started []int
	for _, part := range owned {
		p.mu.Lock()
		_, ok := p.runs[part]
		p.mu.Unlock()
		if ok {
			continue
		}
		gen, ok, err := p.store.Claim(p.name, part)
		if err != nil {
			p.log.Warn().Err(err).Int("partition", part).Msg("claim partition")
		}
		if !ok {
			waiting = true
			continue
		}
		p.mu.Lock()
		delete(p.unreleased, part)
		p.mu.Unlock()
		p.start(ctx, part, gen)
		started = append(started, part)
	}
	if len(stopping) > 0 || len(started) > 0 {
		p.log.Debug().Ints("started", started).Ints("stopped", stopping).Msg("delivering partitions")
	}
	return waiting
}

// stop waits for partition part's dispatcher, cancelled, to stop (it
// drains and writes its last cursor), keeps its totals, and finishes the
// handoff.
func (p *Dispatcher) stop(part int) {
	p.mu.Lock()
	run := p.runs[part]
	delete(p.runs, part)
	p.mu.Unlock()
	<-run.done
	st := run.d.State()
	p.addGone(st)
	p.finish(part, run.out, st.Cursor)
}

// finish writes a stopped partition's last cursor (watermark, with the
// offsets done above it) and only then releases the partition, unless it
// was fenced. When the store fails, both are tried again at every sync
// until they succeed or this replica runs the partition again: until
// then no other replica can claim it, and none starts from a cursor
// older than this replica's.
func (p *Dispatcher) finish(part int, out *fencedOutbox, watermark uint64) {
	err := out.flushLast(p.name, watermark)
	gen, fenced := out.state()
	if err == nil && !fenced {
		err = p.store.Release(p.name, part, gen)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil && !fenced {
		p.log.Warn().Err(err).Int("partition", part).Msg("hand the partition over; will try again")
		p.unreleased[part] = pendingRelease{out: out, watermark: watermark}
		return
	}
	delete(p.unreleased, part)
}

// pendingRelease is a stopped partition whose last cursor write or
// release the store refused.
type pendingRelease struct {
	out       *fencedOutbox
	watermark uint64
}

// start runs a dispatcher for partition part, claimed at gen.
func (p *Dispatcher) start(ctx context.Context, part int, gen uint64) {
	paused := ""
	if stored, reason, err := p.store.SinkPaused(p.name); err == nil && stored {
		paused = reason
		if paused == "" {
			paused = "paused by another replica or an earlier run"
		}
		// The stored state already says paused: this replica's saves
		// must not write that pause again over a resume made elsewhere
		// (NotePause), and nothing reports this pause to the state
		// saver, since the dispatcher starts with it.
		p.mu.Lock()
		p.pauseSaved = true
		p.mu.Unlock()
	}
	rctx, cancel := context.WithCancel(ctx)
	out := newFencedOutbox(p.outbox(part), p.store, p.self, part, gen, p.Rewound, cancel)
	d := p.newDisp(out, part, paused)
	run := &partRun{d: d, out: out, cancel: cancel, done: make(chan struct{})}
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

// ended reports whether the run's dispatcher stopped by itself.
func (r *partRun) ended() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func (p *Dispatcher) addGone(st sink.DispatcherState) {
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

func (p *Dispatcher) runList() []*partRun {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*partRun, 0, len(p.runs))
	for _, run := range p.runs {
		out = append(out, run)
	}
	return out
}

// reread makes every running partition reread its cursor after a rewind
// made elsewhere.
func (p *Dispatcher) reread(ctx context.Context) {
	p.life.Lock()
	defer p.life.Unlock()
	for _, run := range p.runList() {
		if err := run.d.Reset(ctx, nil); err != nil {
			p.log.Warn().Err(err).Msg("reread cursor after a rewind")
		}
	}
}

// State sums the partitions' states, with the totals of the dispatchers
// of partitions no longer delivered here. Cursor and Persisted stay 0:
// the sink's cursor is the store's (the lowest over the partitions).
func (p *Dispatcher) State() sink.DispatcherState {
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

// PartitionStates returns the state of each partition's dispatcher
// running here: its cursor is ahead of the store's by up to a cursor
// flush.
func (p *Dispatcher) PartitionStates() map[int]sink.DispatcherState {
	p.mu.Lock()
	runs := make(map[int]*partRun, len(p.runs))
	maps.Copy(runs, p.runs)
	p.mu.Unlock()
	out := make(map[int]sink.DispatcherState, len(runs))
	for part, run := range runs {
		out[part] = run.d.State()
	}
	return out
}

// Reset stops every running partition (each persists its cursor), runs fn
// once they all stopped (the store's rewind of the sink), and resumes them
// from the cursors fn left, clearing pauses. fn may be nil.
func (p *Dispatcher) Reset(ctx context.Context, fn func() error) error {
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
func (p *Dispatcher) Resume() {
	for _, run := range p.runList() {
		run.d.Resume()
	}
}

// NotePause records whether the sink state about to be saved says paused
// and reports whether that pause is new: paused, while the last state
// noted (or a partition started under a stored pause) was not. The sink
// state all replicas share is written only on a new pause, so that a
// replica neither clears another's pause nor brings back one an operator
// resumed elsewhere (its own paused partitions follow that resume).
func (p *Dispatcher) NotePause(paused bool) (newly bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	newly = paused && !p.pauseSaved
	p.pauseSaved = paused
	return newly
}

// PauseSaved reports whether the stored sink state is known to hold this
// replica's pause: the last NotePause said paused, or a partition started
// under a stored pause since.
func (p *Dispatcher) PauseSaved() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pauseSaved
}

// resumeFollowDelay is how long a partition stays paused before a resume
// made on another replica (the stored state no longer paused) resumes it:
// longer than the state loop's period, so that a pause is stored before
// it is compared.
const resumeFollowDelay = 5 * time.Second

// followResume resumes this replica's paused partitions once the stored
// sink state says an operator resumed the sink on another replica.
func (p *Dispatcher) followResume(now time.Time) {
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
	if paused, _, err := p.store.SinkPaused(p.name); err == nil && !paused {
		p.log.Info().Msg("resumed on another replica: delivery resumes here too")
		p.Resume()
		p.mu.Lock()
		p.pausedSince = time.Time{}
		p.mu.Unlock()
	}
}
