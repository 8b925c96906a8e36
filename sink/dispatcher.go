package sink

import (
	"container/heap"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/diff"
)

// Outbox is the part of the store a Dispatcher uses; every store.Store implements
// it. All methods are called from several goroutines of one Dispatcher and
// from several Dispatchers at once.
type Outbox interface {
	// Read returns up to limit events with offset >= from, in offset
	// order, with Body and StoredAt set. It returns an empty slice when
	// there are none.
	Read(ctx context.Context, from uint64, limit int) ([]diff.Event, error)
	// Cursor returns the offset through which the sink has every event
	// delivered or dead-lettered; 0 means none.
	Cursor(sink string) (uint64, error)
	// SetCursor persists the sink's cursor. It must accept a lower value
	// than the current one (Rewind relies on that).
	SetCursor(sink string, offset uint64) error
	// DeadLetter records that the sink gave up on the event at offset.
	DeadLetter(sink string, offset uint64, attempts int, lastErr string) error
	// Notify returns a new subscription: a channel (buffered 1, sent to
	// without blocking) that receives after each commit that appended
	// events.
	Notify() <-chan struct{}
}

// Dispatcher defaults.
const (
	DefaultMaxInFlight  = 16
	DefaultReadAhead    = 1024
	DefaultCursorFlush  = 200 * time.Millisecond
	DefaultDrainTimeout = 5 * time.Second
)

// dispatchReadBatch is the most events one Outbox.Read returns.
const dispatchReadBatch = 256

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

// DispatcherState is a snapshot of a Dispatcher.
type DispatcherState struct {
	Sink string
	// Cursor is the contiguous watermark: every event at or below it is
	// delivered, dead-lettered or filtered out. Persisted is the last
	// value written to the store; it lags Cursor by up to CursorFlush.
	Cursor    uint64
	Persisted uint64
	Running   bool
	InFlight  int // Deliver calls under way
	Pending   int // events read and not yet done, in flight or waiting
	Paused    bool
	// PauseReason is the error that paused the sink.
	PauseReason    string
	LastError      string
	LastErrorAt    time.Time
	LastDeliveryAt time.Time
	// Failing is true when the last attempt failed and none succeeded
	// since.
	Failing                          bool
	Delivered, Retried, DeadLettered uint64
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
}

type dispatchReq struct {
	fn   func() error
	done chan error // buffered 1
}

