package chat

import (
	"context"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/incs-relay/incs-relay/diff"
)

// TestNoSinkImport keeps the layering: sink imports sink/chat, so chat
// must not depend on sink, however indirectly.
func TestNoSinkImport(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	require.NoError(t, err, "go list")
	for _, p := range strings.Fields(string(out)) {
		assert.NotEqual(t, "github.com/incs-relay/incs-relay/sink", p, "sink/chat depends on sink")
	}
}

// manualClock is a Clock whose time moves only on Advance, which runs the
// waits that became due.
type manualClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*manualTimer
	waits  []time.Duration
}

type manualTimer struct {
	at      time.Time
	f       func()
	stopped bool
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &manualTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	c.waits = append(c.waits, d)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*manualTimer
	c.timers = slices.DeleteFunc(c.timers, func(t *manualTimer) bool {
		if !t.stopped && !t.at.After(c.now) {
			due = append(due, t)
			return true
		}
		return t.stopped
	})
	c.mu.Unlock()
	for _, t := range due {
		go t.f()
	}
}

// recorder is a SendFunc that records the events of each message and
// refuses, as final, a digest holding a "POISON" event, and that event
// alone.
type recorder struct {
	mu   sync.Mutex
	msgs [][]string
}

var errRefused = errors.New("refused")

func (r *recorder) send(_ context.Context, evs []*diff.Event) error {
	var ids []string
	bad := false
	for _, ev := range evs {
		ids = append(ids, ev.ID)
		bad = bad || strings.Contains(ev.Data.Comment, "POISON")
	}
	r.mu.Lock()
	r.msgs = append(r.msgs, ids)
	r.mu.Unlock()
	if bad {
		return errRefused
	}
	return nil
}

func (r *recorder) messages() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

func batchEvents(n int) []diff.Event {
	base := diff.SampleEvents()[3]
	out := make([]diff.Event, n)
	for i := range out {
		out[i] = base
		out[i].ID = diff.EventID(int64(100 + i))
		out[i].Offset = uint64(i + 1)
	}
	return out
}

func newTestBatcher(t *testing.T) (*Batcher, *manualClock) {
	clock := &manualClock{now: time.Date(2026, 4, 8, 9, 0, 0, 0, time.UTC)}
	b := NewBatcher(rate.NewLimiter(1, 1), 20, clock, func(err error) bool { return errors.Is(err, errRefused) })
	t.Cleanup(func() { assert.NoError(t, b.Close(context.Background())) })
	return b, clock
}

// deliverAll delivers evs[1:] concurrently after evs[0], once the first
// took the only token, advancing the clock a second at a time until every
// Deliver returned (at most a minute of the clock).
func deliverAll(t *testing.T, b *Batcher, clock *manualClock, rec *recorder, evs []diff.Event) []error {
	t.Helper()
	require.NoError(t, b.Deliver(context.Background(), &evs[0], rec.send))
	errs := make([]error, len(evs))
	var wg sync.WaitGroup
	for i := 1; i < len(evs); i++ {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = b.Deliver(context.Background(), &evs[i], rec.send) }()
	}
	require.Eventually(t, func() bool {
		b.mu.Lock()
		waiting := b.pending != nil && len(b.pending.evs) == len(evs)-1
		b.mu.Unlock()
		clock.mu.Lock()
		defer clock.mu.Unlock()
		return waiting && len(clock.timers) == 1
	}, 5*time.Second, time.Millisecond, "the others wait in one digest, for its token")
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for range 60 {
		clock.Advance(time.Second)
		select {
		case <-done:
			return errs
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatal("Deliver calls still waiting after a minute of the clock")
	return nil
}

func TestBatcher_Digest(t *testing.T) {
	b, clock := newTestBatcher(t)
	rec := &recorder{}
	evs := batchEvents(4)
	for _, err := range deliverAll(t, b, clock, rec, evs) {
		assert.NoError(t, err)
	}
	msgs := rec.messages()
	require.Len(t, msgs, 2)
	assert.Equal(t, []string{evs[0].ID}, msgs[0])
	assert.ElementsMatch(t, []string{evs[1].ID, evs[2].ID, evs[3].ID}, msgs[1])
	clock.mu.Lock()
	assert.Equal(t, []time.Duration{time.Second}, clock.waits, "the digest waited for the next token, on the clock")
	clock.mu.Unlock()
}

// TestBatcher_SplitRefusedDigest: a digest refused as a whole is sent again
// as one message per event, inside the same Deliver calls; only the bad
// event fails.
func TestBatcher_SplitRefusedDigest(t *testing.T) {
	b, clock := newTestBatcher(t)
	rec := &recorder{}
	evs := batchEvents(4)
	evs[2].Data.Comment = "POISON"
	errs := deliverAll(t, b, clock, rec, evs)
	for i, err := range errs[1:] {
		if i+1 == 2 {
			assert.ErrorIs(t, err, errRefused)
		} else {
			assert.NoError(t, err)
		}
	}
	msgs := rec.messages()
	require.Len(t, msgs, 5)
	assert.Len(t, msgs[1], 3)
	var alone []string
	for _, m := range msgs[2:] {
		require.Len(t, m, 1)
		alone = append(alone, m[0])
	}
	assert.ElementsMatch(t, []string{evs[1].ID, evs[2].ID, evs[3].ID}, alone)
}

func TestBatcher_Closed(t *testing.T) {
	b, _ := newTestBatcher(t)
	require.NoError(t, b.Close(context.Background()))
	ev := batchEvents(1)[0]
	assert.ErrorIs(t, b.Deliver(context.Background(), &ev, (&recorder{}).send), ErrClosed)
}
