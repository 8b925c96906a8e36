package sink

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

// TestDispatcher_HandoffSkipsDone: a dispatcher stopped while the first
// event of one task keeps failing leaves its cursor below that event, but
// has delivered most events above it (other tasks'). A dispatcher started
// from that cursor with SkipDone(Handoff) delivers only what the first
// one did not: the held-back task's events, each once, in order.
func TestDispatcher_HandoffSkipsDone(t *testing.T) {
	ob := newMemOutbox()
	evs := ob.Append(t, dispatchTestEvents(60, 6, 1, rand.New(rand.NewPCG(3, 4)))...)
	stuck := evs[0].Data.TaskID
	first := newDispatchTestSink("s", func(_ context.Context, ev *diff.Event) error {
		if ev.Data.TaskID == stuck {
			return errors.New("receiver down for this task")
		}
		return nil
	})
	d, stop := startDispatcher(t, DispatcherConfig{Sink: first, Outbox: ob, Retry: fastRetry})
	var others int
	for _, ev := range evs {
		if ev.Data.TaskID != stuck {
			others++
		}
	}
	require.Eventually(t, func() bool { return first.AckedCount() == others }, 5*time.Second, time.Millisecond)
	assert.Nil(t, d.Handoff(), "nothing handed off while it runs")
	require.NoError(t, stop())
	cur, err := ob.Cursor("s")
	require.NoError(t, err)
	assert.Less(t, cur, evs[0].Offset, "the stuck task holds the cursor back")

	h := d.Handoff()
	require.NotNil(t, h)
	for _, ev := range evs {
		assert.Equal(t, ev.Data.TaskID != stuck, h.Done(ev.Offset), "offset %d", ev.Offset)
	}
	assert.False(t, h.Done(evs[len(evs)-1].Offset+1), "an offset never read is not done")
	var nilH *Handoff
	assert.False(t, nilH.Done(1))

	second := newDispatchTestSink("s", nil)
	d2, _ := startDispatcher(t, DispatcherConfig{Sink: second, Outbox: ob, Filter: SkipDone(h, nil)})
	want := len(evs) - others
	require.Eventually(t, func() bool { return d2.State().Cursor == evs[len(evs)-1].Offset }, 5*time.Second, time.Millisecond)
	acked := second.Acked()
	require.Len(t, acked, want, "only the held-back task's events")
	for i, ev := range acked {
		assert.Equal(t, stuck, ev.Data.TaskID)
		if i > 0 {
			assert.Less(t, acked[i-1].Offset, ev.Offset, "in order")
		}
	}
}
