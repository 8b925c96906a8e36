package sink

// Tests of the Guard (guard.go): the address check and its lists, a
// proxy's address, and the webhook and chat sinks refused a denied address
// when they connect.

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGuard_Check(t *testing.T) {
	tests := []struct {
		name        string
		deny, allow []string
		ip          string
		refused     string // substring of the reason; "" means allowed
	}{
		{name: "loopback allowed by default", ip: "127.0.0.1"},
		{name: "public allowed by default", ip: "203.0.113.7"},
		{name: "private allowed by default", ip: "10.1.2.3"},
		{name: "cloud metadata", ip: "169.254.169.254", refused: "link-local"},
		{name: "link-local v4", ip: "169.254.0.1", refused: "link-local"},
		{name: "link-local v6", ip: "fe80::1", refused: "link-local"},
		{name: "metadata as v4-mapped v6", ip: "::ffff:169.254.169.254", refused: "link-local"},
		{name: "unspecified v4", ip: "0.0.0.0", refused: "unspecified"},
		{name: "unspecified v6", ip: "::", refused: "unspecified"},
		{name: "multicast", ip: "224.0.0.1", refused: "multicast"},
		{name: "metadata even when allowed", ip: "169.254.169.254", allow: []string{"169.254.0.0/16"}, refused: "link-local"},
		{name: "denied", ip: "127.0.0.1", deny: []string{"127.0.0.0/8"}, refused: "deny_networks 127.0.0.0/8"},
		{name: "denied v4-mapped", ip: "::ffff:10.0.0.9", deny: []string{"10.0.0.0/8"}, refused: "deny_networks"},
		{name: "outside deny", ip: "192.0.2.1", deny: []string{"127.0.0.0/8"}},
		{name: "not in allow", ip: "127.0.0.1", allow: []string{"10.0.0.0/8"}, refused: "not in allow_networks"},
		{name: "in allow", ip: "10.9.8.7", allow: []string{"10.0.0.0/8"}},
		{name: "deny beats allow", ip: "10.0.0.1", deny: []string{"10.0.0.0/24"}, allow: []string{"10.0.0.0/8"}, refused: "deny_networks"},
		{name: "v6 allow", ip: "fd00::5", allow: []string{"fd00::/8"}},
		{name: "unmasked network", ip: "10.0.0.200", deny: []string{"10.0.0.7/24"}, refused: "deny_networks 10.0.0.0/24"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := NewGuard(tt.deny, tt.allow)
			require.NoError(t, err)
			err = g.Check(netip.MustParseAddr(tt.ip))
			if tt.refused == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrRefusedAddress)
			assert.Contains(t, err.Error(), tt.refused)
			var re *RefusedError
			require.ErrorAs(t, err, &re)
		})
	}
}

func TestNewGuard_Invalid(t *testing.T) {
	_, err := NewGuard([]string{"10.0.0.0/8", "10.0.0.0"}, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "deny_networks[1]")
	_, err = NewGuard(nil, []string{"nope"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "allow_networks[0]")
}

func TestGuard_ZeroValue(t *testing.T) {
	var g Guard
	assert.NoError(t, g.Check(netip.MustParseAddr("127.0.0.1")))
	assert.ErrorIs(t, g.Check(netip.MustParseAddr("169.254.169.254")), ErrRefusedAddress)
}

// countingListener counts accepted connections: a refused dial must not
// reach the listener at all.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// newGuardedReceiver is an httptest server on 127.0.0.1 that counts
// connections and requests.
func newGuardedReceiver(t *testing.T) (*httptest.Server, *countingListener, *atomic.Int64) {
	t.Helper()
	var requests atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	cl := &countingListener{Listener: srv.Listener}
	srv.Listener = cl
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, cl, &requests
}

func TestGuard_Webhook(t *testing.T) {
	srv, ln, requests := newGuardedReceiver(t)
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	byName := "http://localhost:" + u.Port() + "/hook" // resolved by DNS at connect time

	tests := []struct {
		name        string
		url         string
		deny, allow []string
		refused     bool
	}{
		{name: "allowed by default", url: srv.URL + "/hook"},
		{name: "allowed by allow_networks", url: srv.URL + "/hook", allow: []string{"127.0.0.0/8"}},
		{name: "denied", url: srv.URL + "/hook", deny: []string{"127.0.0.0/8"}, refused: true},
		{name: "name resolving to a denied address", url: byName, deny: []string{"127.0.0.0/8", "::1/128"}, refused: true},
		{name: "name resolving outside allow_networks", url: byName, allow: []string{"10.0.0.0/8"}, refused: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := NewGuard(tt.deny, tt.allow)
			require.NoError(t, err)
			acc, req := ln.accepted.Load(), requests.Load()
			w := newTestWebhook(t, tt.url, func(c *WebhookConfig) { c.Transport = g.WebhookTransport(4) })
			err = w.Deliver(context.Background(), newConformanceEvent(t, 7, 101))
			if !tt.refused {
				require.NoError(t, err)
				assert.Equal(t, req+1, requests.Load())
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrRefusedAddress)
			assert.NotErrorIs(t, err, ErrPermanent, "a refusal is retryable: DNS may change")
			assert.Contains(t, err.Error(), "webhook hooks: POST ")
			assert.NotContains(t, err.Error(), "/hook", "errors name the host, never the path")
			assert.Equal(t, acc, ln.accepted.Load(), "no connection reached the receiver")
			assert.Equal(t, req, requests.Load())
		})
	}
}

