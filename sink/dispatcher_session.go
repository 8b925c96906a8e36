package sink

// One run of a Dispatcher's delivery loop, from a cursor until Run's ctx
// ends or a Reset: dispatchSession, its per-task queues and pending heap,
// the loop that starts attempts within MaxInFlight, the watermark, the retry
// timers, and the drain that ends it.

import (
	"container/heap"
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/incs-relay/incs-relay/diff"
)

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
			// Take the outcomes already waiting too: one pass of the
			// loop (and of dispatch) per burst, not per attempt.
			for n := len(s.results); n > 0; n-- {
				s.handle(<-s.results)
			}
		case a := <-s.asyncDone:
			s.finishAsync(a)
			for n := len(s.asyncDone); n > 0; n-- {
				s.finishAsync(<-s.asyncDone)
			}
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
	h := &Handoff{LastRead: s.lastRead, pending: make(map[uint64]struct{}, len(s.pending))}
	for _, it := range s.pending {
		h.pending[it.ev.Offset] = struct{}{}
	}
	d.handoff.Store(h)
	return err
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
