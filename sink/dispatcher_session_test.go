package sink

// Tests of a dispatcher session (dispatcher_session.go): per-task order
// under concurrency, the cursor as the contiguous watermark, and a slow sink
// that holds back no other.

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

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
