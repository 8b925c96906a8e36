// Package partition owns partitioned delivery, the dispatcher of one sink
// on a store whose outbox is split into partitions that several replicas
// share (store/jsstore): one *sink.Dispatcher per partition the store
// assigns to this replica, started and stopped as the assignment changes.
// Per-task order holds as with one dispatcher, since a task's events all
// fall in one partition.
//
// It owns what makes that safe across replicas: the handoff delay of a
// partition taken from another replica, the rewind guard on every
// partition's cursor writes, following a resume made on another replica,
// the bookkeeping of which pause this replica stored (NotePause), and the
// sum of the partitions' states.
//
// The store is reached through Assignment, which uses only plain values,
// so that this package never imports a store and the store never imports
// sink; *jsstore.Store satisfies it. A partition's outbox comes from
// Config.Outbox, a func(p int) sink.Outbox the caller supplies (with
// jsstore: func(p int) sink.Outbox { return js.Partition(p) }): jsstore's
// Partition returns its own *PartitionOutbox, which cannot be named in an
// interface method of this package's choosing, and a type parameter over
// the outbox type would spread to every holder of a *Dispatcher for no
// gain.
package partition
