// Tests of the event framing (frame.go).

package jsstore

import (
	"bytes"
	"strconv"
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

// TestCompressedFrames: an event message's compressed data reads back as
// its frames, an older store's uncompressed data reads as it is, and
// damaged compressed data is a bad event message naming its sequence.
func TestCompressedFrames(t *testing.T) {
	var frames []byte
	for i := range 40 {
		e := evOut{off: uint64(i + 1), task: 7, at: 1700000000123456789, typ: "task.commented",
			body: []byte(`{"specversion":"1.0","id":"log-` + strconv.Itoa(i) + `","data":{"task":{"id":7,"name":"Delivery check #7","description":"需要二次确认"}}}`)}
		frames = appendFrame(frames, &e)
	}
	wire := compressFrames(frames)
	require.Equal(t, byte(s2Block), wire[0])
	require.Less(t, len(wire), len(frames)/4, "events of one task compress")

	got, err := eventFrames(wire)
	require.NoError(t, err)
	require.Equal(t, frames, got)
	plain, err := eventFrames(frames)
	require.NoError(t, err)
	require.Equal(t, frames, plain, "uncompressed data, as older versions wrote it")

	m, err := parseEvMsg("$INCS.x.", "$INCS.x.ev.3", 42, wire)
	require.NoError(t, err)
	require.Len(t, m.evs, 40)
	require.Equal(t, 3, m.part)
	require.Equal(t, len(frames)+64+40*64, m.size, "the cache counts a message as read, not as sent")
	old, err := parseEvMsg("$INCS.x.", "$INCS.x.ev.3", 42, frames)
	require.NoError(t, err)
	require.Equal(t, m.evs, old.evs)

	bad := bytes.Clone(wire)
	bad[len(bad)/2] ^= 0xff
	bad = bad[:len(bad)-3]
	_, err = parseEvMsg("$INCS.x.", "$INCS.x.ev.3", 42, bad)
	require.ErrorIs(t, err, errBadFrame)
	require.ErrorContains(t, err, "event message 42")
}
