package jsstore

// Deletions: a task.deleted event for each task a look-up confirmed gone,
// with its seen record removed in the same atomic batch.

import (
	"context"
	"errors"
	"time"

	"github.com/incs-relay/incs-relay/store"
)

// Delete appends a task.deleted event for each task of ids with a seen
// record and removes the record, each in one atomic batch (see
// store.Ingester). Only the leader deletes.
func (s *Store) Delete(ctx context.Context, ids []int64, confirmed time.Time) (store.IngestResult, error) {
	return store.IngestResult{}, errors.New("jsstore: delete: not yet")
}

// Tracked calls fn with every task with a seen record created at or
// after since (see store.Ingester).
func (s *Store) Tracked(since int64, fn func(taskID int64) bool) error {
	return errors.New("jsstore: tracked: not yet")
}
