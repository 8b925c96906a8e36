package poller_test

// Tests of the fast page decoder that skips unchanged tasks (head.go,
// pagescan.go): it agrees with decodePage, skips what it should, falls back
// when it must, and is fuzzed.

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/poller"
)

// skipSet is a Skipper that skips the tasks it holds a head of, when
// unchanged.
type skipSet map[int64]poller.TaskHead

func (s skipSet) Unchanged(h *poller.TaskHead) bool {
	old, ok := s[h.ID]
	return ok && h.Unchanged(&old)
}

func (s skipSet) learn(heads []poller.TaskHead) skipSet {
	for _, h := range heads {
		s[h.ID] = h
	}
	return s
}

// never skips nothing but takes the fast path.
type never struct{}

func (never) Unchanged(*poller.TaskHead) bool { return false }

// TestDecodePageSkip_SameAsDecodePage checks that the fast path decodes
// every task it does not skip exactly as the strict decoder does.
func TestDecodePageSkip_SameAsDecodePage(t *testing.T) {
	body := simPage(t, 100)
	want, err := poller.DecodePage(body, 1, 100)
	require.NoError(t, err)
	got, err := poller.DecodePageSkip(body, 1, 100, never{})
	require.NoError(t, err)
	assert.Equal(t, want.Total, got.Total)
	require.Len(t, got.Tasks, 100)
	assert.Equal(t, want.Heads, got.Heads)
	for i := range want.Tasks {
		assert.Equal(t, want.Tasks[i], got.Tasks[i])
		assert.Equal(t, string(want.Tasks[i].Raw), string(got.Tasks[i].Raw))
	}
	for _, h := range got.Heads {
		assert.Positive(t, h.Created)
		assert.GreaterOrEqual(t, h.Updated, h.Created)
		assert.Positive(t, h.LastLog)
		assert.Positive(t, h.Logs)
	}
}

func TestDecodePageSkip_Skips(t *testing.T) {
	body := simPage(t, 100)
	first, err := poller.DecodePageSkip(body, 1, 100, never{})
	require.NoError(t, err)
	known := skipSet{}.learn(first.Heads)

	p, err := poller.DecodePageSkip(body, 1, 100, known)
	require.NoError(t, err)
	assert.Empty(t, p.Tasks)
	require.Len(t, p.Heads, 100)
	for _, h := range p.Heads {
		assert.True(t, h.Skipped)
	}

	// One task gets a new updated_at: it alone is decoded.
	changed := first.Tasks[7]
	old := []byte(`"updated_at":"` + changed.UpdatedAt + `"`)
	i := bytes.Index(body, changed.Raw)
	require.GreaterOrEqual(t, i, 0)
	edited := bytes.Clone(body)
	j := bytes.Index(edited[i:], old)
	require.GreaterOrEqual(t, j, 0)
	copy(edited[i+j:], `"updated_at":"2099-01-01 00:00:00"`)
	p, err = poller.DecodePageSkip(edited, 1, 100, known)
	require.NoError(t, err)
	require.Len(t, p.Tasks, 1)
	assert.Equal(t, changed.ID, p.Tasks[0].ID)
	assert.Equal(t, "2099-01-01 00:00:00", p.Tasks[0].UpdatedAt)
	assert.False(t, p.Heads[7].Skipped)
	assert.Len(t, p.Tasks[0].Logs, len(changed.Logs))
	assert.Equal(t, string(changed.Logs[0].Raw), string(p.Tasks[0].Logs[0].Raw))
}

// TestDecodeSkip_KeepsBody: a body whose tasks nearly all changed, in a
// buffer without much room to spare, is kept: each task's Raw points
// into it (no copy), and the tasks decode as from a copy. A body of
// mostly unchanged tasks, or with much room to spare, is copied from,
// so that a pooled buffer can be reused.
func TestDecodeSkip_KeepsBody(t *testing.T) {
	body := simPage(t, 100)
	want, err := poller.DecodePageSkip(body, 1, 100, never{})
	require.NoError(t, err)
	within := func(raw, b []byte) bool { // raw is a part of b's memory
		if len(raw) == 0 {
			return false
		}
		r, lo := uintptr(unsafe.Pointer(&raw[0])), uintptr(unsafe.Pointer(&b[0]))
		return r >= lo && r+uintptr(len(raw)) <= lo+uintptr(len(b))
	}

	b := bytes.Clone(body)
	p, kept, err := poller.DecodeSkip(b, 1, 100, never{}, true)
	require.NoError(t, err)
	require.True(t, kept)
	require.Len(t, p.Tasks, 100)
	for i := range p.Tasks {
		assert.True(t, within(p.Tasks[i].Raw, b), "task %d's Raw is in the body", i)
		assert.Equal(t, want.Tasks[i], p.Tasks[i])
	}

	_, kept, err = poller.DecodeSkip(bytes.Clone(body), 1, 100, never{}, false)
	require.NoError(t, err)
	assert.False(t, kept, "not offered")

	roomy := append(make([]byte, 0, 2*len(body)), body...)
	p, kept, err = poller.DecodeSkip(roomy, 1, 100, never{}, true)
	require.NoError(t, err)
	assert.False(t, kept, "twice the room it needs")
	assert.False(t, within(p.Tasks[0].Raw, roomy), "copied out")

	known := skipSet{}.learn(want.Heads[:50])
	p, kept, err = poller.DecodeSkip(bytes.Clone(body), 1, 100, known, true)
	require.NoError(t, err)
	assert.False(t, kept, "half the tasks unchanged")
	assert.Len(t, p.Tasks, 50)
}

