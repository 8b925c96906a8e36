package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

// The dispatcher tests run against each dispatchTestOutbox of
// dispatchTestOutboxes, as subtests named after it (forEachOutbox): memOutbox
// below, in memory, and storeOutbox (dispatcher_store_test.go), the real
// bbolt store in t.TempDir().
type dispatchTestOutbox interface {
	Outbox
	// Append stores evs in order and returns them as stored: Offset, Body
	// and StoredAt set.
	Append(t testing.TB, evs ...diff.Event) []diff.Event
	// DeadLetters returns the sink's dead letters in offset order.
	DeadLetters(t testing.TB, sink string) []dispatchDeadLetter
}

// dispatchDeadLetter is one dead letter as the tests see it.
type dispatchDeadLetter struct {
	Offset   uint64
	Attempts int
	LastErr  string
}

// dispatchTestOutboxes makes the outboxes the dispatcher tests run on, by
// name.
var dispatchTestOutboxes = []struct {
	name string
	new  func(t testing.TB) dispatchTestOutbox
}{
	{"mem", func(testing.TB) dispatchTestOutbox { return newMemOutbox() }},
	{"bbolt", func(t testing.TB) dispatchTestOutbox { return newStoreOutbox(t) }},
}

// forEachOutbox runs test once on each of dispatchTestOutboxes, as a
// subtest with a new, empty outbox. A test of asyncTests passes that on to
// its subtests.
func forEachOutbox(t *testing.T, test func(t *testing.T, ob dispatchTestOutbox)) {
	_, async := asyncTests.Load(t)
	for _, o := range dispatchTestOutboxes {
		t.Run(o.name, func(st *testing.T) {
			if async {
				asyncTests.Store(st, true)
				st.Cleanup(func() { asyncTests.Delete(st) })
			}
			test(st, o.new(st))
		})
	}
}

// memOutbox is an in-memory Outbox with the store's semantics.
type memOutbox struct {
	mu      sync.Mutex
	events  []diff.Event // offset i+1
	cursors map[string]uint64
	dead    map[string][]dispatchDeadLetter
	subs    []chan struct{}
	sets    atomic.Int64 // SetCursor calls
	readErr error        // returned by Read while set
}

func newMemOutbox() *memOutbox {
	return &memOutbox{cursors: map[string]uint64{}, dead: map[string][]dispatchDeadLetter{}}
}

func (o *memOutbox) Append(t testing.TB, evs ...diff.Event) []diff.Event {
	o.mu.Lock()
	out := make([]diff.Event, len(evs))
	for i, ev := range evs {
		ev.Offset = uint64(len(o.events) + 1)
		body, err := json.Marshal(&ev)
		require.NoError(t, err)
		ev.Body = body
		ev.StoredAt = time.Now()
		o.events = append(o.events, ev)
		out[i] = ev
	}
	subs := slices.Clone(o.subs)
	o.mu.Unlock()
	for _, c := range subs {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	return out
}

func (o *memOutbox) DeadLetters(t testing.TB, sink string) []dispatchDeadLetter {
	o.mu.Lock()
	defer o.mu.Unlock()
	d := slices.Clone(o.dead[sink])
	slices.SortFunc(d, func(a, b dispatchDeadLetter) int { return int(a.Offset) - int(b.Offset) })
	return d
}

func (o *memOutbox) Read(ctx context.Context, from uint64, limit int) ([]diff.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.readErr != nil {
		return nil, o.readErr
	}
	if from == 0 {
		from = 1
	}
	if from > uint64(len(o.events)) {
		return nil, nil
	}
	evs := o.events[from-1:]
	if len(evs) > limit {
		evs = evs[:limit]
	}
	return slices.Clone(evs), nil
}

func (o *memOutbox) Cursor(sink string) (uint64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.cursors[sink], nil
}

func (o *memOutbox) SetCursor(sink string, offset uint64) error {
	o.sets.Add(1)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cursors[sink] = offset
	return nil
}

func (o *memOutbox) DeadLetter(sink string, offset uint64, attempts int, lastErr string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dead[sink] = append(o.dead[sink], dispatchDeadLetter{offset, attempts, lastErr})
	return nil
}

func (o *memOutbox) Notify() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := make(chan struct{}, 1)
	o.subs = append(o.subs, c)
	return c
}

var _ Outbox = (*memOutbox)(nil)

// dispatchTestEvent returns an event of the task as the diff step makes it.
func dispatchTestEvent(taskID, logID int64) diff.Event {
	task := &diff.Task{ID: taskID, Name: fmt.Sprintf("task %d", taskID), Status: diff.StatusInProgress,
		CreatedAt: "2026-04-08 17:00:00", UpdatedAt: "2026-04-08 17:22:06",
		Logs: []diff.Log{{ID: logID, Type: diff.LogStatusChanged, Status: 1, PreStatus: 0, CreatedAt: "2026-04-08 17:22:06"}}}
	evs, err := diff.Diff(task, nil, time.UTC)
	if err != nil || len(evs) != 1 {
		panic(fmt.Sprintf("diff: %v %d", err, len(evs)))
	}
	return evs[0]
}

