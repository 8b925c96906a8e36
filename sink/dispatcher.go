package sink

// The Dispatcher's configuration and lifecycle: DispatcherConfig and its
// defaults, NewDispatcher, Run, and the operator's controls (Reset, Rewind,
// Resume). One run of the delivery loop is a session (dispatcher_session.go);
// an attempt and its outcome are dispatcher_attempt.go; the read-ahead is
// dispatcher_credit.go; the store side, the Outbox and the cursor's
// persistence, is dispatcher_outbox.go; the snapshot State returns is
// dispatcher_state.go.

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/rs/zerolog"
)

// Dispatcher defaults.
const (
	DefaultMaxInFlight  = 16
	DefaultReadAhead    = 1024
	DefaultCursorFlush  = 200 * time.Millisecond
	DefaultDrainTimeout = 5 * time.Second
)

// DispatcherConfig configures a Dispatcher. Sink and Outbox are required;
// zero values elsewhere take the defaults.
type DispatcherConfig struct {
	Sink   Sink
	Filter Filter // nil: every event
	// MaxInFlight is the most Deliver calls under way at once (default
	// 16). Events of one task are never in flight together.
	MaxInFlight int
	// ReadAhead is the most events held in memory, read but not yet
	// delivered or dead-lettered (default 1024, at least 4×MaxInFlight).
	ReadAhead int
	Retry     RetryPolicy
	Outbox    Outbox
	Logger    zerolog.Logger
	// CursorFlush is how often the cursor is persisted (default 200ms);
	// it is also persisted when Run returns and before a Reset.
	CursorFlush time.Duration
	// DrainTimeout bounds how long Run waits, after its ctx ended, for
	// attempts under way; then their contexts are cancelled (default 5s).
	DrainTimeout time.Duration
	Observer     Observer // default NopObserver
	// Paused, when not empty, starts the dispatcher paused with this
	// reason: a pause persisted by an earlier run (e.g. a 410 Gone) holds
	// until Resume or Reset.
	Paused string
	// Clock reads the time of the backoff, the latencies and the state,
	// and runs every wait before a retry: of a delivery, a dead-letter
	// write, a failed outbox or cursor read (default SystemClock).
	Clock Clock
}

// Dispatcher delivers one sink's events from the outbox.
//
// It reads the outbox from the sink's cursor with a bounded read-ahead and
// keeps one FIFO queue per task (Data.TaskID): the head event of each task
// is attempted, up to MaxInFlight tasks at once, and a task's next event
// only after its head was acknowledged or dead-lettered. A failing event
// thus holds back only its own task (no head-of-line blocking), unless
// stuck tasks fill the whole read-ahead. Failed attempts are retried per
// the RetryPolicy, waiting at least a *RetryAfterError's Wait; a permanent
// error or an exhausted policy dead-letters the event; a *PauseError stops
// all delivery until Resume or Reset. The cursor is persisted as the
// contiguous watermark, every CursorFlush.
//
// Its methods are safe for concurrent use. Delivery is at least once: an
// event whose acknowledgement was not yet persisted is delivered again
// after a restart.
type Dispatcher struct {
	cfg  DispatcherConfig
	name string
	log  zerolog.Logger

	resumeCh chan struct{}     // buffered 1
	resetCh  chan *dispatchReq // served by the running loop
	life     sync.Mutex        // held while Run starts and by Reset when not running
	running  atomic.Bool       // Run is in its loop
	runDone  chan struct{}     // closed when the current Run leaves its loop
	mu       sync.Mutex        // guards st
	st       DispatcherState
	handoff  atomic.Pointer[Handoff] // what the last session left
}

type dispatchReq struct {
	fn   func() error
	done chan error // buffered 1
}

// EffectiveReadAhead is the read-ahead a Dispatcher of c keeps:
// ReadAhead, DefaultReadAhead if unset, and at least 4 × MaxInFlight
// (DefaultMaxInFlight if unset).
func (c DispatcherConfig) EffectiveReadAhead() int {
	inFlight := c.MaxInFlight
	if inFlight <= 0 {
		inFlight = DefaultMaxInFlight
	}
	ra := c.ReadAhead
	if ra <= 0 {
		ra = DefaultReadAhead
	}
	return max(ra, 4*inFlight)
}

