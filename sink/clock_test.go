package sink

// The clocks the tests inject into a Dispatcher and the chat sinks:
// testClock, the system clock with Now replaced, and fakeClock, on which
// waits take no wall time and are recorded.

import (
	"sync"
	"time"
)

// testClock is the system clock with Now replaced by now (the system's
// when nil).
func testClock(now func() time.Time) Clock {
	if now == nil {
		return SystemClock
	}
	return nowClock(now)
}

type nowClock func() time.Time

func (c nowClock) Now() time.Time                                { return c() }
func (nowClock) AfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

// fakeClock is a Clock on which waits take no wall time: it starts at the
// wall clock's now (Feishu checks signatures against it), and AfterFunc records
// the wait, moves the clock on by it and runs f at once. A test reads the
// waits that were asked for.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Now()}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	c.waits = append(c.waits, d)
	c.now = c.now.Add(max(d, 0))
	c.mu.Unlock()
	go f()
	return func() bool { return false }
}

// Waits returns the waits asked for so far at least min long.
func (c *fakeClock) Waits(min time.Duration) []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Duration
	for _, w := range c.waits {
		if w >= min {
			out = append(out, w)
		}
	}
	return out
}