// dispatchTestEvents returns n events spread over the given number of
// tasks, logs numbered from firstLog, in a random task order.
func dispatchTestEvents(n, tasks int, firstLog int64, rng *rand.Rand) []diff.Event {
	evs := make([]diff.Event, n)
	for i := range evs {
		evs[i] = dispatchTestEvent(int64(rng.IntN(tasks)+1), firstLog+int64(i))
	}
	return evs
}

// dispatchTestSink is a Sink whose Deliver is a func field. It records the
// acknowledged events and checks that no two events of one task are in
// flight together.
type dispatchTestSink struct {
	name    string
	deliver func(ctx context.Context, ev *diff.Event) error

	mu          sync.Mutex
	acked       []diff.Event
	attempts    map[uint64]int
	busyTasks   map[int64]bool
	inFlight    int
	maxInFlight int
	overlap     int // attempts that overlapped another of the same task
}

func newDispatchTestSink(name string, deliver func(ctx context.Context, ev *diff.Event) error) *dispatchTestSink {
	return &dispatchTestSink{name: name, deliver: deliver, attempts: map[uint64]int{}, busyTasks: map[int64]bool{}}
}

func (s *dispatchTestSink) Name() string { return s.name }

func (s *dispatchTestSink) Deliver(ctx context.Context, ev *diff.Event) error {
	s.mu.Lock()
	if s.busyTasks[ev.Data.TaskID] {
		s.overlap++
	}
	s.busyTasks[ev.Data.TaskID] = true
	s.attempts[ev.Offset]++
	s.inFlight++
	s.maxInFlight = max(s.maxInFlight, s.inFlight)
	s.mu.Unlock()
	var err error
	if s.deliver != nil {
		err = s.deliver(ctx, ev)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inFlight--
	delete(s.busyTasks, ev.Data.TaskID)
	if err == nil {
		c := *ev
		c.Body = slices.Clone(ev.Body)
		s.acked = append(s.acked, c)
	}
	return err
}

func (s *dispatchTestSink) Close(context.Context) error { return nil }

func (s *dispatchTestSink) Acked() []diff.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.acked)
}

func (s *dispatchTestSink) AckedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.acked)
}

func (s *dispatchTestSink) Attempts(offset uint64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts[offset]
}

// asyncTests holds the tests whose sinks startDispatcher makes AsyncSinks.
var asyncTests sync.Map // *testing.T -> bool

// asyncTestSink makes a Sink an AsyncSink: each attempt runs Deliver on a
// goroutine of its own and reports to done from there.
type asyncTestSink struct {
	Sink
	calls atomic.Int64
}

func (a *asyncTestSink) DeliverAsync(ctx context.Context, ev *diff.Event, done func(error)) {
	a.calls.Add(1)
	go func() { done(a.Deliver(ctx, ev)) }()
}

// TestDispatcher_AsyncSink runs the dispatcher's tests again with sinks
// that deliver asynchronously, as the JetStream sink does.
func TestDispatcher_AsyncSink(t *testing.T) {
	tests := map[string]func(*testing.T){
		"TaskOrderUnderConcurrency":        TestDispatcher_TaskOrderUnderConcurrency,
		"RetryBackoff":                     TestDispatcher_RetryBackoff,
		"RetryAfter":                       TestDispatcher_RetryAfter,
		"PermanentDeadLetters":             TestDispatcher_PermanentDeadLetters,
		"MaxElapsedDeadLetters":            TestDispatcher_MaxElapsedDeadLetters,
		"PauseResume":                      TestDispatcher_PauseResume,
		"ResumeWinsOverOlderPause":         TestDispatcher_ResumeWinsOverOlderPause,
		"CursorIsContiguousWatermark":      TestDispatcher_CursorIsContiguousWatermark,
		"PersistsCursorOnShutdown":         TestDispatcher_PersistsCursorOnShutdown,
		"ShutdownLetsAttemptsFinish":       TestDispatcher_ShutdownLetsAttemptsFinish,
		"ShutdownCancelsAfterDrainTimeout": TestDispatcher_ShutdownCancelsAfterDrainTimeout,
		"Rewind":                           TestDispatcher_Rewind,
		"ResetWhilePausedAndStopped":       TestDispatcher_ResetWhilePausedAndStopped,
		"SlowSinkDoesNotBlockAnother":      TestDispatcher_SlowSinkDoesNotBlockAnother,
		"ReadAheadBounded":                 TestDispatcher_ReadAheadBounded,
		"ReadErrorRetried":                 TestDispatcher_ReadErrorRetried,
	}
	for name, fn := range tests {
		t.Run(name, func(t *testing.T) {
			asyncTests.Store(t, true)
			t.Cleanup(func() { asyncTests.Delete(t) })
			fn(t)
		})
	}
}

