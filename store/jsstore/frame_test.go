package jsstore

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFrames: events of any type and body come back from an event
// message as packed, compressed or not, each body's capacity cut to its
// length; a damaged message is refused.
func TestFrames(t *testing.T) {
	in := []evOut{
		{off: 1, task: 7, at: 1700000000123456789, typ: "task.created", body: []byte(`{"id":"log-1","comment":"a\nb"}`)},
		{off: 9, task: -3, at: 0, typ: "weird \"type\"\nwith newline and 中文", body: []byte(`{}`)},
		{off: 1 << 62, task: 1 << 40, at: -1, typ: "", body: []byte(`{"x":" "}`)},
	}
	var data []byte
	for i := range in {
		data = appendFrame(data, &in[i])
		require.LessOrEqual(t, len(data), func() int {
			n := 0
			for j := range i + 1 {
				n += frameLen(&in[j])
			}
			return n
		}())
	}
	parse := func(data []byte) []evOut {
		var out []evOut
		require.NoError(t, parseFrames(data, func(off uint64, task, at int64, typ string, body []byte) {
			require.Equal(t, len(body), cap(body))
			out = append(out, evOut{off: off, task: task, at: at, typ: typ, body: body})
		}))
		return out
	}
	require.Equal(t, in, parse(data), "as written before compression: uncompressed")
	require.Equal(t, data, compressFrames(data), "too small to gain: left as it is")

	// A page's frames, alike as JSON events are, go compressed and come
	// back the same.
	var page []evOut
	var plain []byte
	for i := range 200 {
		page = append(page, evOut{off: uint64(i + 1), task: int64(i % 7), at: int64(i), typ: "task.log",
			body: []byte(fmt.Sprintf(`{"id":"evt-%d","type":"task.log","data":{"task":{"id":%d,"status":"running"},"log":{"id":%d,"comment":"step done"}}}`, i, i%7, i))})
		plain = appendFrame(plain, &page[i])
	}
	packed := compressFrames(plain)
	require.Equal(t, byte(encS2), packed[0])
	require.Less(t, len(packed)*3, len(plain), "at least 3 times smaller")
	require.Equal(t, page, parse(packed))

	for _, bad := range []string{"1 2 3 \"x\"\n{}", "1 2 \"x\"\n{}\n", "x 2 3 \"t\"\n{}\n", "1 2 3 t\n{}\n", "s", "s\xff\xff\xff\xff\x0fjunk", string(packed[:len(packed)/2])} {
		require.ErrorIs(t, parseFrames([]byte(bad), func(uint64, int64, int64, string, []byte) {}), errBadFrame, "%q", bad)
	}
}