// TestDecodePageSkip_Fallback checks bodies the fast path does not take:
// the strict decoder decides, so errors are the same with or without a
// Skipper.
func TestDecodePageSkip_Fallback(t *testing.T) {
	task := `{"id":1,"status":1,"created_at":"2026-04-08 17:22:01","updated_at":"2026-04-08 17:22:01","logs":[{"id":5,"type":1}]}`
	page := func(data string) []byte {
		return []byte(`{"status":"success","code":200,"message":"","data":{"total":1,"data":[` + data + `]},"error":{}}`)
	}
	tests := []struct {
		name  string
		body  []byte
		tasks int // when it decodes
	}{
		{name: "plain", body: page(task), tasks: 1},
		{name: "code as string", body: bytes.Replace(page(task), []byte(`200`), []byte(`"200"`), 1), tasks: 1},
		{name: "spaces", body: []byte(" { \"status\" : \"success\" , \"code\" : 200 , \"data\" : { \"total\" : 1 , \"data\" : [ " + task + " ] } } \n"), tasks: 1},
		{name: "escaped key", body: page(strings.Replace(task, `"id":1`, `"\u0069d":1`, 1)), tasks: 1},
		{name: "escaped time", body: page(strings.Replace(task, `"2026-04-08 17:22:01"`, `"2026-04-08 17:22:0\u0031"`, 1)), tasks: 1},
		{name: "upper-case key", body: page(strings.Replace(task, `"id":1`, `"ID":1`, 1)), tasks: 1},
		{name: "float id", body: page(strings.Replace(task, `"id":1`, `"id":1.0`, 1))},
		{name: "no id", body: page(strings.Replace(task, `"id":1,`, ``, 1))},
		{name: "log without id", body: page(strings.Replace(task, `"id":5`, `"id":0`, 1))},
		{name: "null logs", body: page(strings.Replace(task, `[{"id":5,"type":1}]`, `null`, 1)), tasks: 1},
		{name: "null data", body: []byte(`{"status":"success","code":200,"data":{"total":0,"data":null}}`)},
		{name: "null data with total", body: []byte(`{"status":"success","code":200,"data":{"total":3,"data":null}}`)},
		{name: "error envelope", body: []byte(`{"status":"error","code":500,"message":"系统繁忙","data":null}`)},
		{name: "code 10001", body: []byte(`{"status":"success","code":10001,"data":{"total":0,"data":[]}}`)},
		{name: "truncated", body: page(task)[:60]},
		{name: "trailing garbage", body: append(page(task), `x`...)},
		{name: "html", body: []byte(`<html>502 Bad Gateway</html>`)},
		{name: "no total", body: []byte(`{"status":"success","code":200,"data":{"data":[]}}`)},
		{name: "task not an object", body: page(`[1]`)},
		{name: "string with a quote", body: page(strings.Replace(task, `"status":1`, `"name":"a \"b\" \\","status":1`, 1)), tasks: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, wantErr := poller.DecodePage(tt.body, 1, 100)
			got, err := poller.DecodePageSkip(tt.body, 1, 100, never{})
			if wantErr != nil {
				var we, ge *poller.APIError
				require.True(t, errors.As(wantErr, &we))
				require.True(t, errors.As(err, &ge), "fast path: %v", err)
				assert.Equal(t, we.Kind, ge.Kind)
				assert.Equal(t, wantErr.Error(), err.Error())
				return
			}
			require.NoError(t, err)
			assert.Len(t, got.Tasks, tt.tasks)
			assert.Equal(t, want.Total, got.Total)
			assert.Equal(t, len(want.Heads), len(got.Heads))
			for i := range want.Tasks {
				assert.Equal(t, want.Tasks[i].ID, got.Tasks[i].ID)
				assert.Equal(t, want.Tasks[i].UpdatedAt, got.Tasks[i].UpdatedAt)
				assert.Equal(t, string(want.Tasks[i].Raw), string(got.Tasks[i].Raw))
			}
		})
	}
}