// NewDispatcher returns a Dispatcher for cfg.Sink; nothing runs until Run.
func NewDispatcher(cfg DispatcherConfig) *Dispatcher {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	cfg.ReadAhead = cfg.EffectiveReadAhead()
	cfg.Retry = cfg.Retry.WithDefaults()
	if cfg.CursorFlush <= 0 {
		cfg.CursorFlush = DefaultCursorFlush
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.Observer == nil {
		cfg.Observer = NopObserver{}
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock
	}
	name := cfg.Sink.Name()
	return &Dispatcher{
		cfg:      cfg,
		name:     name,
		log:      cfg.Logger.With().Str("sink", name).Logger(),
		resumeCh: make(chan struct{}, 1),
		resetCh:  make(chan *dispatchReq),
		st:       DispatcherState{Sink: name, Paused: cfg.Paused != "", PauseReason: cfg.Paused},
	}
}

// Name returns the sink's name.
func (d *Dispatcher) Name() string { return d.name }

// Run delivers events until ctx ends. It then stops starting attempts,
// waits up to DrainTimeout for the attempts under way (their contexts are
// not derived from ctx), cancels the rest, persists the cursor and returns
// nil, or the error of that last cursor write. It returns an error at once
// if the cursor cannot be read at the start or Run is already running. Run
// does not close the sink.
func (d *Dispatcher) Run(ctx context.Context) error {
	d.life.Lock()
	if d.running.Load() {
		d.life.Unlock()
		return fmt.Errorf("dispatcher %s: already running", d.name)
	}
	cursor, err := d.cfg.Outbox.Cursor(d.name)
	if err != nil {
		d.life.Unlock()
		return fmt.Errorf("dispatcher %s: read cursor: %w", d.name, err)
	}
	done := make(chan struct{})
	d.runDone = done
	d.running.Store(true)
	d.mu.Lock()
	d.st.Running = true
	d.mu.Unlock()
	d.life.Unlock()
	defer func() {
		d.mu.Lock()
		d.st.Running, d.st.InFlight, d.st.Pending = false, 0, 0
		d.mu.Unlock()
		d.running.Store(false)
		close(done)
	}()

	notify := d.cfg.Outbox.Notify(ctx)
	d.log.Debug().Uint64("cursor", cursor).Msg("dispatcher started")
	for {
		req, flushErr := d.runSession(ctx, cursor, notify)
		if req == nil {
			d.log.Debug().Uint64("cursor", d.State().Persisted).Msg("dispatcher stopped")
			return flushErr
		}
		var err error
		if req.fn != nil {
			err = req.fn()
		}
		d.clearPause()
		cursor, err = d.reloadCursor(ctx, err)
		req.done <- err
		if ctx.Err() != nil {
			return nil
		}
	}
}

// reloadCursor reads the cursor after a Reset function ran, retrying while
// the store fails and ctx lasts; fnErr is passed through.
func (d *Dispatcher) reloadCursor(ctx context.Context, fnErr error) (uint64, error) {
	var bo *backoff.ExponentialBackOff
	for {
		c, err := d.cfg.Outbox.Cursor(d.name)
		if err == nil {
			d.mu.Lock()
			d.st.Cursor, d.st.Persisted = c, c
			d.mu.Unlock()
			return c, fnErr
		}
		d.log.Error().Err(err).Msg("read cursor after reset")
		if fnErr == nil {
			fnErr = fmt.Errorf("dispatcher %s: read cursor: %w", d.name, err)
		}
		if bo == nil {
			bo = newStoreBackOff(d.cfg.Clock.Now)
		}
		if !sleep(d.cfg.Clock, bo.NextBackOff(), ctx.Done()) {
			return 0, fnErr
		}
	}
}

// Reset stops delivery, persists the cursor, runs fn (typically the
// store's rewind of this sink), reloads the cursor from the Outbox and
// resumes delivery from it, clearing a pause. Attempts under way are
// cancelled first; their events are delivered again later. When Run is not
// running, Reset only runs fn. It blocks until fn returned and returns its
// error, or ctx.Err() if ctx ends first (fn may then still run).
func (d *Dispatcher) Reset(ctx context.Context, fn func() error) error {
	d.life.Lock()
	if !d.running.Load() {
		defer d.life.Unlock()
		var err error
		if fn != nil {
			err = fn()
		}
		d.clearPause()
		if c, cerr := d.cfg.Outbox.Cursor(d.name); cerr == nil {
			d.mu.Lock()
			d.st.Cursor, d.st.Persisted = c, c
			d.mu.Unlock()
		}
		return err
	}
	runDone := d.runDone
	d.life.Unlock()
	req := &dispatchReq{fn: fn, done: make(chan error, 1)}
	select {
	case d.resetCh <- req:
	case <-runDone:
		return d.Reset(ctx, fn) // Run ended meanwhile
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Rewind makes the dispatcher deliver again every event from offset from
// on (from 0 counts as 1): it is Reset with a function that sets the
// sink's cursor to from-1 through the Outbox. Use Reset instead to run the
// store's own rewind (which may also clear dead letters).
func (d *Dispatcher) Rewind(ctx context.Context, from uint64) error {
	if from == 0 {
		from = 1
	}
	return d.Reset(ctx, func() error { return d.cfg.Outbox.SetCursor(d.name, from-1) })
}

// Resume clears a pause caused by a *PauseError; the paused event is
// attempted again at once. It does nothing when not paused and does not
// block.
func (d *Dispatcher) Resume() {
	d.mu.Lock()
	paused := d.st.Paused
	d.mu.Unlock()
	if !paused {
		return
	}
	if !d.running.Load() {
		d.clearPause()
		return
	}
	select {
	case d.resumeCh <- struct{}{}:
	default:
	}
}

func (d *Dispatcher) clearPause() {
	d.mu.Lock()
	d.st.Paused, d.st.PauseReason = false, ""
	d.mu.Unlock()
	// A Resume sent before the loop saw it is now void.
	select {
	case <-d.resumeCh:
	default:
	}
}
