package storetest

import (
	"fmt"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFreePort: the ports lie below the ephemeral range, are free (a
// listener binds each), and none is given twice.
func TestFreePort(t *testing.T) {
	lo, hi := belowEphemeral()
	seen := map[int]bool{}
	for range 50 {
		p := FreePort(t)
		require.GreaterOrEqual(t, p, lo)
		require.Less(t, p, hi, "below the ephemeral range")
		require.False(t, seen[p], "port %d given twice", p)
		seen[p] = true
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		require.NoError(t, err)
		require.NoError(t, l.Close())
	}
	host, _, err := net.SplitHostPort(FreeAddr(t))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", host)
}
