// Package partition owns partitioned delivery, the dispatcher of one sink
// on a store whose outbox is split into partitions that several replicas
// share (store/jsstore): one *sink.Dispatcher per partition the store
// assigns to this replica, started and stopped as the assignment changes.
// Per-task order holds as with one dispatcher, since a task's events all
// fall in one partition.
//
// It owns what makes that safe across replicas: the fenced handoff of a
// partition, the rewind semantics of every partition's cursor writes,
// following a resume made on another replica, the bookkeeping of which
// pause this replica stored (NotePause), and the sum of the partitions'
// states.
//
// # Fenced handoff
//
// Being assigned a partition is not enough to deliver it: each (sink,
// partition) has a cursor record in the store naming its owner and an
// owner generation, and at most one replica holds it. A replica claims
// the partition (Assignment.Claim, which bumps the generation) only when
// the record is released, or its owner's membership lapsed (a kill -9, a
// replica cut off); until then it asks again every claimRetry. The
// dispatcher it starts writes its cursor with Assignment.SetCursorAs,
// compare-and-set on that generation, through fencedOutbox. A partition
// taken from this replica is given up cooperatively: its dispatcher stops
// reading, drains (attempts past DrainTimeout are abandoned), writes its
// last cursor, and only then is the partition released; the next owner
// starts from that cursor. A write refused because another replica holds
// the partition means fenced: the dispatcher is stopped at once, reads
// nothing more, and writes nothing more.
//
// The cursor alone would not do: it is the contiguous watermark, and a
// draining dispatcher has delivered events above it (of other tasks than
// the one holding it back). Every cursor write carries those offsets
// (fencedOutbox is the dispatcher's Observer for them), and the next
// owner's Filter skips them, so a graceful handoff delivers nothing
// twice; after a kill -9 what was in flight, or acknowledged since the
// last cursor write, is delivered again, byte-identical.
//
// An operator's rewind (jsstore's Rewind, SetCursor) writes the same
// record, keeping its owner and bumping its generation: the owner's next
// write is refused, but the record still names it, so that is a rewind,
// not fencing: the write is dropped, the dispatcher rereads its cursor
// (adopting the new generation) and delivers again from it.
//
// The store is reached through Assignment, which uses only plain values,
// so that this package never imports a store and the store never imports
// sink; *jsstore.Store satisfies it. A partition's outbox for reading
// events and recording dead letters comes from Config.Outbox, a func(p
// int) sink.Outbox the caller supplies (with jsstore: func(p int)
// sink.Outbox { return js.Partition(p) }): jsstore's Partition returns its
// own *PartitionOutbox, which cannot be named in an interface method of
// this package's choosing. Its cursor methods are not used: cursors go
// through Assignment.
//
// Stop a Dispatcher (end Run's context and wait for it) before the
// store's Run ends or the store closes: the last cursor writes and the
// releases need the store. A replica whose store went first leaves its
// partitions held; they are taken once its membership lapses, as after a
// kill.
package partition