// startDispatcher runs a Dispatcher for cfg until the test ends or stop is
// called; stop returns Run's error.
func startDispatcher(t *testing.T, cfg DispatcherConfig) (d *Dispatcher, stop func() error) {
	t.Helper()
	if _, ok := asyncTests.Load(t); ok {
		a := &asyncTestSink{Sink: cfg.Sink}
		cfg.Sink = a
		t.Cleanup(func() { assert.Positive(t, a.calls.Load(), "the asynchronous path was taken") })
	}
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	d = NewDispatcher(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- d.Run(ctx) }()
	require.Eventually(t, func() bool { return d.State().Running }, 5*time.Second, time.Millisecond)
	var (
		once sync.Once
		err  error
	)
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(15 * time.Second):
				err = errors.New("Run did not return")
			}
		})
		return err
	}
	t.Cleanup(func() { assert.NoError(t, stop()) })
	return d, stop
}

// fastRetry keeps retry waits in the milliseconds.
var fastRetry = RetryPolicy{Initial: time.Millisecond, Max: 5 * time.Millisecond, MaxElapsed: time.Minute}

// assertTaskOrder checks that acked holds each of want exactly once and
// that each task's events came in offset order.
func assertTaskOrder(t *testing.T, want, acked []diff.Event) {
	t.Helper()
	seen := map[uint64]int{}
	last := map[int64]uint64{}
	for _, ev := range acked {
		seen[ev.Offset]++
		assert.Greater(t, ev.Offset, last[ev.Data.TaskID], "task %d: offset %d after %d", ev.Data.TaskID, ev.Offset, last[ev.Data.TaskID])
		last[ev.Data.TaskID] = ev.Offset
	}
	for _, ev := range want {
		assert.Equal(t, 1, seen[ev.Offset], "offset %d delivered %d times", ev.Offset, seen[ev.Offset])
	}
	assert.Len(t, acked, len(want))
}

func TestDispatcher_TaskOrderUnderConcurrency(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	forEachOutbox(t, func(t *testing.T, ob dispatchTestOutbox) {
		evs := ob.Append(t, dispatchTestEvents(1500, 60, 1, rng)...)

		var failures atomic.Int64
		var fmu sync.Mutex
		frng := rand.New(rand.NewPCG(seed, 2))
		sink := newDispatchTestSink("s", func(ctx context.Context, ev *diff.Event) error {
			fmu.Lock()
			fail, d := frng.IntN(5) == 0, time.Duration(frng.IntN(300))*time.Microsecond
			fmu.Unlock()
			time.Sleep(d) // the sink's work, not a poll
			if fail {
				failures.Add(1)
				return errors.New("flaky")
			}
			return nil
		})
		d, stop := startDispatcher(t, DispatcherConfig{Sink: sink, Outbox: ob, MaxInFlight: 8, Retry: fastRetry})
		require.Eventually(t, func() bool { return sink.AckedCount() >= len(evs) }, 20*time.Second, 5*time.Millisecond)
		require.NoError(t, stop())

		assertTaskOrder(t, evs, sink.Acked())
		assert.Zero(t, sink.overlap, "two events of one task in flight together")
		assert.LessOrEqual(t, sink.maxInFlight, 8)
		assert.Greater(t, sink.maxInFlight, 1, "tasks go in parallel")
		assert.Positive(t, failures.Load())
		st := d.State()
		assert.Equal(t, uint64(len(evs)), st.Delivered)
		assert.Equal(t, uint64(failures.Load()), st.Retried)
		c, err := ob.Cursor("s")
		require.NoError(t, err)
		assert.Equal(t, evs[len(evs)-1].Offset, c, "cursor persisted at the head on shutdown")
	})
}

// recordingObserver records the Observer calls.
type recordingObserver struct {
	mu                                        sync.Mutex
	delivered, retried, dead, paused, failing int
	retryAttempts                             []int
}

func (o *recordingObserver) Delivered(string, *diff.Event, time.Duration) {
	o.mu.Lock()
	o.delivered++
	o.mu.Unlock()
}
func (o *recordingObserver) Retried(_ string, _ *diff.Event, attempt int, _ error) {
	o.mu.Lock()
	o.retried++
	o.retryAttempts = append(o.retryAttempts, attempt)
	o.mu.Unlock()
}
func (o *recordingObserver) DeadLettered(string, *diff.Event, error) {
	o.mu.Lock()
	o.dead++
	o.mu.Unlock()
}
func (o *recordingObserver) Paused(string, error) { o.mu.Lock(); o.paused++; o.mu.Unlock() }
func (o *recordingObserver) Failing(string, error) {
	o.mu.Lock()
	o.failing++
	o.mu.Unlock()
}

