package poller_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/poller/sim"
)

// TestPoller_CarryStatus: a Poller built to replace another (a reload that
// changed the strategy or the rules) takes its status over until it ends
// a cycle of its own; after that carrying changes nothing.
func TestPoller_CarryStatus(t *testing.T) {
	s := sim.New(sim.Options{Tasks: 20, Seed: 1, Token: token, Location: shanghai, Now: func() time.Time { return fixedNow }})
	old := newPoller(t, s, &handler{})
	require.NoError(t, old.RunOnce(context.Background()))
	want := old.Status()
	require.False(t, want.LastSuccess.IsZero())

	next := newPoller(t, s, &handler{})
	next.CarryStatus(nil)
	next.CarryStatus(next)
	assert.True(t, next.Status().LastSuccess.IsZero(), "nothing to carry from nil or itself")
	next.CarryStatus(old)
	got := next.Status()
	assert.Equal(t, want.LastSuccess, got.LastSuccess)
	assert.Equal(t, want.Cycles, got.Cycles)

	fresh := newPoller(t, s, &handler{})
	require.NoError(t, fresh.RunOnce(context.Background()))
	own := fresh.Status()
	fresh.CarryStatus(old)
	assert.Equal(t, own.LastSuccess, fresh.Status().LastSuccess, "a poller with a cycle of its own keeps its status")
}
