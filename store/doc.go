// Package store owns the relay's durable state in one bbolt file: the
// per-task seen-set of upstream log IDs, the outbox of events with their
// offsets, and each sink's cursor, dead letters and state.
//
// # Basics
//
// [Open] takes an exclusive lock on the file (a second process gets
// [ErrLocked]) and checks it before use (a damaged file gives [ErrCorrupt] and
// is left in place): completely up to 64 MiB, else with a bounded check whose
// cost does not grow with the outbox; [DB.CheckAll] runs the full check once
// the store is in use. [DB.Ingest] diffs polled tasks against the seen-set and,
// in one transaction, appends an event for every new log and marks it seen,
// so an event is never lost and never emitted twice. Offsets start at 1, are
// strictly increasing and are never reused, not even after [DB.Prune] deletes
// old events. Sinks read the outbox with [DB.Read] from their [DB.Cursor] and
// advance it with [DB.SetCursor] or [DB.DeadLetter].
//
// Every exported method is one transaction and is safe for concurrent use.
// bbolt never leaves the package: callers see only domain types.
//
// # Caveats
//
// Only one process may have the store open. Write transactions are
// serialized; concurrent Ingest calls are committed together (group commit),
// so callers that pipeline pages share one fsync.
package store
