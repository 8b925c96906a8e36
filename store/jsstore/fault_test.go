// Test helpers for faults: a TCP proxy that cuts a replica's connection,
// and a cluster whose nodes listen behind such proxies.

package jsstore

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/store/storetest"
)

// cutProxy forwards TCP connections to a target until cut: then it resets
// every connection (RST, as the kernel does for a process killed with
// -9) and refuses new ones.
type cutProxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  []*net.TCPConn
	cut    bool
}

func newCutProxy(t testing.TB, target string) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cutProxy{l: l, target: target}
	t.Cleanup(p.close)
	go p.serve()
	return p
}

func (p *cutProxy) addr() string { return p.l.Addr().String() }

func (p *cutProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		go p.pipe(c.(*net.TCPConn))
	}
}

func (p *cutProxy) pipe(in *net.TCPConn) {
	out, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		in.Close()
		return
	}
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		reset(in)
		reset(out.(*net.TCPConn))
		return
	}
	p.conns = append(p.conns, in, out.(*net.TCPConn))
	p.mu.Unlock()
	go func() { _, _ = io.Copy(out, in); out.Close() }()
	_, _ = io.Copy(in, out)
	in.Close()
}

func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

// kill resets every connection and refuses new ones.
func (p *cutProxy) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for _, c := range p.conns {
		reset(c)
	}
	p.conns = nil
}

func (p *cutProxy) close() {
	p.kill()
	p.l.Close()
}

// faultCluster is an in-process JetStream cluster whose every client
// connection and route runs through a cutProxy, so a node can die as a
// process killed with -9 does for the others: connections reset at once,
// no Raft leadership handed over (an in-process Shutdown is graceful).
type faultCluster struct {
	*testCluster
	client []*cutProxy          // client proxy of each node
	routes map[[2]int]*cutProxy // route proxy from node i to node j
}

// runFaultCluster starts n nodes behind proxies and waits until the
// cluster can create a stream replicated n times.
func runFaultCluster(t testing.TB, n int) *faultCluster {
	t.Helper()
	c := &faultCluster{testCluster: &testCluster{}, routes: map[[2]int]*cutProxy{}}
	clusterPorts := freePorts(t, n)
	for j := range n {
		for i := range n {
			if i != j {
				c.routes[[2]int{i, j}] = newCutProxy(t, fmt.Sprintf("127.0.0.1:%d", clusterPorts[j]))
			}
		}
	}
	for i := range n {
		var routes []*url.URL
		for j := range n {
			if j != i {
				routes = append(routes, &url.URL{Scheme: "nats", Host: c.routes[[2]int{i, j}].addr()})
			}
		}
		o := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
			JetStream: true, StoreDir: t.TempDir(),
			Cluster: server.ClusterOpts{Name: "incs", Host: "127.0.0.1", Port: clusterPorts[i], NoAdvertise: true},
			Routes:  routes,
		}
		s, err := server.NewServer(o)
		require.NoError(t, err)
		s.Start()
		t.Cleanup(s.Shutdown)
		require.True(t, s.ReadyForConnections(20*time.Second), "node %d", i+1)
		c.nodes = append(c.nodes, s)
		c.opts = append(c.opts, o)
		c.client = append(c.client, newCutProxy(t, strings.TrimPrefix(s.ClientURL(), "nats://")))
	}
	waitFormed(t, c.clientURL(0), n)
	return c
}

// clientURL is node i's client URL through its proxy.
func (c *faultCluster) clientURL(i int) string { return "nats://" + c.client[i].addr() }

// urls returns every node's client URL through its proxy, comma-separated.
func (c *faultCluster) urls() string {
	var u []string
	for i := range c.client {
		u = append(u, c.clientURL(i))
	}
	return strings.Join(u, ",")
}

// kill cuts node i off as a kill -9 would, then stops it.
func (c *faultCluster) kill(i int) {
	c.client[i].kill()
	for k, p := range c.routes {
		if k[0] == i || k[1] == i {
			p.kill()
		}
	}
	c.nodes[i].Shutdown()
}

// freePorts returns n ports free now (storetest.FreePort): a route port
// must be known before the nodes start and kept when one restarts.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ports[i] = storetest.FreePort(t)
	}
	return ports
}
