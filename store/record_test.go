package store

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSeenRecord(t *testing.T) {
	tests := []struct {
		name string
		rec  seenRecord
	}{
		{name: "empty", rec: seenRecord{}},
		{name: "typical", rec: seenRecord{CreatedAt: 1775640121, UpdatedAt: "2026-04-08 17:28:54", IDs: []int64{531, 532, 533, 534}}},
		{name: "sparse ids", rec: seenRecord{CreatedAt: 1, IDs: []int64{1, 1 << 40, math.MaxInt64}}},
		{name: "negative and extreme", rec: seenRecord{CreatedAt: -5, UpdatedAt: "更新", IDs: []int64{math.MinInt64, -1, 0, math.MaxInt64}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := appendRecord(nil, &tt.rec)
			var got seenRecord
			require.NoError(t, decodeRecord(b, &got))
			assert.Equal(t, tt.rec.CreatedAt, got.CreatedAt)
			assert.Equal(t, tt.rec.UpdatedAt, got.UpdatedAt)
			assert.Equal(t, len(tt.rec.IDs), len(got.IDs))
			assert.True(t, slices.Equal(tt.rec.IDs, got.IDs))
			for _, id := range tt.rec.IDs {
				assert.True(t, got.has(id))
			}
			assert.False(t, got.has(2))
		})
	}

	// A typical record of a task with 4 logs is small.
	b := appendRecord(nil, &tests[1].rec)
	assert.LessOrEqual(t, len(b), 36)

	for _, bad := range [][]byte{nil, {}, {2}, {recordVersion}, append(appendRecord(nil, &tests[1].rec), 0)} {
		assert.Error(t, decodeRecord(bad, new(seenRecord)), "%x", bad)
	}
}

func TestMergeIDs(t *testing.T) {
	assert.Equal(t, []int64{1, 2, 3, 5, 8}, mergeIDs([]int64{1, 3, 5}, []int64{2, 3, 8}))
	assert.Equal(t, []int64{4}, mergeIDs(nil, []int64{4}))
	assert.Empty(t, mergeIDs(nil, nil))
	assert.True(t, allSeen([]int64{2, 5}, []int64{1, 2, 3, 5}))
	assert.False(t, allSeen([]int64{2, 4}, []int64{1, 2, 3, 5}))
	assert.False(t, allSeen([]int64{9}, nil))
	assert.True(t, allSeen(nil, nil))
}

// FuzzSeenRecord: decoding never panics; whatever decodes re-encodes to a
// record that decodes the same; and records built from arbitrary ids
// round-trip.
func FuzzSeenRecord(f *testing.F) {
	f.Add(appendRecord(nil, &seenRecord{CreatedAt: 1775640121, UpdatedAt: "2026-04-08 17:28:54", IDs: []int64{531, 532, 533, 534}}), int64(7), int64(-3))
	f.Add([]byte{recordVersion, 0, 0, 0, 0}, int64(0), int64(math.MaxInt64))
	f.Add([]byte{recordVersion, 2, 0, 4, 1, 2}, int64(math.MinInt64), int64(1))
	f.Fuzz(func(t *testing.T, b []byte, a, c int64) {
		var r seenRecord
		if decodeRecord(b, &r) == nil {
			assert.True(t, slices.IsSorted(r.IDs))
			assert.Len(t, slices.Compact(slices.Clone(r.IDs)), len(r.IDs))
			var again seenRecord
			require.NoError(t, decodeRecord(appendRecord(nil, &r), &again))
			assert.Equal(t, r.CreatedAt, again.CreatedAt)
			assert.Equal(t, r.UpdatedAt, again.UpdatedAt)
			assert.True(t, slices.Equal(r.IDs, again.IDs))
		}

		ids := []int64{a, c, a ^ c, a / 2}
		for _, x := range b {
			ids = append(ids, int64(x)*a)
		}
		slices.Sort(ids)
		ids = slices.Compact(ids)
		in := seenRecord{CreatedAt: a, UpdatedAt: string(b), IDs: ids}
		var out seenRecord
		require.NoError(t, decodeRecord(appendRecord(nil, &in), &out))
		assert.Equal(t, in.CreatedAt, out.CreatedAt)
		assert.Equal(t, in.UpdatedAt, out.UpdatedAt)
		assert.True(t, slices.Equal(in.IDs, out.IDs))
	})
}

// TestPrepareIngest_RecordsApart: records without their values
// (RecordApart) tell unchanged tasks apart on their own; the whole records
// of the tasks that changed are asked of whole once, and without whole
// such a record is refused rather than diffed against no values.
func TestPrepareIngest_RecordsApart(t *testing.T) {
	loc := time.FixedZone("CST", 8*3600)
	t1, t2 := task(1, 10, 11), task(2, 20)
	prepared, _, err := PrepareIngest([]diff.Task{t1, t2}, loc, true, time.Time{}, func(int64) []byte { return nil }, nil)
	require.NoError(t, err)
	whole, apart := map[int64][]byte{}, map[int64][]byte{}
	for _, p := range prepared {
		whole[p.TaskID()] = p.Record()
		rec, ok, err := RecordApart(p.Record())
		require.NoError(t, err)
		require.True(t, ok)
		require.Less(t, len(rec), len(p.Record()))
		apart[p.TaskID()] = rec
	}
	get := func(id int64) []byte { return apart[id] }
	t1.Name, t1.UpdatedAt = "renamed", "2026-04-09 10:00:00" // task 1 changed, task 2 did not

	var asked [][]int64
	fetch := func(ids []int64) (map[int64][]byte, error) {
		asked = append(asked, slices.Clone(ids))
		return whole, nil
	}
	prepared, res, err := PrepareIngest([]diff.Task{t1, t2}, loc, true, time.Time{}, get, fetch)
	require.NoError(t, err)
	assert.Equal(t, [][]int64{{1}}, asked, "asked once, for the changed task only")
	assert.Equal(t, 1, res.Skipped)
	require.Len(t, prepared, 1)
	require.Equal(t, 1, prepared[0].Len())
	body, typ := prepared[0].Event(0, 1)
	assert.Equal(t, diff.TypeTaskUpdated, typ)
	assert.Contains(t, string(body), `{"field":"name","from":"任务 1","to":"renamed"}`, "diffed against the whole record's values")

	_, _, err = PrepareIngest([]diff.Task{t1}, loc, true, time.Time{}, get, nil)
	require.ErrorIs(t, err, errApart)
}
