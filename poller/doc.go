// Package poller owns everything between incs-relay and the incsapp task
// API: the HTTP client for GET /external/tasks ([Client], with its rate
// limiter, Retry-After gate and typed [APIError]s), the sweep that pages
// through every task matching a query ([Client.Sweep]) and the poll loop that
// runs a sweep every interval and hands each page to a [Handler]
// ([Poller]).
//
// The poller never turns a misbehaving API into "no tasks": a page reaches
// the handler only when it was received and decoded in full; every other
// outcome is an error the caller can classify with [errors.As] and
// [APIError.Kind]. The bearer token never appears in an error or a log line.
//
// The API simulator used by tests, the demo and `incs-relay sim` lives in
// the subpackage sim.
package poller
