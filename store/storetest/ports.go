package storetest

// Ports for test servers that must start on an address known beforehand.

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
)

var (
	portsMu sync.Mutex
	given   = map[int]bool{}
)

// FreePort returns a TCP port on 127.0.0.1 that is free now, for a server
// a test must start, or restart after killing it, on an address known
// beforehand: a relay child process's admin API, a NATS node's client or
// route port. Port 0 would give one from the kernel's ephemeral range,
// which any outgoing connection (a node's route to another, a client)
// may take between the check and the server's bind, and the server then
// never comes up. FreePort draws from below that range, where only
// explicit binds land, and never gives a port twice in one process.
func FreePort(t testing.TB) int {
	t.Helper()
	lo, hi := belowEphemeral()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 200 {
		p := lo + rand.IntN(hi-lo)
		if given[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		_ = l.Close()
		given[p] = true
		return p
	}
	t.Fatalf("storetest: no free port in [%d, %d)", lo, hi)
	return 0
}

// FreeAddr is FreePort as a "127.0.0.1:port" address.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", FreePort(t))
}

// belowEphemeral returns the ports from half the ephemeral range's start
// up to it (16384–32767 by Linux's default).
func belowEphemeral() (lo, hi int) {
	hi = 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var a, z int
		if _, err := fmt.Sscan(string(b), &a, &z); err == nil && a > 2048 {
			hi = a
		}
	}
	return hi / 2, hi
}
