// Package rules derives events from what the upstream API never writes
// down: a task in progress nobody touched for hours, a task not finished a
// day after it was created, a task nobody was assigned to.
//
// A [Rule] fires when a task matches its When filters and After has passed
// since its Since moment, the created_at of one of the task's logs (the
// anchor), counted in a [Calendar]'s business hours if one is named. Each
// occurrence fires exactly once per step: its event id,
// rule-<name>-<task id>-<anchor log id>-<step>, is fixed by the anchor, and
// what has fired is part of the per-task state the [Engine] hands to the
// store with the events it produced.
//
// rules does no I/O: the relay feeds the Engine each read of a task
// (decoded, or known unchanged) with the time the read was made, persists
// the returned [Change] values with their events in one transaction, and
// then commits them to the Engine.
package rules
