package relay

// Delivery on a jetstream store: each sink's sink/partition.Dispatcher
// (a dispatcher per partition this replica owns) and what the relay keeps
// of its pause.

import (
	"context"

	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/sink/partition"
	"github.com/incs-relay/incs-relay/store"
	"github.com/incs-relay/incs-relay/store/jsstore"
)

// dispatcher is what a Relay needs of a sink's delivery: one
// *sink.Dispatcher with a bbolt store, a *partition.Dispatcher with a jetstream one.
type dispatcher interface {
	Run(ctx context.Context) error
	State() sink.DispatcherState
	Reset(ctx context.Context, fn func() error) error
	Resume()
}

var (
	_ dispatcher = (*sink.Dispatcher)(nil)
	_ dispatcher = (*partition.Dispatcher)(nil)
)

// cursorWither is a store whose sink cursor can take the partitions'
// live cursors (*jsstore.Store).
type cursorWither interface {
	CursorWith(sink string, live map[int]jsstore.LiveCursor) (uint64, error)
}

// liveCursor returns a partitioned sink's cursor counting what the
// partitions delivered here hold beyond their last flush, as a single
// dispatcher's status shows its own cursor rather than the stored one;
// ok is false for other dispatchers, stores, or on error.
func liveCursor(db store.Store, d dispatcher, sink string) (uint64, bool) {
	pd, ok := d.(*partition.Dispatcher)
	if !ok {
		return 0, false
	}
	cw, ok := db.(cursorWither)
	if !ok {
		return 0, false
	}
	states := pd.PartitionStates()
	if len(states) == 0 {
		return 0, false
	}
	live := make(map[int]jsstore.LiveCursor, len(states))
	for p, st := range states {
		live[p] = jsstore.LiveCursor{Cursor: st.Cursor, Pending: st.Pending > 0}
	}
	c, err := cw.CursorWith(sink, live)
	return c, err == nil
}

// partitionedDispatcher returns the delivery of dc's sink on a jetstream
// store: a sink/partition.Dispatcher on this replica's assignment, whose
// role changes come from r.roles; unsub ends that subscription once the
// dispatcher stopped for good (a reload replaced or removed its sink).
func (r *Relay) partitionedDispatcher(dc sink.DispatcherConfig) (_ *partition.Dispatcher, unsub func()) {
	changes, unsub := r.roles.sub()
	return partition.New(partition.Config{
		Dispatcher: dc,
		Assignment: r.js,
		Outbox:     func(p int) sink.Outbox { return r.js.Partition(p) },
		Changes:    changes,
	}), unsub
}

// replicaPause settles what a jetstream replica writes of o's sink state,
// which all replicas share: it writes when one of its partitions paused
// since the last save, and nothing else (returning o.saved, which the
// caller skips), so it neither clears another replica's pause nor brings
// back one an operator resumed elsewhere (its own paused partitions follow
// that resume, see followResume); an operator's resume here is written by
// saveResumed. The live last error and delivery time are in the admin API.
// With bbolt ss is returned as it is.
func (r *Relay) replicaPause(o *output, ss store.SinkState) store.SinkState {
	p, ok := o.disp.(*partition.Dispatcher)
	if r.js == nil || !ok {
		return ss
	}
	if p.NotePause(ss.Paused) {
		return ss
	}
	return o.saved
}

// PauseSaved reports whether this replica's last save of the named sink's
// state (on a jetstream store) saw one of its partitions paused: from
// then on its saves leave the stored pause to whoever resumes it. False
// with a bbolt store or an unknown sink.
func (r *Relay) PauseSaved(name string) bool {
	o := r.output(name)
	if o == nil {
		return false
	}
	p, ok := o.disp.(*partition.Dispatcher)
	return ok && p.PauseSaved()
}