func TestDispatcher_RetryBackoff(t *testing.T) {
	forEachOutbox(t, func(t *testing.T, ob dispatchTestOutbox) {
		evs := ob.Append(t, dispatchTestEvent(1, 1), dispatchTestEvent(1, 2), dispatchTestEvent(2, 3))
		var (
			mu    sync.Mutex
			times []time.Time
		)
		clock := newFakeClock()
		sink := newDispatchTestSink("s", func(ctx context.Context, ev *diff.Event) error {
			if ev.Offset != evs[0].Offset {
				return nil
			}
			mu.Lock()
			defer mu.Unlock()
			times = append(times, clock.Now())
			if len(times) <= 3 {
				return errors.New("HTTP 503")
			}
			return nil
		})
		obs := &recordingObserver{}
		policy := RetryPolicy{Initial: 20 * time.Millisecond, Max: time.Second, MaxElapsed: time.Minute}
		d, _ := startDispatcher(t, DispatcherConfig{Sink: sink, Outbox: ob, Retry: policy, Observer: obs, Clock: clock})
		require.Eventually(t, func() bool { return sink.AckedCount() == 3 }, 10*time.Second, time.Millisecond)
		// The sink counts an ack before the dispatcher hears of it; the
		// observer hears last.
		require.Eventually(t, func() bool {
			obs.mu.Lock()
			defer obs.mu.Unlock()
			return obs.delivered == 3
		}, 5*time.Second, time.Millisecond)

		mu.Lock()
		defer mu.Unlock()
		require.Len(t, times, 4)
		// Waits are 20ms·2^n ±50%, on the injected clock: the attempts
		// are those waits apart, and no other wait was asked for.
		waits := clock.Waits(0)
		require.Len(t, waits, 3)
		for i, base := range []time.Duration{20, 40, 80} {
			base *= time.Millisecond
			assert.GreaterOrEqual(t, waits[i], base/2, "wait %d", i)
			assert.LessOrEqual(t, waits[i], base*3/2, "wait %d", i)
			assert.Equal(t, waits[i], times[i+1].Sub(times[i]), "attempt %d came after its wait", i+2)
		}
		acked := sink.Acked()
		assert.Equal(t, evs[2].Offset, acked[0].Offset, "another task is not held back")
		assert.Equal(t, []uint64{evs[0].Offset, evs[1].Offset}, []uint64{acked[1].Offset, acked[2].Offset}, "the task's later event waits")
		st := d.State()
		assert.Equal(t, uint64(3), st.Retried)
		assert.False(t, st.Failing, "a success clears failing")
		assert.Equal(t, "HTTP 503", st.LastError)
		obs.mu.Lock()
		defer obs.mu.Unlock()
		assert.Equal(t, []int{1, 2, 3}, obs.retryAttempts)
		assert.GreaterOrEqual(t, obs.failing, 1)
		assert.Equal(t, 3, obs.delivered)
	})
}

