// Package admin is the relay's admin API: the HTTP server (Server) with
// its guard against cross-site requests and foreign host names, its token,
// its handlers, the embedded admin page and /metrics serving the relay's
// registry; and the Client the commands use to ask a running relay, with
// what they share with the server (the events query, a replay's first
// offset, redaction).
//
// It imports relay and config; relay does not import it: Open (or the
// caller of relay.Open) attaches the server to the relay.
package admin
