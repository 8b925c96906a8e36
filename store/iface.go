package store

import (
	"context"
	"time"

	"github.com/incs-relay/incs-relay/diff"
)

// Store is what the relay keeps across restarts: the outbox, the seen-set,
// the registry of sinks, each sink's cursor, dead letters and state, the
// rule states, and small
// named values (polling tiers, the snapshot boundary). cmd and the sinks
// use a store only through this interface; *DB (bbolt, the default) is one
// backend, and every backend must pass the conformance suite in
// store/storetest. The semantics of each method are those documented on
// *DB; in short:
//
//   - Offsets are assigned densely from 1 in commit order, never reused,
//     and an event's offset, id and body never change once stored.
//   - A log gets at most one event, ever: Ingest and IngestAfter append a
//     task's new logs' events and mark those logs seen in one atomic
//     commit, so a crash loses or repeats nothing.
//   - Every method returns an error wrapping ErrClosed after Close, and
//     ErrNotFound for a missing event.
type Store interface {
	Ingester
	Reader
	SinkStore
	SinkRegistry
	RuleStore
	MetaStore

	// Notify returns a new subscription: a channel (buffered 1, sent to
	// without blocking) that receives after each commit that appended
	// events. The subscription lasts until ctx ends: then the store drops
	// it and sends nothing more on the channel (which it does not close).
	// Pass a context that ends when the consumer stops (a dispatcher its
	// Run's), or every call leaks one subscription for the store's life.
	Notify(ctx context.Context) <-chan struct{}
	// Prune deletes events every sink in p.Sinks has passed and that are
	// older than p.Retention, and seen records older than p.Lookback;
	// only the dead letters of the sinks in p.Sinks may keep an event.
	Prune(ctx context.Context, p PruneOptions) (PruneResult, error)
	// Stats returns the store's figures.
	Stats() (Stats, error)
	// Close releases the store. Calls after it fail with ErrClosed.
	Close() error
}

// Ingester turns polled tasks into events: the write path of the poller.
type Ingester interface {
	// Ingest appends an event for every unseen log of tasks (none when
	// emit is false) and marks them seen, in one commit.
	Ingest(ctx context.Context, tasks []diff.Task, loc *time.Location, emit bool) (IngestResult, error)
	// IngestAfter is Ingest with emit set, except that logs created before
	// boundary are marked seen without an event.
	IngestAfter(ctx context.Context, tasks []diff.Task, loc *time.Location, boundary time.Time) (IngestResult, error)
	// Delete appends a task.deleted event (diff.Deleted, its time
	// confirmed) for each task of ids that has a seen record, a look-up
	// by id having confirmed it gone, and forgets the record: each task's
	// event and the removal in one commit. Tasks without a record are
	// skipped (counted in Skipped).
	Delete(ctx context.Context, ids []int64, confirmed time.Time) (IngestResult, error)
	// Tracked calls fn with every task that has a seen record and was
	// created at or after since (Unix seconds; a task whose created_at
	// was unknown is included, with created 0), until fn returns false.
	Tracked(since int64, fn func(taskID, created int64) bool) error
}

// Reader reads the outbox.
type Reader interface {
	// Head returns the highest offset ever assigned; 0 if none.
	Head() (uint64, error)
	// First returns the lowest offset stored; 0 if none.
	First() (uint64, error)
	// Read returns up to limit events with offset >= from, in offset order.
	Read(ctx context.Context, from uint64, limit int) ([]diff.Event, error)
	// Events returns the events matching q, in offset order.
	Events(ctx context.Context, q EventQuery) ([]diff.Event, error)
	// Event returns the event at off, or an error wrapping ErrNotFound.
	Event(off uint64) (diff.Event, error)
	// OffsetSince returns the lowest offset stored at or after t, or
	// Head+1 if there is none.
	OffsetSince(t time.Time) (uint64, error)
}

// SinkStore keeps each sink's delivery progress.
type SinkStore interface {
	// Cursor returns the offset through which the sink has every event
	// delivered or dead-lettered; 0 means none.
	Cursor(sink string) (uint64, error)
	// SetCursor persists the sink's cursor; a lower value is accepted, one
	// beyond Head is an error.
	SetCursor(sink string, offset uint64) error
	// DeadLetter records that the sink gave up on the event at offset.
	DeadLetter(sink string, offset uint64, attempts int, lastErr string) error
	// DeadLetters returns the sink's dead letters in offset order.
	DeadLetters(sink string) ([]DeadLetter, error)
	// SinkState returns the sink's persisted state (pause, last error).
	SinkState(sink string) (SinkState, error)
	// SetSinkState persists the sink's state.
	SetSinkState(sink string, st SinkState) error
	// Rewind sets the sink's cursor to from-1 (from clamped to
	// [First, Head+1]) and clears its dead letters at or above from and its
	// pause, in one commit, so delivery starts again at from.
	Rewind(sink string, from uint64) error
}

// RuleStore keeps the rules engine's per-task state with the events it
// derives.
type RuleStore interface {
	// ApplyRules writes rule states and appends derived events in one
	// commit.
	ApplyRules(ctx context.Context, writes []RuleWrite) (RuleResult, error)
	// RuleStates calls fn with every stored rule state, in task id order.
	RuleStates(fn func(taskID int64, rec []byte) error) error
}

// MetaStore keeps small named values: the polling tiers' state, the
// snapshot boundary, whether the first sweep finished.
type MetaStore interface {
	// Meta returns the value stored under key, or an error wrapping
	// ErrNotFound.
	Meta(key string) ([]byte, error)
	// SetMeta stores value under key; a nil value deletes the key.
	SetMeta(key string, value []byte) error
	// Initialized reports whether SetInitialized was ever called.
	Initialized() (bool, error)
	// SetInitialized records that the first sweep finished.
	SetInitialized() error
}

var _ Store = (*DB)(nil)
