package sink

// DispatcherState, the snapshot of a Dispatcher that State returns. The
// running session keeps it current under the Dispatcher's mu
// (dispatcher_session.go, dispatcher_attempt.go).

import "time"

// DispatcherState is a snapshot of a Dispatcher.
type DispatcherState struct {
	Sink string
	// Cursor is the contiguous watermark: every event at or below it is
	// delivered, dead-lettered or filtered out. Persisted is the last
	// value written to the store; it lags Cursor by up to CursorFlush.
	Cursor    uint64
	Persisted uint64
	Running   bool
	InFlight  int // Deliver calls under way
	Pending   int // events read and not yet done, in flight or waiting
	Paused    bool
	// PauseReason is the error that paused the sink.
	PauseReason    string
	LastError      string
	LastErrorAt    time.Time
	LastDeliveryAt time.Time
	// Failing is true when the last attempt failed and none succeeded
	// since.
	Failing                          bool
	Delivered, Retried, DeadLettered uint64
}

// State returns a snapshot of the dispatcher's state.
func (d *Dispatcher) State() DispatcherState {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st
}
