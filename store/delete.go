package store

// Deletions: a task.deleted event for each task a look-up confirmed gone,
// and its seen record forgotten, in one transaction; and the tracked
// tasks a full sweep checks for deletions.

import (
	"context"
	"errors"
	"time"
)

// Delete appends a task.deleted event for each task of ids with a seen
// record and removes the record, in one transaction (see Ingester).
func (db *DB) Delete(ctx context.Context, ids []int64, confirmed time.Time) (IngestResult, error) {
	return IngestResult{}, errors.New("store: delete: not yet")
}

// Tracked calls fn with every task with a seen record created at or
// after since (see Ingester).
func (db *DB) Tracked(since int64, fn func(taskID int64) bool) error {
	return errors.New("store: tracked: not yet")
}