func TestDispatcher_RetryAfter(t *testing.T) {
	forEachOutbox(t, func(t *testing.T, ob dispatchTestOutbox) {
		ob.Append(t, dispatchTestEvent(1, 1))
		var (
			mu    sync.Mutex
			times []time.Time
		)
		clock := newFakeClock()
		sink := newDispatchTestSink("s", func(ctx context.Context, ev *diff.Event) error {
			mu.Lock()
			defer mu.Unlock()
			times = append(times, clock.Now())
			if len(times) == 1 {
				return &RetryAfterError{Err: errors.New("HTTP 429"), Wait: 300 * time.Millisecond}
			}
			return nil
		})
		startDispatcher(t, DispatcherConfig{Sink: sink, Outbox: ob, Retry: fastRetry, Clock: clock})
		require.Eventually(t, func() bool { return sink.AckedCount() == 1 }, 5*time.Second, time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		require.Len(t, times, 2)
		// fastRetry would wait 1ms ±50%: the Retry-After wins, once.
		assert.Equal(t, []time.Duration{300 * time.Millisecond}, clock.Waits(0))
		assert.Equal(t, 300*time.Millisecond, times[1].Sub(times[0]))
	})
}

func TestDispatcher_PermanentDeadLetters(t *testing.T) {
	forEachOutbox(t, func(t *testing.T, ob dispatchTestOutbox) {
		evs := ob.Append(t, dispatchTestEvent(1, 1), dispatchTestEvent(1, 2), dispatchTestEvent(2, 3), dispatchTestEvent(1, 4))
		bad := evs[0].Offset
		sink := newDispatchTestSink("s", func(ctx context.Context, ev *diff.Event) error {
			if ev.Offset == bad {
				return Permanent(errors.New("webhook s: POST example.com: HTTP 400"))
			}
			return nil
		})
		obs := &recordingObserver{}
		d, stop := startDispatcher(t, DispatcherConfig{Sink: sink, Outbox: ob, Retry: fastRetry, Observer: obs})
		require.Eventually(t, func() bool { return sink.AckedCount() == 3 }, 5*time.Second, time.Millisecond)
		require.NoError(t, stop())

		assert.Equal(t, []dispatchDeadLetter{{Offset: bad, Attempts: 1, LastErr: "webhook s: POST example.com: HTTP 400"}}, ob.DeadLetters(t, "s"))
		assert.Equal(t, 1, sink.Attempts(bad), "a permanent error is not retried")
		assertTaskOrder(t, evs[1:], sink.Acked())
		st := d.State()
		assert.Equal(t, uint64(1), st.DeadLettered)
		assert.Equal(t, evs[3].Offset, st.Cursor, "a dead letter counts as done")
		c, err := ob.Cursor("s")
		require.NoError(t, err)
		assert.Equal(t, evs[3].Offset, c)
		assert.Equal(t, 1, obs.dead)
	})
}

func TestDispatcher_MaxElapsedDeadLetters(t *testing.T) {
	forEachOutbox(t, func(t *testing.T, ob dispatchTestOutbox) {
		evs := ob.Append(t, dispatchTestEvent(1, 1), dispatchTestEvent(1, 2))
		sink := newDispatchTestSink("s", func(ctx context.Context, ev *diff.Event) error {
			if ev.Offset == 1 {
				return errors.New("connection refused")
			}
			return nil
		})
		policy := RetryPolicy{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, MaxElapsed: 150 * time.Millisecond}
		d, _ := startDispatcher(t, DispatcherConfig{Sink: sink, Outbox: ob, Retry: policy})
		require.Eventually(t, func() bool { return sink.AckedCount() == 1 }, 5*time.Second, time.Millisecond)

		dl := ob.DeadLetters(t, "s")
		require.Len(t, dl, 1)
		assert.Equal(t, evs[0].Offset, dl[0].Offset)
		assert.Greater(t, dl[0].Attempts, 2)
		assert.Equal(t, sink.Attempts(1), dl[0].Attempts)
		assert.Contains(t, dl[0].LastErr, "gave up after")
		assert.Contains(t, dl[0].LastErr, "connection refused")
		assert.Equal(t, evs[1].Offset, sink.Acked()[0].Offset)
		// The sink counts an ack before the dispatcher hears of it.
		require.Eventually(t, func() bool { return d.State().Cursor == 2 }, 5*time.Second, time.Millisecond)
	})
}

func TestDispatcher_PauseResume(t *testing.T) {
	forEachOutbox(t, func(t *testing.T, ob dispatchTestOutbox) {
		evs := ob.Append(t, dispatchTestEvent(1, 1), dispatchTestEvent(2, 2), dispatchTestEvent(1, 3))
		var gone atomic.Bool
		gone.Store(true)
		sink := newDispatchTestSink("s", func(ctx context.Context, ev *diff.Event) error {
			if ev.Offset == 2 && gone.Load() {
				return &PauseError{Err: errors.New("webhook s: POST example.com: HTTP 410")}
			}
			return nil
		})
		obs := &recordingObserver{}
		d, stop := startDispatcher(t, DispatcherConfig{Sink: sink, Outbox: ob, Retry: fastRetry, Observer: obs, MaxInFlight: 1})
		require.Eventually(t, func() bool { return d.State().Paused }, 5*time.Second, time.Millisecond)
		st := d.State()
		assert.Equal(t, "webhook s: POST example.com: HTTP 410", st.PauseReason)
		assert.Less(t, st.Cursor, uint64(2), "the cursor stays below the paused event")

		// More events while paused: none is attempted.
		more := ob.Append(t, dispatchTestEvent(3, 4))
		attempts := sink.Attempts(2)
		assert.Never(t, func() bool { return sink.Attempts(more[0].Offset) > 0 || sink.Attempts(2) > attempts }, 100*time.Millisecond, 5*time.Millisecond)

		gone.Store(false)
		d.Resume()
		require.Eventually(t, func() bool { return sink.AckedCount() == 4 }, 5*time.Second, time.Millisecond)
		require.NoError(t, stop())
		assertTaskOrder(t, append(evs, more...), sink.Acked())
		assert.False(t, d.State().Paused)
		assert.Empty(t, ob.DeadLetters(t, "s"))
		c, err := ob.Cursor("s")
		require.NoError(t, err)
		assert.Equal(t, uint64(4), c)
		assert.Equal(t, 1, obs.paused)
	})
}

// TestDispatcher_ResumeWinsOverOlderPause: an attempt that began before an
// operator resumed the sink and then answers "pause" does not pause it
// again; its event is attempted again.
func TestDispatcher_ResumeWinsOverOlderPause(t *testing.T) {
	forEachOutbox(t, func(t *testing.T, ob dispatchTestOutbox) {
		evs := ob.Append(t, dispatchTestEvent(1, 1), dispatchTestEvent(2, 2), dispatchTestEvent(1, 3))
		var gone atomic.Bool
		gone.Store(true)
		release := make(chan struct{})
		var slow atomic.Int32
		sink := newDispatchTestSink("s", func(ctx context.Context, ev *diff.Event) error {
			if ev.Offset == 2 && slow.Add(1) == 1 {
				<-release // answers after the resume, with what it saw before
				return &PauseError{Err: errors.New("HTTP 410")}
			}
			if gone.Load() {
				return &PauseError{Err: errors.New("HTTP 410")}
			}
			return nil
		})
		obs := &recordingObserver{}
		d, stop := startDispatcher(t, DispatcherConfig{Sink: sink, Outbox: ob, Retry: fastRetry, Observer: obs, MaxInFlight: 2})
		require.Eventually(t, func() bool { return d.State().Paused }, 5*time.Second, time.Millisecond)
		gone.Store(false)
		d.Resume()
		require.Eventually(t, func() bool { return !d.State().Paused }, 5*time.Second, time.Millisecond)
		close(release)
		require.Eventually(t, func() bool { return sink.AckedCount() == 3 }, 5*time.Second, time.Millisecond)
		assert.False(t, d.State().Paused, "the resume stands")
		require.NoError(t, stop())
		assertTaskOrder(t, evs, sink.Acked())
		assert.Equal(t, 1, obs.paused)
		assert.Equal(t, 2, sink.Attempts(2), "the event answered with the old pause is attempted again")
	})
}

func TestDispatcher_CursorIsContiguousWatermark(t *testing.T) {
	forEachOutbox(t, func(t *testing.T, ob dispatchTestOutbox) {
		// Task 1: offsets 1 3 5; task 2: 2 4 6; task 3 (filtered out): 7.
		var in []diff.Event
		for i := int64(1); i <= 6; i++ {
			in = append(in, dispatchTestEvent(2-i%2, i))
		}
		created := dispatchTestEvent(3, 7)
		created.Type = diff.TypeTaskCreated
		in = append(in, created)
		evs := ob.Append(t, in...)

		release := make(chan struct{})
		sink := newDispatchTestSink("s", func(ctx context.Context, ev *diff.Event) error {
			if ev.Offset == 2 {
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		})
		filter := func(ev *diff.Event) bool { return ev.Type != diff.TypeTaskCreated }
		d, stop := startDispatcher(t, DispatcherConfig{Sink: sink, Outbox: ob, Filter: filter, CursorFlush: 10 * time.Millisecond})
		require.Eventually(t, func() bool { return sink.AckedCount() == 3 }, 5*time.Second, time.Millisecond)
		// Offset 2 is in flight, so the watermark stops at 1 (the sink counts an
		// ack before the dispatcher hears of it, hence Eventually).
		require.Eventually(t, func() bool { return d.State().Cursor == 1 }, 5*time.Second, time.Millisecond)
		require.Eventually(t, func() bool { c, _ := ob.Cursor("s"); return c == 1 }, 5*time.Second, time.Millisecond)

		close(release)
		require.Eventually(t, func() bool { return d.State().Cursor == 7 }, 5*time.Second, time.Millisecond, "filtered events count as done")
		require.NoError(t, stop())
		c, err := ob.Cursor("s")
		require.NoError(t, err)
		assert.Equal(t, evs[6].Offset, c)
		assert.Len(t, sink.Acked(), 6)
	})
}

func TestDispatcher_PersistsCursorOnShutdown(t *testing.T) {
	ob := newMemOutbox()
	evs := ob.Append(t, dispatchTestEvents(100, 10, 1, rand.New(rand.NewPCG(1, 1)))...)
	sink := newDispatchTestSink("s", nil)
	d, stop := startDispatcher(t, DispatcherConfig{Sink: sink, Outbox: ob, CursorFlush: time.Hour})
	require.Eventually(t, func() bool { return d.State().Cursor == 100 }, 5*time.Second, time.Millisecond)
	assert.Zero(t, ob.sets.Load(), "the cursor is not written per event")
	require.NoError(t, stop())
	c, err := ob.Cursor("s")
	require.NoError(t, err)
	assert.Equal(t, evs[99].Offset, c)
	assert.Equal(t, int64(1), ob.sets.Load())

	// A new dispatcher continues from the cursor.
	more := ob.Append(t, dispatchTestEvent(1, 500))
	sink2 := newDispatchTestSink("s", nil)
	startDispatcher(t, DispatcherConfig{Sink: sink2, Outbox: ob})
	require.Eventually(t, func() bool { return sink2.AckedCount() == 1 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, more[0].Offset, sink2.Acked()[0].Offset)
	assert.Never(t, func() bool { return sink2.AckedCount() > 1 }, 50*time.Millisecond, 5*time.Millisecond)
}

func TestDispatcher_ShutdownLetsAttemptsFinish(t *testing.T) {
	forEachOutbox(t, func(t *testing.T, ob dispatchTestOutbox) {
		ob.Append(t, dispatchTestEvent(1, 1))
		started := make(chan struct{})
		sink := newDispatchTestSink("s", func(ctx context.Context, ev *diff.Event) error {
			close(started)
			time.Sleep(50 * time.Millisecond) // a slow receiver
			return ctx.Err()
		})
		d, stop := startDispatcher(t, DispatcherConfig{Sink: sink, Outbox: ob, DrainTimeout: 5 * time.Second})
		<-started
		require.NoError(t, stop())
		assert.Equal(t, 1, sink.AckedCount(), "Run's ctx does not cancel the attempt")
		c, err := ob.Cursor("s")
		require.NoError(t, err)
		assert.Equal(t, uint64(1), c)
		assert.False(t, d.State().Running)
	})
}

func TestDispatcher_ShutdownCancelsAfterDrainTimeout(t *testing.T) {
	forEachOutbox(t, func(t *testing.T, ob dispatchTestOutbox) {
		ob.Append(t, dispatchTestEvent(1, 1))
		started := make(chan struct{})
		sink := newDispatchTestSink("s", func(ctx context.Context, ev *diff.Event) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		})
		_, stop := startDispatcher(t, DispatcherConfig{Sink: sink, Outbox: ob, DrainTimeout: 50 * time.Millisecond})
		<-started
		begin := time.Now()
		require.NoError(t, stop())
		assert.Less(t, time.Since(begin), 2*time.Second)
		c, err := ob.Cursor("s")
		require.NoError(t, err)
		assert.Zero(t, c, "an unacknowledged event is not past the cursor")
	})
}

func TestDispatcher_Rewind(t *testing.T) {
	forEachOutbox(t, func(t *testing.T, ob dispatchTestOutbox) {
		evs := ob.Append(t, dispatchTestEvents(20, 4, 100, rand.New(rand.NewPCG(2, 2)))...)
		sink := newDispatchTestSink("s", nil)
		d, stop := startDispatcher(t, DispatcherConfig{Sink: sink, Outbox: ob})
		require.Eventually(t, func() bool { return sink.AckedCount() == 20 }, 5*time.Second, time.Millisecond)

		require.NoError(t, d.Rewind(context.Background(), evs[5].Offset))
		require.Eventually(t, func() bool { return sink.AckedCount() == 20+15 }, 5*time.Second, time.Millisecond)
		require.NoError(t, stop())
		acked := sink.Acked()
		first := map[uint64]diff.Event{}
		for _, ev := range acked[:20] {
			first[ev.Offset] = ev
		}
		again := acked[20:]
		assertTaskOrder(t, evs[5:], again)
		for _, ev := range again {
			assert.Equal(t, first[ev.Offset].ID, ev.ID)
			assert.JSONEq(t, string(first[ev.Offset].Body), string(ev.Body))
		}
		c, err := ob.Cursor("s")
		require.NoError(t, err)
		assert.Equal(t, evs[19].Offset, c)
	})
}

func TestDispatcher_ResetWhilePausedAndStopped(t *testing.T) {
	forEachOutbox(t, func(t *testing.T, ob dispatchTestOutbox) {
		ob.Append(t, dispatchTestEvent(1, 1), dispatchTestEvent(1, 2))
		var gone atomic.Bool
		gone.Store(true)
		sink := newDispatchTestSink("s", func(ctx context.Context, ev *diff.Event) error {
			if gone.Load() {
				return &PauseError{Err: errors.New("HTTP 410")}
			}
			return nil
		})
		d, stop := startDispatcher(t, DispatcherConfig{Sink: sink, Outbox: ob})
		require.Eventually(t, func() bool { return d.State().Paused }, 5*time.Second, time.Millisecond)

		// Reset runs the caller's function in between and clears the pause.
		var ran atomic.Bool
		gone.Store(false)
		require.NoError(t, d.Reset(context.Background(), func() error {
			ran.Store(true)
			assert.Zero(t, d.State().InFlight, "nothing is delivered while the function runs")
			return nil
		}))
		assert.True(t, ran.Load())
		require.Eventually(t, func() bool { return sink.AckedCount() == 2 }, 5*time.Second, time.Millisecond)
		require.NoError(t, stop())

		// Without Run, Reset just runs the function.
		wantErr := errors.New("store rewind failed")
		assert.ErrorIs(t, d.Reset(context.Background(), func() error { return wantErr }), wantErr)
		require.NoError(t, d.Rewind(context.Background(), 2))
		assert.Equal(t, uint64(1), d.State().Cursor)
	})
}

func TestDispatcher_SlowSinkDoesNotBlockAnother(t *testing.T) {
	forEachOutbox(t, func(t *testing.T, ob dispatchTestOutbox) {
		evs := ob.Append(t, dispatchTestEvents(300, 30, 1, rand.New(rand.NewPCG(3, 3)))...)
		stuck := newDispatchTestSink("stuck", func(ctx context.Context, ev *diff.Event) error {
			<-ctx.Done()
			return ctx.Err()
		})
		fast := newDispatchTestSink("fast", nil)
		_, stopStuck := startDispatcher(t, DispatcherConfig{Sink: stuck, Outbox: ob, DrainTimeout: 10 * time.Millisecond})
		startDispatcher(t, DispatcherConfig{Sink: fast, Outbox: ob})
		require.Eventually(t, func() bool { return fast.AckedCount() == len(evs) }, 5*time.Second, time.Millisecond)
		more := ob.Append(t, dispatchTestEvent(1, 1000))
		require.Eventually(t, func() bool { return fast.AckedCount() == len(evs)+1 }, 5*time.Second, time.Millisecond)
		assert.Equal(t, more[0].Offset, fast.Acked()[len(evs)].Offset)
		require.NoError(t, stopStuck())
		assert.Zero(t, stuck.AckedCount())
	})
}

func TestDispatcher_ReadAheadBounded(t *testing.T) {
	forEachOutbox(t, func(t *testing.T, ob dispatchTestOutbox) {
		ob.Append(t, dispatchTestEvents(3000, 500, 1, rand.New(rand.NewPCG(4, 4)))...)
		release := make(chan struct{})
		sink := newDispatchTestSink("s", func(ctx context.Context, ev *diff.Event) error {
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		d, _ := startDispatcher(t, DispatcherConfig{Sink: sink, Outbox: ob, ReadAhead: 100, MaxInFlight: 4})
		require.Eventually(t, func() bool { return d.State().Pending == 100 }, 5*time.Second, time.Millisecond)
		assert.Never(t, func() bool { return d.State().Pending > 100 }, 50*time.Millisecond, 5*time.Millisecond)
		assert.Equal(t, 4, d.State().InFlight)
		close(release)
		require.Eventually(t, func() bool { return sink.AckedCount() == 3000 }, 10*time.Second, time.Millisecond)
	})
}

func TestDispatcher_ReadErrorRetried(t *testing.T) {
	ob := newMemOutbox()
	ob.readErr = errors.New("disk on fire")
	ob.Append(t, dispatchTestEvent(1, 1))
	sink := newDispatchTestSink("s", nil)
	startDispatcher(t, DispatcherConfig{Sink: sink, Outbox: ob})
	assert.Never(t, func() bool { return sink.AckedCount() > 0 }, 50*time.Millisecond, 5*time.Millisecond)
	ob.mu.Lock()
	ob.readErr = nil
	ob.mu.Unlock()
	require.Eventually(t, func() bool { return sink.AckedCount() == 1 }, 5*time.Second, time.Millisecond)
}

func TestDispatcher_RunTwice(t *testing.T) {
	forEachOutbox(t, func(t *testing.T, ob dispatchTestOutbox) {
		d, _ := startDispatcher(t, DispatcherConfig{Sink: newDispatchTestSink("s", nil), Outbox: ob})
		assert.ErrorContains(t, d.Run(context.Background()), "already running")
	})
}

// benchObserver closes done once n events were delivered.
type benchObserver struct {
	NopObserver
	n, count int64
	done     chan struct{}
}

func (o *benchObserver) Delivered(string, *diff.Event, time.Duration) {
	if atomic.AddInt64(&o.count, 1) == o.n {
		close(o.done)
	}
}

// benchDispatch delivers b.N events spread over 2,000 tasks from an
// in-memory outbox to sink and reports events/s.
func benchDispatch(b *testing.B, sink Sink, maxInFlight int) {
	ob := newMemOutbox()
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < b.N; i += 1000 {
		ob.Append(b, dispatchTestEvents(min(1000, b.N-i), 2000, int64(i+1), rng)...)
	}
	obs := &benchObserver{n: int64(b.N), done: make(chan struct{})}
	d := NewDispatcher(DispatcherConfig{Sink: sink, Outbox: ob, MaxInFlight: maxInFlight, Observer: obs})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	b.ResetTimer()
	begin := time.Now()
	go func() { errc <- d.Run(ctx) }()
	select {
	case <-obs.done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("delivered %d of %d", atomic.LoadInt64(&obs.count), b.N)
	}
	elapsed := time.Since(begin)
	b.StopTimer()
	cancel()
	require.NoError(b, <-errc)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}

func BenchmarkDispatcher_JetStream(b *testing.B) {
	for _, inFlight := range []int{16, 64, 128, 256} {
		b.Run(fmt.Sprintf("in_flight=%d", inFlight), func(b *testing.B) {
			s := natsTestServer(b, b.TempDir(), -1, nil)
			n := newTestNATS(b, NATSConfig{URL: s.ClientURL(), JetStream: true, Stream: &StreamConfig{Name: "INCS"}})
			benchDispatch(b, n, inFlight)
		})
	}
}

func BenchmarkDispatcher_JetStreamEmbedded(b *testing.B) {
	n := newTestNATS(b, NATSConfig{URL: NATSEmbedded, JetStream: true, Stream: &StreamConfig{Name: "INCS"},
		Embedded: EmbeddedOptions{Port: -1, StoreDir: b.TempDir()}})
	benchDispatch(b, n, DefaultMaxInFlight)
}

func BenchmarkDispatcher_NATSCore(b *testing.B) {
	for _, inFlight := range []int{16, 64} {
		b.Run(fmt.Sprintf("in_flight=%d", inFlight), func(b *testing.B) {
			s := natsTestServer(b, b.TempDir(), -1, nil)
			n := newTestNATS(b, NATSConfig{URL: s.ClientURL()})
			benchDispatch(b, n, inFlight)
		})
	}
}

func BenchmarkDispatcher_Webhook(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	w, err := NewWebhook(WebhookConfig{Name: "hooks", URL: srv.URL, Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
	require.NoError(b, err)
	defer w.Close(context.Background())
	benchDispatch(b, w, DefaultMaxInFlight)
}

// BenchmarkDispatcher_WebhookSlow: a receiver answering after 50ms; 16 in
// flight make at most 320 events/s.
func BenchmarkDispatcher_WebhookSlow(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		time.Sleep(50 * time.Millisecond)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	w, err := NewWebhook(WebhookConfig{Name: "hooks", URL: srv.URL, Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
	require.NoError(b, err)
	defer w.Close(context.Background())
	benchDispatch(b, w, DefaultMaxInFlight)
}

// BenchmarkDispatcher_Nop measures the dispatcher itself, with a sink that
// acknowledges at once.
func BenchmarkDispatcher_Nop(b *testing.B) {
	benchDispatch(b, newDispatchTestSink("nop", nil), DefaultMaxInFlight)
}
