// Tests of the event framing (frame.go).

package jsstore

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFrames: events of any type and body come back from an event
// message as packed, each body's capacity cut to its length.
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
	var out []evOut
	require.NoError(t, parseFrames(data, func(off uint64, task, at int64, typ string, body []byte) {
		require.Equal(t, len(body), cap(body))
		out = append(out, evOut{off: off, task: task, at: at, typ: typ, body: body})
	}))
	require.Equal(t, in, out)
	for _, bad := range []string{"1 2 3 \"x\"\n{}", "1 2 \"x\"\n{}\n", "x 2 3 \"t\"\n{}\n", "1 2 3 t\n{}\n"} {
		require.ErrorIs(t, parseFrames([]byte(bad), func(uint64, int64, int64, string, []byte) {}), errBadFrame, "%q", bad)
	}
}