// NewDispatcher returns a Dispatcher for cfg.Sink; nothing runs until Run.
func NewDispatcher(cfg DispatcherConfig) *Dispatcher {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.ReadAhead <= 0 {
		cfg.ReadAhead = DefaultReadAhead
	}
	cfg.ReadAhead = max(cfg.ReadAhead, 4*cfg.MaxInFlight)
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

	notify := d.cfg.Outbox.Notify()
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

// State returns a snapshot of the dispatcher's state.
func (d *Dispatcher) State() DispatcherState {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st
}

// dispatchItem is one event of the outbox being delivered.
type dispatchItem struct {
	ev       diff.Event
	heapIdx  int
	attempts int
	bo       *backoff.ExponentialBackOff // created at the first retryable failure
	lastErr  error
	// deadLetter is set once delivery was given up; the dead-letter write
	// itself is then what the next attempt retries.
	deadLetter bool
	storeBo    *backoff.ExponentialBackOff // while the dead-letter write fails
	stopTimer  func() bool                 // stops the pending retry
	resumes    int                         // the session's resumes when its attempt began
}

// dispatchTask is the queue of one task's events; queue[0] is either in
// the ready list, in flight, or waiting for a retry timer.
type dispatchTask struct {
	id    int64
	queue []*dispatchItem
}

type dispatchOutcome int

const (
	outcomeDelivered dispatchOutcome = iota
	outcomeRetry
	outcomeDeadLettered
	outcomePaused
	outcomeAborted // the session cancelled the attempt
)

// asyncResult is what an AsyncSink reported for one attempt.
type asyncResult struct {
	it  *dispatchItem
	err error
}

type dispatchResult struct {
	it      *dispatchItem
	outcome dispatchOutcome
	wait    time.Duration
	err     error
	at      time.Time
}

// dispatchHeap orders pending items by offset; its minimum bounds the
// watermark.
type dispatchHeap []*dispatchItem

func (h dispatchHeap) Len() int           { return len(h) }
func (h dispatchHeap) Less(i, j int) bool { return h[i].ev.Offset < h[j].ev.Offset }
func (h dispatchHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}
func (h *dispatchHeap) Push(x any) {
	it := x.(*dispatchItem)
	it.heapIdx = len(*h)
	*h = append(*h, it)
}
func (h *dispatchHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	it.heapIdx = -1
	return it
}

// dispatchCredits bounds the read-ahead: the reader takes a credit per
// event read, the loop gives it back once the event is done.
type dispatchCredits struct {
	mu     sync.Mutex
	avail  int
	signal chan struct{} // buffered 1
}

// acquire waits until credits are free and takes up to n of them. It
// waits up to 2ms for at least low credits so that reads are not one event
// each; it returns 0 when stop is closed.
func (c *dispatchCredits) acquire(n, low int, stop <-chan struct{}) int {
	var (
		t       *time.Timer
		expired <-chan time.Time
		late    bool
	)
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		c.mu.Lock()
		avail := c.avail
		if avail >= low || (avail > 0 && late) {
			k := min(avail, n)
			c.avail -= k
			c.mu.Unlock()
			return k
		}
		c.mu.Unlock()
		if avail > 0 && t == nil {
			t = time.NewTimer(2 * time.Millisecond)
			expired = t.C
		}
		select {
		case <-c.signal:
		case <-expired:
			late = true
		case <-stop:
			return 0
		}
	}
}

