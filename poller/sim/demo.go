package sim

import "time"

// DemoOptions returns the options of the world `incs-relay demo` runs: a
// small world that lives on at a pace a person can follow. At one change
// per 3s tick a new task comes every 20-30s on average, with about 20
// events a minute in all: assignments, status changes, comments, comment
// edits, field edits and now and then a deletion; past 30 tasks the
// oldest finished ones are deleted, and at most 2000 records of each
// ground truth are kept, so its memory stays bounded however long it runs.
// The caller sets Token, Seed and Faults.
func DemoOptions() Options {
	return Options{
		Tasks:          12,
		Tick:           3 * time.Second,
		ChangesPerTick: 1,
		CommentEdits:   0.05,
		FieldEdits:     0.05,
		Deletions:      0.04,
		MaxTasks:       30,
		HistoryLimit:   1000,
	}
}