// TestGuard_Metadata dials the cloud metadata address: the dial is refused
// before connect, so it fails at once instead of running into the timeout
// (169.254.169.254 does not answer on this machine).
func TestGuard_Metadata(t *testing.T) {
	g, err := NewGuard(nil, nil)
	require.NoError(t, err)
	w := newTestWebhook(t, "http://169.254.169.254/latest/meta-data/", func(c *WebhookConfig) {
		c.Transport = g.WebhookTransport(1)
		c.Timeout = 10 * time.Second
	})
	start := time.Now()
	err = w.Deliver(context.Background(), newConformanceEvent(t, 7, 101))
	require.Error(t, err)
	var re *RefusedError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, "169.254.169.254", re.Addr.String())
	assert.Contains(t, err.Error(), "link-local")
	assert.NotContains(t, err.Error(), "meta-data")
	assert.Less(t, time.Since(start), 2*time.Second, "refused before connecting, not timed out")

	// The dialer itself, for the raw error.
	_, err = g.DialContext(context.Background(), "tcp", "169.254.169.254:80")
	assert.ErrorIs(t, err, ErrRefusedAddress)
	_, err = g.DialContext(context.Background(), "tcp", "[fe80::1%lo]:80")
	assert.True(t, errors.Is(err, ErrRefusedAddress), "fe80:: refused: %v", err)
}

func TestGuard_Chat(t *testing.T) {
	srv, ln, requests := newGuardedReceiver(t)
	for _, tt := range []struct {
		name    string
		deny    []string
		refused bool
	}{
		{name: "allowed"},
		{name: "denied", deny: []string{"127.0.0.0/8"}, refused: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g, err := NewGuard(tt.deny, nil)
			require.NoError(t, err)
			client := g.HTTPClient()
			t.Cleanup(client.CloseIdleConnections)
			s, err := NewSlack(ChatConfig{Name: "ops", URL: srv.URL + "/services/T000/B000/XXXX", HTTPClient: client, RateLimit: 1000, Burst: 10})
			require.NoError(t, err)
			t.Cleanup(func() { _ = s.Close(context.Background()) })
			acc, req := ln.accepted.Load(), requests.Load()
			err = s.Deliver(context.Background(), newConformanceEvent(t, 7, 101))
			if !tt.refused {
				require.NoError(t, err)
				assert.Equal(t, req+1, requests.Load())
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrRefusedAddress)
			assert.NotContains(t, err.Error(), "XXXX", "the webhook credential never appears")
			assert.Equal(t, acc, ln.accepted.Load())
		})
	}
}

func TestGuard_CheckHost(t *testing.T) {
	g, err := NewGuard([]string{"127.0.0.0/8", "::1/128"}, nil)
	require.NoError(t, err)
	ctx := context.Background()
	assert.ErrorIs(t, g.checkHost(ctx, "localhost"), ErrRefusedAddress)
	assert.ErrorIs(t, g.checkHost(ctx, "169.254.169.254"), ErrRefusedAddress)
	assert.NoError(t, g.checkHost(ctx, "192.0.2.10"))
}

func TestProxyAddr(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"http://proxy.internal", "proxy.internal:80"},
		{"https://proxy.internal", "proxy.internal:443"},
		{"socks5://10.0.0.1", "10.0.0.1:1080"},
		{"http://[fd00::1]:3128", "[fd00::1]:3128"},
	} {
		u, err := url.Parse(tt.in)
		require.NoError(t, err)
		assert.Equal(t, tt.want, proxyAddr(u), tt.in)
	}
}