func (c *dispatchCredits) release(n int) {
	c.mu.Lock()
	c.avail += n
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

// dispatchSession is one run of the delivery loop, from a cursor until ctx
// ends or a Reset. All fields without a comment are owned by the loop
// goroutine.
type dispatchSession struct {
	d *Dispatcher

	attemptCtx     context.Context // for Deliver; not derived from Run's ctx
	cancelAttempts context.CancelFunc
	stop           chan struct{} // closed when the session ends: reader, flusher, timers

	work    chan *dispatchItem  // to workers; cap MaxInFlight
	results chan dispatchResult // from workers; cap MaxInFlight

	async     AsyncSink          // the sink, if it delivers asynchronously
	asyncDone chan asyncResult   // from AsyncSink callbacks; cap MaxInFlight
	retries   chan *dispatchItem // from retry timers
	batches   chan []diff.Event  // from the reader
	credits   dispatchCredits    // shared with the reader
	wg        sync.WaitGroup     // reader and flusher
	workers   sync.WaitGroup     // workers

	tasks    map[int64]*dispatchTask
	ready    []*dispatchTask // FIFO of tasks whose head may be attempted
	pending  dispatchHeap
	timers   map[*dispatchItem]struct{}
	lastRead uint64 // highest offset received from the reader
	mark     uint64 // contiguous watermark
	inFlight int
	resumes  int // Resume calls received
	paused   bool
	draining bool

	watermark atomic.Uint64 // mark, for the flusher
	persisted atomic.Uint64 // last cursor written
	flushMu   sync.Mutex    // serializes cursor writes
}

// runSession delivers from cursor until ctx ends (it returns nil) or a
// Reset arrives (it returns the request). Either way the session drained
// and persisted its cursor; flushErr is that write's error.
func (d *Dispatcher) runSession(ctx context.Context, cursor uint64, notify <-chan struct{}) (req *dispatchReq, flushErr error) {
	n := d.cfg.MaxInFlight
	attemptCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &dispatchSession{
		d:              d,
		attemptCtx:     attemptCtx,
		cancelAttempts: cancel,
		stop:           make(chan struct{}),
		work:           make(chan *dispatchItem, n),
		results:        make(chan dispatchResult, n),
		asyncDone:      make(chan asyncResult, n),
		retries:        make(chan *dispatchItem),
		batches:        make(chan []diff.Event),
		tasks:          make(map[int64]*dispatchTask),
		timers:         make(map[*dispatchItem]struct{}),
		lastRead:       cursor,
		mark:           cursor,
	}
	s.credits.avail = d.cfg.ReadAhead
	s.credits.signal = make(chan struct{}, 1)
	s.watermark.Store(cursor)
	s.persisted.Store(cursor)
	d.mu.Lock()
	d.st.Cursor, d.st.Persisted = cursor, cursor
	paused := d.st.Paused
	d.mu.Unlock()
	s.paused = paused

	s.wg.Add(2)
	go s.readLoop(cursor+1, notify)
	go s.flushLoop()
	workers := n
	if as, ok := d.cfg.Sink.(AsyncSink); ok {
		// Attempts need no goroutine; workers only write dead letters.
		s.async = as
		workers = min(n, 4)
	}
	s.workers.Add(workers)
	for range workers {
		go s.workLoop()
	}

	for {
		s.dispatch()
		select {
		case <-ctx.Done():
			return nil, s.drain(false)
		case req := <-d.resetCh:
			return req, s.drain(true)
		case evs := <-s.batches:
			s.add(evs)
		case r := <-s.results:
			s.handle(r)
		case a := <-s.asyncDone:
			s.finishAsync(a)
		case it := <-s.retries:
			s.retryDue(it)
		case <-d.resumeCh:
			s.resumes++
			if s.paused {
				s.paused = false
				d.clearPause()
				d.log.Info().Msg("delivery resumed")
			}
		}
	}
}

// drain ends the session: it stops the reader and timers, lets attempts
// under way finish (cancelling them at once when cancelNow, else after
// DrainTimeout), and persists the cursor.
func (s *dispatchSession) drain(cancelNow bool) error {
	d := s.d
	s.draining = true
	close(s.stop)
	if cancelNow {
		s.cancelAttempts()
	}
	grace := time.NewTimer(d.cfg.DrainTimeout)
	defer grace.Stop()
	cancelled := cancelNow
	if cancelled {
		grace.Reset(time.Second)
	}
wait:
	for s.inFlight > 0 {
		select {
		case r := <-s.results:
			s.handle(r)
		case a := <-s.asyncDone:
			s.finishAsync(a)
		case <-grace.C:
			if cancelled {
				d.log.Error().Int("in_flight", s.inFlight).Msg("sink ignores cancellation; leaving attempts behind")
				break wait
			}
			d.log.Warn().Int("in_flight", s.inFlight).Dur("grace", d.cfg.DrainTimeout).Msg("cancelling attempts still under way")
			s.cancelAttempts()
			cancelled = true
			grace.Reset(time.Second)
		}
	}
	close(s.work)
	if s.inFlight == 0 {
		s.workers.Wait()
	}
	s.cancelAttempts()
	for it := range s.timers {
		it.stopTimer()
	}
	s.wg.Wait()
	err := s.flush()
	d.mu.Lock()
	d.st.InFlight, d.st.Pending = 0, 0
	d.mu.Unlock()
	return err
}

// flush persists the watermark if it moved.
func (s *dispatchSession) flush() error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	w := s.watermark.Load()
	if w == s.persisted.Load() {
		return nil
	}
	if err := s.d.cfg.Outbox.SetCursor(s.d.name, w); err != nil {
		return fmt.Errorf("dispatcher %s: persist cursor %d: %w", s.d.name, w, err)
	}
	s.persisted.Store(w)
	s.d.mu.Lock()
	s.d.st.Persisted = w
	s.d.mu.Unlock()
	return nil
}

func (s *dispatchSession) flushLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.d.cfg.CursorFlush)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if err := s.flush(); err != nil {
				s.d.log.Error().Err(err).Msg("persist cursor")
			}
		}
	}
}

