// Package diff owns the domain of incs-relay: the upstream task and log
// types as the incsapp API returns them, the CloudEvents envelope the relay
// emits, and the pure step that turns a task plus the set of its already-seen
// log IDs into new events.
//
// diff does no I/O: it imports neither bbolt nor NATS nor net/http. The
// poller decodes API pages into [Task] values, [Diff] turns them into
// [Event] values, the store assigns offsets and persists them, and sinks
// deliver them.
package diff
