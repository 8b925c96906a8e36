package sink

// Observer, what a Dispatcher reports each delivery, retry, dead letter,
// pause and failing spell to (metrics, logs), with NopObserver and
// MultiObserver.

import (
	"time"

	"github.com/incs-relay/incs-relay/diff"
)

// Observer receives a Dispatcher's delivery outcomes, e.g. for metrics or
// to persist a sink's state. Its methods are called from the dispatcher's
// loop goroutine, one at a time per Dispatcher, and must not block, but
// for Paused: delivery has stopped by then, so Paused may write the pause
// to disk before it returns. Several Dispatchers may share one Observer,
// so it must be safe for concurrent use.
type Observer interface {
	// Delivered is called once the sink acknowledged ev; latency runs
	// from ev.StoredAt (0 if unset) to the acknowledgement.
	Delivered(sink string, ev *diff.Event, latency time.Duration)
	// Retried is called after failed attempt number attempt (from 1) of
	// ev when another attempt is scheduled.
	Retried(sink string, ev *diff.Event, attempt int, err error)
	// DeadLettered is called once ev was moved to the sink's dead letters.
	DeadLettered(sink string, ev *diff.Event, err error)
	// Paused is called when the sink asked to be paused (*PauseError),
	// once the Dispatcher's State shows the pause.
	Paused(sink string, err error)
	// Failing is called when an attempt fails after the last attempt
	// succeeded (or after the start): the sink turned from healthy to
	// failing. A later Delivered means it recovered.
	Failing(sink string, err error)
}

// NopObserver is an Observer that does nothing.
type NopObserver struct{}

func (NopObserver) Delivered(string, *diff.Event, time.Duration) {}
func (NopObserver) Retried(string, *diff.Event, int, error)      {}
func (NopObserver) DeadLettered(string, *diff.Event, error)      {}
func (NopObserver) Paused(string, error)                         {}
func (NopObserver) Failing(string, error)                        {}

// MultiObserver passes every outcome to each of its Observers, in order.
type MultiObserver []Observer

// Delivered implements Observer.
func (m MultiObserver) Delivered(s string, ev *diff.Event, d time.Duration) {
	for _, o := range m {
		o.Delivered(s, ev, d)
	}
}

// Retried implements Observer.
func (m MultiObserver) Retried(s string, ev *diff.Event, attempt int, err error) {
	for _, o := range m {
		o.Retried(s, ev, attempt, err)
	}
}

// DeadLettered implements Observer.
func (m MultiObserver) DeadLettered(s string, ev *diff.Event, err error) {
	for _, o := range m {
		o.DeadLettered(s, ev, err)
	}
}

// Paused implements Observer.
func (m MultiObserver) Paused(s string, err error) {
	for _, o := range m {
		o.Paused(s, err)
	}
}

// Failing implements Observer.
func (m MultiObserver) Failing(s string, err error) {
	for _, o := range m {
		o.Failing(s, err)
	}
}