// readLoop reads the outbox from offset from on into s.batches, within the
// read-ahead credits, waiting on notify when it caught up.
func (s *dispatchSession) readLoop(from uint64, notify <-chan struct{}) {
	defer s.wg.Done()
	d := s.d
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	low := min(dispatchReadBatch, d.cfg.ReadAhead/4)
	poll := time.NewTicker(2 * time.Second) // in case a notification is lost
	defer poll.Stop()
	var errBackOff *backoff.ExponentialBackOff // while reads fail
	pos := from
	for {
		n := s.credits.acquire(dispatchReadBatch, low, s.stop)
		if n == 0 {
			return
		}
		evs, err := d.cfg.Outbox.Read(ctx, pos, n)
		if err != nil {
			s.credits.release(n)
			if ctx.Err() != nil {
				return
			}
			d.log.Error().Err(err).Uint64("from", pos).Msg("read outbox")
			if errBackOff == nil {
				errBackOff = newStoreBackOff(d.cfg.Clock.Now)
			}
			if !sleep(d.cfg.Clock, errBackOff.NextBackOff(), s.stop) {
				return
			}
			continue
		}
		errBackOff = nil
		// Keep only events past pos, in order (a store bug must not
		// move the watermark backwards).
		k := 0
		for i := range evs {
			if evs[i].Offset >= pos {
				evs[k] = evs[i]
				pos = evs[i].Offset + 1
				k++
			}
		}
		evs = evs[:k]
		if k < n {
			s.credits.release(n - k)
		}
		if k > 0 {
			select {
			case s.batches <- evs:
			case <-s.stop:
				return
			}
		}
		if k < n {
			select {
			case <-notify:
			case <-poll.C:
			case <-s.stop:
				return
			}
		}
	}
}

func (s *dispatchSession) workLoop() {
	defer s.workers.Done()
	for it := range s.work {
		s.results <- s.attempt(it)
	}
}

// attempt makes one delivery attempt of it (or retries its dead-letter
// write) and classifies the outcome. It runs on a worker goroutine, which
// owns it until the result is received.
func (s *dispatchSession) attempt(it *dispatchItem) dispatchResult {
	d := s.d
	if it.deadLetter {
		return s.deadLetter(it)
	}
	it.attempts++
	err := d.cfg.Sink.Deliver(s.attemptCtx, &it.ev)
	r, dead := s.outcome(it, err)
	if dead {
		return s.deadLetter(it)
	}
	return r
}

// startAsync starts an attempt of it on an AsyncSink; its outcome arrives
// on s.asyncDone.
func (s *dispatchSession) startAsync(it *dispatchItem) {
	it.attempts++
	s.async.DeliverAsync(s.attemptCtx, &it.ev, func(err error) {
		s.asyncDone <- asyncResult{it: it, err: err} // never blocks: cap MaxInFlight
	})
}

// finishAsync applies the outcome of an asynchronous attempt; a dead letter
// is written by a worker, off the loop.
func (s *dispatchSession) finishAsync(a asyncResult) {
	r, dead := s.outcome(a.it, a.err)
	if dead {
		s.work <- a.it // never blocks: cap MaxInFlight; still in flight
		return
	}
	s.handle(r)
}

// outcome classifies the result err of one attempt of it. dead reports
// that it must go to the dead letters (it.deadLetter is then set).
func (s *dispatchSession) outcome(it *dispatchItem, err error) (r dispatchResult, dead bool) {
	d := s.d
	now := d.cfg.Clock.Now()
	if err == nil {
		return dispatchResult{it: it, outcome: outcomeDelivered, at: now}, false
	}
	if s.attemptCtx.Err() != nil {
		return dispatchResult{it: it, outcome: outcomeAborted, err: err, at: now}, false
	}
	it.lastErr = err
	kind, wait := classifyFailure(err)
	switch kind {
	case failPause:
		return dispatchResult{it: it, outcome: outcomePaused, err: err, at: now}, false
	case failPermanent:
		it.deadLetter = true
		return dispatchResult{}, true
	}
	if it.bo == nil {
		it.bo = newBackOff(d.cfg.Retry, d.cfg.Clock.Now)
	}
	next := it.bo.NextBackOff()
	if next == backoff.Stop {
		it.lastErr = fmt.Errorf("gave up after %d attempts in %s: %w", it.attempts, it.bo.GetElapsedTime().Round(time.Second), err)
		it.deadLetter = true
		return dispatchResult{}, true
	}
	// A Retry-After longer than the whole policy would only delay the
	// dead letter.
	wait = min(max(next, wait), d.cfg.Retry.MaxElapsed)
	return dispatchResult{it: it, outcome: outcomeRetry, wait: wait, err: err, at: now}, false
}

