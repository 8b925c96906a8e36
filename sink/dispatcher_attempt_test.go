package sink

// Tests of an attempt and its outcome (dispatcher_attempt.go): retries and
// their backoff, Retry-After, dead letters, pause and resume.

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

func TestDispatcher_RetryBackoff(t *testing.T) {
	forEachOutbox(t, func(t *testing.T, ob dispatchTestOutbox) {
		evs := ob.Append(t, dispatchTestEvent(1, 1), dispatchTestEvent(1, 2), dispatchTestEvent(2, 3))
		var (
			mu    sync.Mutex
			times []time.Time
		)
		clock := newFakeClock()
		var sink *dispatchTestSink
		sink = newDispatchTestSink("s", func(ctx context.Context, ev *diff.Event) error {
			if ev.Offset != evs[0].Offset {
				return nil
			}
			mu.Lock()
			defer mu.Unlock()
			times = append(times, clock.Now())
			if len(times) <= 3 {
				return errors.New("HTTP 503")
			}
			// The fake clock lets the retries run at once, so the success
			// could beat task 2's first attempt by scheduling alone: it
			// waits (boundedly) for task 2's event, which a dispatcher
			// holding task 2 back would never deliver first.
			task2Acked := func() bool {
				return slices.ContainsFunc(sink.Acked(), func(a diff.Event) bool { return a.Offset == evs[2].Offset })
			}
			for deadline := time.Now().Add(5 * time.Second); !task2Acked() && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
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
