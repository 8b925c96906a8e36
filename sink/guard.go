package sink

// Guard, the check of every outbound address a sink connects to (deny and
// allow networks, link-local and the like always refused), at dial time and
// through a proxy, and RefusedError, what a refusal returns.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"syscall"
	"time"
)

// ErrRefusedAddress is matched by errors.Is on every *RefusedError.
var ErrRefusedAddress = errors.New("outbound address refused")

// RefusedError is a connection the Guard refused before it was made: the
// target resolved to an address that is always refused (link-local, such
// as the cloud metadata service 169.254.169.254; unspecified; multicast),
// or one the sink's deny_networks or allow_networks rule out.
//
// Deliver returns it wrapped in a plain, retryable error: a DNS change can
// make the target acceptable again, and until then the sink shows as
// failing (status, /readyz, metrics) and every attempt is logged with this
// cause; once retry.max_elapsed runs out the event is dead-lettered like
// any other lasting failure.
type RefusedError struct {
	Addr   netip.Addr
	Reason string // e.g. "link-local (cloud metadata)", "in deny_networks 10.0.0.0/8"
}

// Error names the refused address and why.
func (e *RefusedError) Error() string {
	return fmt.Sprintf("outbound guard: refused to connect to %s: %s", e.Addr, e.Reason)
}

// Is matches ErrRefusedAddress.
func (e *RefusedError) Is(target error) bool { return target == ErrRefusedAddress }

// Guard decides which addresses webhook and chat sinks may connect to. It
// is checked at connect time, on the address DNS returned, so a name that
// later resolves somewhere else is caught too. Link-local (169.254.0.0/16,
// fe80::/10), unspecified and multicast addresses are always refused; an
// address in a Deny network is refused; when Allow is not empty an address
// must be in one of its networks. A Guard is safe for concurrent use; the
// zero Guard refuses only what is always refused.
type Guard struct {
	deny, allow []netip.Prefix
	// proxies holds the addresses of HTTP proxies the transport dialed:
	// only the always-refused rule applies to them, the target's own
	// address is checked when the proxy is chosen.
	proxies sync.Map // "host:port" -> struct{}
}

// NewGuard parses deny and allow as CIDR networks ("10.0.0.0/8",
// "fd00::/8"). Its error names the bad entry.
func NewGuard(deny, allow []string) (*Guard, error) {
	d, a, err := parseNetworks(deny, allow)
	if err != nil {
		return nil, fmt.Errorf("guard: %w", err)
	}
	return &Guard{deny: d, allow: a}, nil
}

// Check returns nil if the guard lets a connection to ip through, or a
// *RefusedError saying why not.
func (g *Guard) Check(ip netip.Addr) error {
	if err := alwaysRefused(ip); err != nil {
		return err
	}
	ip = ip.Unmap()
	for _, p := range g.deny {
		if p.Contains(ip) {
			return &RefusedError{Addr: ip, Reason: "in deny_networks " + p.String()}
		}
	}
	if len(g.allow) == 0 {
		return nil
	}
	for _, p := range g.allow {
		if p.Contains(ip) {
			return nil
		}
	}
	return &RefusedError{Addr: ip, Reason: "not in allow_networks"}
}

// alwaysRefused refuses link-local, unspecified and multicast addresses,
// IPv4-mapped IPv6 forms included.
func alwaysRefused(ip netip.Addr) error {
	ip = ip.Unmap()
	reason := ""
	switch {
	case !ip.IsValid():
		reason = "not an IP address"
	case ip.IsLinkLocalUnicast() && ip.Is4():
		reason = "link-local (169.254.0.0/16, where cloud metadata services such as 169.254.169.254 live)"
	case ip.IsLinkLocalUnicast():
		reason = "link-local (fe80::/10)"
	case ip.IsUnspecified():
		reason = "unspecified address"
	case ip.IsMulticast(), ip.IsLinkLocalMulticast(), ip.IsInterfaceLocalMulticast():
		reason = "multicast address"
	default:
		return nil
	}
	return &RefusedError{Addr: ip, Reason: reason}
}

// Control is a net.Dialer Control function applying Check to the address
// about to be connected (after DNS, before the connection is made: a
// refused address sees no packet).
func (g *Guard) Control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &RefusedError{Reason: fmt.Sprintf("cannot parse dial address %q", address)}
	}
	return g.Check(ap.Addr())
}

// controlProxy is Control for the connection to an HTTP proxy: only the
// always-refused rule applies.
func controlProxy(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &RefusedError{Reason: fmt.Sprintf("cannot parse dial address %q", address)}
	}
	return alwaysRefused(ap.Addr())
}

// DialContext dials like a net.Dialer with Control set to g.Control, or
// to the always-refused rule alone for an HTTP proxy that Proxy chose.
func (g *Guard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: g.Control}
	if _, ok := g.proxies.Load(addr); ok {
		d.Control = controlProxy
	}
	return d.DialContext(ctx, network, addr)
}

// Proxy is http.ProxyFromEnvironment for a guarded transport. When a
// proxy is used the relay never connects to the target itself, so the
// target's host is resolved and checked here, before the request leaves
// (the proxy resolves it again; this is as close as a proxied request can
// be checked).
func (g *Guard) Proxy(req *http.Request) (*url.URL, error) {
	u, err := http.ProxyFromEnvironment(req)
	if err != nil || u == nil {
		return u, err
	}
	if err := g.checkHost(req.Context(), req.URL.Hostname()); err != nil {
		return nil, err
	}
	g.proxies.Store(proxyAddr(u), struct{}{})
	return u, nil
}

// checkHost resolves host (unless it is an IP literal) and checks every
// address it resolves to.
func (g *Guard) checkHost(ctx context.Context, host string) error {
	if ip, err := netip.ParseAddr(host); err == nil {
		return g.Check(ip)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return fmt.Errorf("outbound guard: resolve %s: %w", host, err)
	}
	for _, ip := range ips {
		if err := g.Check(ip); err != nil {
			return err
		}
	}
	return nil
}

// proxyAddr is the "host:port" the transport dials for proxy u.
func proxyAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "https":
			port = "443"
		case "socks5", "socks5h":
			port = "1080"
		default:
			port = "80"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// WebhookTransport returns the webhook sink's transport (keep-alive
// connections sized for maxInFlight deliveries) with every dial guarded;
// set it as WebhookConfig.Transport.
func (g *Guard) WebhookTransport(maxInFlight int) *http.Transport {
	if maxInFlight <= 0 {
		maxInFlight = DefaultMaxInFlight
	}
	t := newWebhookTransport(maxInFlight)
	t.DialContext = g.DialContext
	t.Proxy = g.Proxy
	return t
}

// HTTPClient returns a client whose every dial is guarded, for
// ChatConfig.HTTPClient. The caller closes its idle connections when done.
func (g *Guard) HTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = g.DialContext
	t.Proxy = g.Proxy
	return &http.Client{Transport: t}
}