// deadLetter writes it to the dead letters. If the store fails, the write
// is retried like a delivery.
func (s *dispatchSession) deadLetter(it *dispatchItem) dispatchResult {
	d := s.d
	if err := d.cfg.Outbox.DeadLetter(d.name, it.ev.Offset, it.attempts, it.lastErr.Error()); err != nil {
		if it.storeBo == nil {
			it.storeBo = newStoreBackOff(d.cfg.Clock.Now)
		}
		return dispatchResult{it: it, outcome: outcomeRetry, wait: it.storeBo.NextBackOff(),
			err: fmt.Errorf("dispatcher %s: dead letter offset %d: %w", d.name, it.ev.Offset, err), at: d.cfg.Clock.Now()}
	}
	return dispatchResult{it: it, outcome: outcomeDeadLettered, err: it.lastErr, at: d.cfg.Clock.Now()}
}

// add queues events read from the outbox.
func (s *dispatchSession) add(evs []diff.Event) {
	filter := s.d.cfg.Filter
	for i := range evs {
		ev := &evs[i]
		if ev.Offset <= s.lastRead {
			s.credits.release(1)
			continue
		}
		s.lastRead = ev.Offset
		if filter != nil && !filter(ev) {
			s.credits.release(1)
			continue
		}
		it := &dispatchItem{ev: *ev}
		heap.Push(&s.pending, it)
		t := s.tasks[ev.Data.TaskID]
		if t == nil {
			t = &dispatchTask{id: ev.Data.TaskID}
			s.tasks[t.id] = t
		}
		t.queue = append(t.queue, it)
		if len(t.queue) == 1 {
			s.ready = append(s.ready, t)
		}
	}
	s.advance()
	s.d.mu.Lock()
	s.d.st.Pending = len(s.pending)
	s.d.mu.Unlock()
}

// dispatch starts attempts for ready tasks, within MaxInFlight.
func (s *dispatchSession) dispatch() {
	if s.paused || s.draining {
		return
	}
	started := false
	for s.inFlight < s.d.cfg.MaxInFlight && len(s.ready) > 0 {
		t := s.ready[0]
		s.ready[0] = nil
		s.ready = s.ready[1:]
		s.inFlight++
		it := t.queue[0]
		it.resumes = s.resumes
		if s.async != nil && !it.deadLetter {
			s.startAsync(it)
		} else {
			s.work <- it // never blocks: cap MaxInFlight
		}
		started = true
	}
	if started {
		s.d.mu.Lock()
		s.d.st.InFlight = s.inFlight
		s.d.mu.Unlock()
	}
}

