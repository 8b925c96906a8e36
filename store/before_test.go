package store

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/incs-relay/incs-relay/diff"
)

// TestBefore_RoundTrip: what a version-2 record keeps of a task decodes
// as it was encoded, times that are no API time and long values included.
func TestBefore_RoundTrip(t *testing.T) {
	tk := task(1, 10, 11, 12, 13)
	tk.Description = strings.Repeat("长", 2000) // 6,000 bytes: cut
	tk.Logs[3].Comment = "评论"
	tk.Logs[2].UpdatedAt = "not a time"
	b := diff.Observe(&tk, nil, func(int64) bool { return true })
	b.Upd = diff.IDCounter{At: 1775640121, N: 2}
	b.Logs[1].Upd = diff.IDCounter{At: 1775640000}
	got, err := decodeBefore(appendBefore(nil, &b))
	require.NoError(t, err)
	got.UpdatedAt = b.UpdatedAt // kept in the record's first part
	require.Equal(t, b, got)
	require.True(t, got.Cut[3], "the description was cut")
	require.LessOrEqual(t, len(got.Values[3]), diff.MaxValue)
	for _, bad := range [][]byte{{}, {0xff}, appendBefore(nil, &b)[:20]} {
		_, err := decodeBefore(bad)
		require.Error(t, err, "%x", bad)
	}
}

// TestIngest_UpgradeFromVersion1: a task whose seen record an older
// version wrote (no values) is recorded on its first read, edited or not,
// without an event; its next edit is reported from those values.
func TestIngest_UpgradeFromVersion1(t *testing.T) {
	db := mustOpen(t)
	tk := task(1, 10, 11)
	ingest(t, db, true, tk)
	require.NoError(t, db.bolt.Update(func(tx *bolt.Tx) error {
		old := appendRecord(nil, &seenRecord{CreatedAt: 1775640121, UpdatedAt: tk.UpdatedAt, IDs: []int64{10, 11}})
		return tx.Bucket(bucketSeen).Put(u64(1), old)
	}))
	tk.Name = "renamed before the upgrade was read"
	res := ingest(t, db, true, tk)
	require.Equal(t, 0, res.Events, "the first read after the upgrade records the values")
	require.Equal(t, 1, res.Changed)
	res = ingest(t, db, true, tk)
	require.Equal(t, 1, res.Skipped, "then the task is unchanged")
	tk.Name, tk.UpdatedAt = "renamed after", "2026-04-08 18:00:00"
	res = ingest(t, db, true, tk)
	require.Equal(t, map[string]int{diff.TypeTaskUpdated: 1}, res.Types)
	evs, err := db.Read(context.Background(), 3, 1)
	require.NoError(t, err)
	var body struct {
		Data struct{ Changes []diff.Change } `json:"data"`
	}
	require.NoError(t, json.Unmarshal(evs[0].Body, &body))
	require.Equal(t, `"renamed before the upgrade was read"`, string(body.Data.Changes[0].From))
}

// BenchmarkRecordBytes reports the bytes of a seen record per tracked
// task, before (version 1: seen log ids) and with what the relay keeps
// for the changes that leave no log (version 2), for the vendor's
// example task (diff's sample: 6 logs, one comment) and for a task of 4
// logs with a 200-byte description.
func BenchmarkRecordBytes(b *testing.B) {
	sample := diff.SampleEvents()[0]
	var vendor diff.Task
	if err := json.Unmarshal(sampleTaskJSON(sample), &vendor); err != nil {
		b.Fatal(err)
	}
	long := task(2, 10, 11, 12, 13)
	long.Description = strings.Repeat("x", 200)
	for _, c := range []struct {
		name string
		t    diff.Task
	}{{"vendor", vendor}, {"long-description", long}} {
		var ids []int64
		for _, l := range c.t.Logs {
			ids = append(ids, l.ID)
		}
		v1 := seenRecord{CreatedAt: 1775640121, UpdatedAt: c.t.UpdatedAt, IDs: ids}
		before := diff.Observe(&c.t, nil, func(int64) bool { return true })
		v2 := v1
		v2.V2, v2.LogsAt, v2.Rest = true, newestLogAt(&c.t), appendBefore(nil, &before)
		b.Run(c.name, func(b *testing.B) {
			var n1, n2 int
			for range b.N {
				n1, n2 = len(appendRecord(nil, &v1)), len(appendRecord(nil, &v2))
			}
			b.ReportMetric(float64(n1), "B/task-v1")
			b.ReportMetric(float64(n2), "B/task-v2")
		})
	}
}

// sampleTaskJSON returns the sample task with its logs: its task JSON
// with the logs of diff's sample events put back.
func sampleTaskJSON(ev diff.Event) []byte {
	var logs []json.RawMessage
	for _, e := range diff.SampleEvents() {
		if len(e.Data.Log) > 0 && e.Data.Edit == nil {
			logs = append(logs, e.Data.Log)
		}
	}
	var t map[string]any
	_ = json.Unmarshal(ev.Data.Task, &t)
	t["logs"] = logs
	out, _ := json.Marshal(t)
	return out
}
