package sink

// Handoff: what a stopped Dispatcher leaves for the next dispatcher of the
// same sink, so that a restart in place (a config reload that changed the
// sink) delivers nothing twice.

import "github.com/incs-relay/incs-relay/diff"

// Handoff is what a Dispatcher's last session left when it stopped: the
// events it had read, and which of them were not done. Its cursor is the
// contiguous watermark; a dispatcher delivers out of offset order across
// tasks, so events above the cursor may be done too, and a dispatcher that
// starts again from the cursor would deliver them a second time.
type Handoff struct {
	// LastRead is the highest offset the session read.
	LastRead uint64
	pending  map[uint64]struct{} // read, not delivered nor dead-lettered
}

// Done reports whether the event at off was delivered, dead-lettered or
// filtered out by the stopped session: it was read and is not pending.
// False for a nil Handoff.
func (h *Handoff) Done(off uint64) bool {
	if h == nil || off > h.LastRead {
		return false
	}
	_, pending := h.pending[off]
	return !pending
}

// Handoff returns what the last session left once Run returned (or a
// Reset ended a session); nil before.
func (d *Dispatcher) Handoff() *Handoff { return d.handoff.Load() }

// SkipDone wraps next so that it also drops the events h says are done: the
// Filter of a dispatcher that takes over from the one that left h, so a
// filtered event counts as done and the watermark passes it. next may be
// nil (every event).
func SkipDone(h *Handoff, next Filter) Filter {
	if h == nil {
		return next
	}
	return func(ev *diff.Event) bool {
		if h.Done(ev.Offset) {
			return false
		}
		return next == nil || next(ev)
	}
}