// handle applies the result of an attempt.
func (s *dispatchSession) handle(r dispatchResult) {
	d := s.d
	s.inFlight--
	it := r.it
	ev := &it.ev
	switch r.outcome {
	case outcomeDelivered, outcomeDeadLettered:
		s.done(it)
		var latency time.Duration
		if !ev.StoredAt.IsZero() {
			latency = r.at.Sub(ev.StoredAt)
		}
		d.mu.Lock()
		d.st.InFlight, d.st.Pending = s.inFlight, len(s.pending)
		if r.outcome == outcomeDelivered {
			d.st.Delivered++
			d.st.LastDeliveryAt = r.at
			d.st.Failing = false
		} else {
			d.st.DeadLettered++
		}
		d.mu.Unlock()
		if r.outcome == outcomeDelivered {
			d.cfg.Observer.Delivered(d.name, ev, latency)
		} else {
			d.log.Error().Err(r.err).Uint64("offset", ev.Offset).Str("event_id", ev.ID).Int64("task_id", ev.Data.TaskID).
				Int("attempt", it.attempts).Msg("event dead-lettered")
			d.cfg.Observer.DeadLettered(d.name, ev, r.err)
			s.failed(r.err, r.at)
		}
	case outcomeRetry:
		d.mu.Lock()
		d.st.InFlight = s.inFlight
		d.st.Retried++
		d.mu.Unlock()
		d.log.Warn().Err(r.err).Uint64("offset", ev.Offset).Str("event_id", ev.ID).Int64("task_id", ev.Data.TaskID).
			Int("attempt", it.attempts).Dur("wait", r.wait).Msg("delivery failed; will retry")
		d.cfg.Observer.Retried(d.name, ev, it.attempts, r.err)
		s.failed(r.err, r.at)
		if !s.draining {
			s.schedule(it, r.wait)
		}
	case outcomePaused:
		t := s.tasks[ev.Data.TaskID]
		s.ready = append(s.ready, t) // attempted again after Resume
		if it.resumes < s.resumes {
			// The attempt began before an operator resumed the sink: its
			// answer is older than the resume, which wins. Attempt again.
			d.mu.Lock()
			d.st.InFlight = s.inFlight
			d.mu.Unlock()
			d.log.Warn().Err(r.err).Uint64("offset", ev.Offset).Str("event_id", ev.ID).Msg("an attempt begun before the resume asked to pause; attempting again")
			break
		}
		d.mu.Lock()
		d.st.InFlight = s.inFlight
		already := d.st.Paused
		d.st.Paused, d.st.PauseReason = true, r.err.Error()
		d.mu.Unlock()
		s.failed(r.err, r.at)
		if !s.paused && !already {
			d.log.Error().Err(r.err).Uint64("offset", ev.Offset).Str("event_id", ev.ID).Int64("task_id", ev.Data.TaskID).Msg("sink paused; delivery stopped until resumed or replayed")
			d.cfg.Observer.Paused(d.name, r.err)
		}
		s.paused = true
	case outcomeAborted:
		d.mu.Lock()
		d.st.InFlight = s.inFlight
		d.mu.Unlock()
	}
}

// failed records a failed attempt in the state.
func (s *dispatchSession) failed(err error, at time.Time) {
	d := s.d
	d.mu.Lock()
	was := d.st.Failing
	d.st.Failing = true
	d.st.LastError = err.Error()
	d.st.LastErrorAt = at
	d.mu.Unlock()
	if !was {
		d.cfg.Observer.Failing(d.name, err)
	}
}

// done removes a delivered or dead-lettered item and moves its task on.
func (s *dispatchSession) done(it *dispatchItem) {
	id := it.ev.Data.TaskID
	t := s.tasks[id]
	t.queue[0] = nil
	t.queue = t.queue[1:]
	if len(t.queue) > 0 {
		s.ready = append(s.ready, t)
	} else {
		delete(s.tasks, id)
	}
	heap.Remove(&s.pending, it.heapIdx)
	s.credits.release(1)
	s.advance()
}

// advance moves the watermark up to just below the lowest pending offset.
func (s *dispatchSession) advance() {
	m := s.lastRead
	if len(s.pending) > 0 {
		m = s.pending[0].ev.Offset - 1
	}
	if m > s.mark {
		s.mark = m
		s.watermark.Store(m)
		s.d.mu.Lock()
		s.d.st.Cursor = m
		s.d.mu.Unlock()
	}
}

// schedule makes it's task ready again after wait.
func (s *dispatchSession) schedule(it *dispatchItem, wait time.Duration) {
	s.timers[it] = struct{}{}
	it.stopTimer = s.d.cfg.Clock.AfterFunc(wait, func() {
		select {
		case s.retries <- it:
		case <-s.stop:
		}
	})
}

func (s *dispatchSession) retryDue(it *dispatchItem) {
	delete(s.timers, it)
	it.stopTimer = nil
	s.ready = append(s.ready, s.tasks[it.ev.Data.TaskID])
}
