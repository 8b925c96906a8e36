// Tests of the wire protocol: the commit reply's checks (wire.go).

package jsstore

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCommitReply: a reply is taken only when it is for the batch sent,
// with as many messages as were sent; a refusal is the server's error.
func TestCommitReply(t *testing.T) {
	seq, err := commitReply([]byte(`{"stream":"incs","seq":42,"batch":"b1","count":3}`), "b1", 3)
	require.NoError(t, err)
	require.Equal(t, uint64(42), seq)

	for _, c := range []struct{ reply, want string }{
		{`{"stream":"incs","seq":42,"batch":"b2","count":3}`, `batch commit: the reply is for batch "b2" of 3 messages, but "b1" of 3 was sent`},
		{`{"stream":"incs","seq":42,"batch":"b1","count":2}`, `batch commit: the reply is for batch "b1" of 2 messages, but "b1" of 3 was sent`},
		{`{"stream":"incs","seq":42}`, `batch commit: the reply is for batch "" of 0 messages, but "b1" of 3 was sent`},
		{`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 7"}}`, "wrong last sequence: 7"},
		{`nope`, `batch commit: bad reply "nope"`},
	} {
		_, err := commitReply([]byte(c.reply), "b1", 3)
		require.ErrorContains(t, err, c.want, c.reply)
	}
	_, err = commitReply([]byte(`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 7"}}`), "b1", 3)
	require.True(t, isWrongLastSeq(err), "a refusal stays the server's error: %v", err)
}
