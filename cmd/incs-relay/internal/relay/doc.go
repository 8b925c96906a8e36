// Package relay is the relay's runtime: a Relay opens the store the
// config names (bbolt, or a jetstream replica), builds the pipeline
// poller → diff → store → sinks (the Ingester is the poller's Handler, the
// rules hook into the poll strategy), runs a dispatcher per sink (per
// owned partition on a jetstream store), saves the sinks' state, polls
// only while it leads a jetstream store, and observes all of it with
// Prometheus metrics. It reports its status and readiness for the admin
// API, which it does not import: whoever opens a relay attaches the admin
// server (Relay.SetAdmin) before Run.
//
// It is the one package besides the commands that imports every stage,
// and imports only the config of cmd/incs-relay.
package relay
