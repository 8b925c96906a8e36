package jsstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store/storetest"
)

// TestSeenRecordsApart: a replica's view keeps seen records without their
// values (fields and comments grow without bound, the log ids do not), and
// the leader fetches a changed task's whole record from the stream before
// it diffs: by a direct get of its pack, or from the stream's leader
// when direct gets are off. A comment edit and a field edit made after the
// records reached the view report the values they replace, and a deletion
// the last ones.
func TestSeenRecordsApart(t *testing.T) {
	srv := runServer(t)
	loc := time.FixedZone("CST", 8*3600)
	for _, direct := range []bool{true, false} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			ctx := context.Background()
			s := leadingStore(t, srv.ClientURL(), Options{Name: fmt.Sprintf("apart%v", direct), ReplicaID: "r1"})
			s.direct.off.Store(!direct)
			long := strings.Repeat("一条很长的评论 ", 100)   // 2,200 bytes, under the 4 KiB cut
			task := storetest.Task(1, 10, 11, 12, 13) // 13 is a comment
			task.Logs[3].Comment = long
			_, err := s.Ingest(ctx, []diff.Task{task}, loc, true)
			require.NoError(t, err)
			again := storetest.Task(2, 20)
			_, err = s.Ingest(ctx, []diff.Task{again}, loc, true) // task 1's record is now in the view
			require.NoError(t, err)

			e := s.v.seenRecord(1)
			require.True(t, e.apart, "kept without its values")
			require.Less(t, len(e.rec), 64, "the view's copy holds no comment")
			recs, err := s.recordsAt(ctx, e.seq)
			require.NoError(t, err)
			require.Len(t, recs, 1)
			require.Greater(t, len(recs[0].rec), len(long), "the stream holds the whole record")

			// The comment edited and the task renamed, no new log.
			task.Logs[3].Comment, task.Logs[3].UpdatedAt = "短评", "2026-04-08 17:45:00"
			task.Name, task.UpdatedAt = "改名", "2026-04-08 17:45:00"
			res, err := s.Ingest(ctx, []diff.Task{task}, loc, true)
			require.NoError(t, err)
			require.Equal(t, map[string]int{diff.TypeTaskUpdated: 1, diff.TypeTaskLogUpdated: 1}, res.Types)
			evs, err := s.Read(ctx, res.FirstOffset, 10)
			require.NoError(t, err)
			require.Equal(t, 2, len(evs))
			from := map[string]string{}
			for _, ev := range evs {
				for field, c := range storetest.ChangesOf(t, ev) {
					var f string
					require.NoError(t, json.Unmarshal([]byte(c[0]), &f))
					from[field] = f
				}
			}
			require.Equal(t, long, from["comment"], "the comment it replaced, from the whole record")
			require.Equal(t, "任务 1", from["name"])

			// Unchanged again: skipped on the view's copy alone.
			res, err = s.Ingest(ctx, []diff.Task{task}, loc, true)
			require.NoError(t, err)
			require.Equal(t, 1, res.Skipped)

			// Deleted: the event holds the last values.
			res, err = s.Delete(ctx, []int64{1}, time.Now())
			require.NoError(t, err)
			require.Equal(t, 1, res.Events)
			evs, err = s.Read(ctx, res.FirstOffset, 1)
			require.NoError(t, err)
			require.Contains(t, string(evs[0].Body), `"改名"`)
		})
	}
}
