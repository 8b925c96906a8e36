package relay

// Each sink's pause, last error and last delivery, saved to the store as
// its dispatcher reports them.

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/store"
)

// sinkStateGap is the least time between two writes of the sinks' last
// error and last delivery; a pause is written at once.
const sinkStateGap = time.Second

// sinkStateSaver persists each sink's pause, last error and last delivery
// as its dispatcher reports them, so that `status` shows them while the
// relay is down and a pause survives a restart, a crash included. It is
// the relay's first sink.Observer: a pause is on disk before Paused
// returns; other outcomes mark the state dirty and run wakes to write it,
// at most once per sinkStateGap, so that a busy sink costs no commit per
// event.
type sinkStateSaver struct {
	r     *Relay
	dirty atomic.Bool
	kick  chan struct{} // buffered 1
}

func newSinkStateSaver(r *Relay) *sinkStateSaver {
	return &sinkStateSaver{r: r, kick: make(chan struct{}, 1)}
}

// run writes the dirty states until ctx ends; Relay.Run writes the last
// ones after the dispatchers stopped.
func (s *sinkStateSaver) run(ctx context.Context) {
	gap := time.NewTimer(sinkStateGap)
	gap.Stop()
	defer gap.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		s.dirty.Store(false)
		s.r.saveSinkStates()
		gap.Reset(sinkStateGap)
		select {
		case <-ctx.Done():
			return
		case <-gap.C:
		}
	}
}

// changed marks the states dirty and wakes run.
func (s *sinkStateSaver) changed() {
	if s.dirty.Load() || !s.dirty.CompareAndSwap(false, true) {
		return
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Delivered implements sink.Observer.
func (s *sinkStateSaver) Delivered(string, *diff.Event, time.Duration) { s.changed() }

// Retried implements sink.Observer.
func (s *sinkStateSaver) Retried(string, *diff.Event, int, error) { s.changed() }

// DeadLettered implements sink.Observer.
func (s *sinkStateSaver) DeadLettered(string, *diff.Event, error) { s.changed() }

// Failing implements sink.Observer.
func (s *sinkStateSaver) Failing(string, error) { s.changed() }

// Paused implements sink.Observer: it writes the pause before it returns.
func (s *sinkStateSaver) Paused(name string, _ error) {
	if o := s.r.output(name); o != nil {
		s.r.savedMu.Lock()
		defer s.r.savedMu.Unlock()
		s.r.saveSinkState(o)
	}
}

var _ sink.Observer = (*sinkStateSaver)(nil)

// saveSinkStates writes every sink's state that changed since it was last
// written.
func (r *Relay) saveSinkStates() {
	r.savedMu.Lock()
	defer r.savedMu.Unlock()
	for _, o := range r.outputs() {
		r.saveSinkState(o)
	}
}

// saveSinkState writes o's state if it changed; savedMu is held.
func (r *Relay) saveSinkState(o *output) {
	st := o.disp.State()
	ss := store.SinkState{
		Paused: st.Paused, PauseReason: st.PauseReason,
		LastError: o.saved.LastError, LastErrorAt: o.saved.LastErrorAt, LastDeliveryAt: o.saved.LastDeliveryAt,
	}
	if st.LastError != "" {
		ss.LastError, ss.LastErrorAt = st.LastError, st.LastErrorAt
	}
	if !st.LastDeliveryAt.IsZero() {
		ss.LastDeliveryAt = st.LastDeliveryAt
	}
	ss = r.replicaPause(o, ss)
	if ss == o.saved {
		return
	}
	if err := r.db.SetSinkState(o.cfg.Name, ss); err != nil {
		r.log.Warn().Err(err).Str("sink", o.cfg.Name).Msg("save sink state")
		return
	}
	o.saved = ss
}

// saveResumed records at once that an operator resumed o.
func (r *Relay) saveResumed(o *output) {
	r.savedMu.Lock()
	defer r.savedMu.Unlock()
	ss := o.saved
	ss.Paused, ss.PauseReason = false, ""
	if err := r.db.SetSinkState(o.cfg.Name, ss); err != nil {
		r.log.Warn().Err(err).Str("sink", o.cfg.Name).Msg("save sink state")
		return
	}
	o.saved = ss
}
