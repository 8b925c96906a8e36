package sink

// Tests of the read-ahead (dispatcher_credit.go): its bound, and a failed
// outbox read retried.

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

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
