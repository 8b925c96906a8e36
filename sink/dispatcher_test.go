package sink

// The dispatcher tests' harness: the outboxes they run on, a sink that
// records and checks what it was given, startDispatcher and a recording
// Observer; and the tests of the lifecycle (dispatcher.go): shutdown and its
// drain, Rewind, Reset and a second Run.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
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
// below, in memory, storeOutbox (dispatcher_store_test.go), the real
// bbolt store in t.TempDir(), and jsOutbox, a partition of the JetStream
// store on a NATS server in this process.
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
	{"jsstore", func(t testing.TB) dispatchTestOutbox { return newJSOutbox(t) }},
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

func (o *memOutbox) Notify(ctx context.Context) <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := make(chan struct{}, 1)
	o.subs = append(o.subs, c)
	context.AfterFunc(ctx, func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		o.subs = slices.DeleteFunc(o.subs, func(s chan struct{}) bool { return s == c })
	})
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

func TestDispatcher_RunTwice(t *testing.T) {
	forEachOutbox(t, func(t *testing.T, ob dispatchTestOutbox) {
		d, _ := startDispatcher(t, DispatcherConfig{Sink: newDispatchTestSink("s", nil), Outbox: ob})
		assert.ErrorContains(t, d.Run(context.Background()), "already running")
	})
}
