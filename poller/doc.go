// Package poller owns everything between incs-relay and the incsapp task
// API: the HTTP client for GET /external/tasks ([Client], with its rate
// limiter, Retry-After gate and typed [APIError]s), the sweep that pages
// through every task matching a query ([Client.Sweep]), the poll loop that
// runs a cycle every interval and hands each page to a [Handler]
// ([Poller]), and the strategies that plan a cycle's queries: [Lookback],
// the naive full sweep, and [Tiered], which reads open tasks often and
// finished ones rarely, fetches the tasks that left the open tier by id,
// and skips the decoding of tasks it has handled before.
//
// The poller never turns a misbehaving API into "no tasks": a page reaches
// the handler only when it was received and decoded in full; every other
// outcome is an error the caller can classify with [errors.As] and
// [APIError.Kind]. The bearer token never appears in an error or a log line.
// Creation-time ranges are [WallTime], the API's own wall clock, so they
// stay gapless across daylight-saving changes.
//
// The API simulator used by tests, the demo and `incs-relay sim` lives in
// the subpackage sim.
package poller