// FuzzDecodePageSkip checks the fast path against the strict decoder:
// whatever the strict decoder reads, the fast path reads the same, skipping
// only tasks the Skipper knows; it fails only where the strict one does.
func FuzzDecodePageSkip(f *testing.F) {
	valid := simPage(f, 3)
	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Add(bytes.ReplaceAll(valid, []byte(`"id"`), []byte(`"Id"`)))
	f.Add([]byte(`{"status":"success","code":"200","data":{"total":1,"data":[{"id":2,"logs":[{"id":3}],"updated_at":"2026-04-08 17:22:01"}]}}`))
	f.Add([]byte(`{"status":"success","code":200,"data":{"total":0,"data":[]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		want, wantErr := poller.DecodePage(body, 1, 100)
		got, err := poller.DecodePageSkip(body, 1, 100, never{})
		if wantErr != nil {
			if err != nil {
				var ae *poller.APIError
				require.True(t, errors.As(err, &ae))
			}
			return // the fast path may read what the strict one refuses only in tasks it decodes itself
		}
		require.NoError(t, err)
		require.Equal(t, want.Total, got.Total)
		require.Len(t, got.Heads, len(want.Heads))
		require.Len(t, got.Tasks, len(want.Tasks))
		for i := range want.Tasks {
			assert.Equal(t, want.Tasks[i].ID, got.Tasks[i].ID)
			assert.Equal(t, want.Tasks[i].Status, got.Tasks[i].Status)
			assert.Equal(t, len(want.Tasks[i].Logs), len(got.Tasks[i].Logs))
		}
		known := skipSet{}.learn(got.Heads)
		again, err := poller.DecodePageSkip(body, 1, 100, known)
		require.NoError(t, err)
		for i, h := range again.Heads {
			old := known[h.ID]
			assert.Equal(t, h.Unchanged(&old), h.Skipped, "task %d", i)
		}
	})
}

// BenchmarkIdlePage measures the idle path of a cycle, without the network:
// decoding a page of 100 tasks the relay has handled before.
//
//   - decode: the strict decoder, all 100 tasks (what the naive sweep pays
//     before the store can skip them).
//   - skip: the fast path with all 100 known: scan, head checks, nothing
//     decoded.
//   - skip-5-changed: the fast path with 5 tasks changed, which are
//     decoded.
func BenchmarkIdlePage(b *testing.B) {
	body := simPage(b, 100)
	first, err := poller.DecodePage(body, 1, 100)
	if err != nil {
		b.Fatal(err)
	}
	all := skipSet{}.learn(first.Heads)
	some := skipSet{}.learn(first.Heads)
	for _, h := range first.Heads[:5] {
		delete(some, h.ID)
	}
	for _, bm := range []struct {
		name    string
		skip    poller.Skipper
		decoded int
	}{
		{name: "decode", skip: nil, decoded: 100},
		{name: "skip", skip: all, decoded: 0},
		{name: "skip-5-changed", skip: some, decoded: 5},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for range b.N {
				p, err := poller.DecodePageSkip(body, 1, 100, bm.skip)
				if err != nil || len(p.Tasks) != bm.decoded || len(p.Heads) != 100 {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestDecodePageSkip_LogEdit checks that a task whose only change is a
// log's updated_at (a comment edit; whether the task's own updated_at moves
// is undocumented) is not skipped, on the fast path and the strict one.
func TestDecodePageSkip_LogEdit(t *testing.T) {
	page := func(logUpdated string) []byte {
		return []byte(`{"status":"success","code":200,"data":{"total":1,"data":[{"id":2,"status":1,` +
			`"created_at":"2026-04-08 17:00:00","updated_at":"2026-04-08 17:22:01",` +
			`"logs":[{"id":3,"updated_at":"2026-04-08 17:22:01"},{"id":4,"updated_at":"` + logUpdated + `"}]}]}}`)
	}
	first, err := poller.DecodePage(page("2026-04-08 17:22:05"), 1, 100)
	require.NoError(t, err)
	require.Len(t, first.Heads, 1)
	assert.NotZero(t, first.Heads[0].LogUpdated)
	known := skipSet{}.learn(first.Heads)

	same, err := poller.DecodePageSkip(page("2026-04-08 17:22:05"), 1, 100, known)
	require.NoError(t, err)
	assert.True(t, same.Heads[0].Skipped, "unchanged task skipped")
	assert.Equal(t, first.Heads[0].LogUpdated, same.Heads[0].LogUpdated, "fast path reads the same head")

	edited, err := poller.DecodePageSkip(page("2026-04-08 17:30:00"), 1, 100, known)
	require.NoError(t, err)
	assert.False(t, edited.Heads[0].Skipped, "a log's updated_at moved: not skipped")
	require.Len(t, edited.Tasks, 1)
}
