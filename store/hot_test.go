package store

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

// TestIngest_HotTask: a task read within seconds of its last change may
// change again within the same second, which its updated_at cannot show:
// its next read is compared in full, and the second edit is found.
func TestIngest_HotTask(t *testing.T) {
	db := mustOpen(t)
	now := time.Now().In(shanghai).Format(diff.TimeLayout)
	tk := task(1, 10, 11, 12, 13)
	tk.UpdatedAt = now
	tk.Logs[3].Comment, tk.Logs[3].CreatedAt, tk.Logs[3].UpdatedAt = "first", now, now
	res := ingest(t, db, true, tk)
	require.Equal(t, 4, res.Events)
	tk.Logs[3].Comment = "edited in the same second"
	tk.Name = "renamed in the same second"
	res = ingest(t, db, true, tk)
	require.Equal(t, map[string]int{diff.TypeTaskLogUpdated: 1, diff.TypeTaskUpdated: 1}, res.Types)
}

// TestIngest_HotUnchanged: a hot task read again without a change is
// compared in full and counted as skipped (unchanged); nothing is
// written.
func TestIngest_HotUnchanged(t *testing.T) {
	db := mustOpen(t)
	tk := task(1, 10, 11)
	tk.UpdatedAt = time.Now().In(shanghai).Format(diff.TimeLayout)
	ingest(t, db, true, tk)
	res := ingest(t, db, true, tk)
	require.Equal(t, 0, res.Events)
	require.Equal(t, 0, res.Changed)
	require.Equal(t, 1, res.Skipped)
}
