package sink

// Clock, the time source a Dispatcher and the chat sinks read and wait on,
// and SystemClock, the real one.

import "time"

// Clock is the time source of a Dispatcher and of the chat sinks: Now, and
// AfterFunc, which runs f in its own goroutine after d and returns a
// function that stops it (reporting whether it did). Every wait of a retry
// or a rate limit is an AfterFunc, so a test can inject a clock and assert
// the waits. It has the methods of chat.Clock.
type Clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// SystemClock is the wall clock: time.Now and time.AfterFunc.
var SystemClock Clock = systemClock{}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) AfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
