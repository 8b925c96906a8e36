package admin

// The admin API's server: its routes, the guard against cross-site
// requests and foreign host names, the token, and attaching it to a relay.

import (
	"context"
	"crypto/subtle"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
)

//go:embed admin.html
var adminPage []byte

// Server is the admin API of one relay: it serves the page (/),
// /healthz, /readyz, /metrics and the /v1 API on admin.addr.
type Server struct {
	r   *relay.Relay
	log zerolog.Logger // the relay's
	ln  net.Listener
	srv *http.Server
	// set holds what a reload may change: the token, the host names and
	// the redaction.
	set atomic.Pointer[settings]
}

// settings are the admin section's keys that a reload may change.
type settings struct {
	token string
	// hosts are the lowercased host names accepted in Host besides IP
	// addresses and localhost: admin.hosts and the host of admin.addr.
	hosts map[string]bool
	// redact lists the event fields masked in /v1/events (admin.redact).
	redact []string
}

// newSettings reads cfg's settings.
func newSettings(cfg config.AdminConfig) *settings {
	s := &settings{token: cfg.Token, hosts: map[string]bool{}, redact: cfg.Redact}
	for _, h := range append([]string{hostOnly(cfg.Addr)}, cfg.Hosts...) {
		if h != "" {
			s.hosts[strings.ToLower(h)] = true
		}
	}
	return s
}

// Reconfigure takes the admin section of a reloaded config: its token,
// host names and redaction apply to the next request (admin.addr cannot
// change while the relay runs; the reload refuses that).
func (a *Server) Reconfigure(cfg *config.Config) { a.set.Store(newSettings(cfg.Admin)) }

var _ relay.Server = (*Server)(nil)

// Open opens the relay of cfg (relay.Open) and, when admin.addr is set,
// binds its admin API there and attaches it, so that the relay's Run
// serves it. On error the relay is closed again.
func Open(ctx context.Context, cfg *config.Config, log zerolog.Logger, opts relay.Options) (*relay.Relay, error) {
	r, err := relay.Open(ctx, cfg, log, opts)
	if err != nil {
		return nil, err
	}
	if cfg.Admin.Addr == "" {
		return r, nil
	}
	a, err := NewServer(r, cfg.Admin)
	if err != nil {
		r.Close(context.Background())
		return nil, err
	}
	r.SetAdmin(a)
	return r, nil
}

// NewServer binds the admin API of r to cfg.Addr; it serves once Start
// is called (by the relay's Run, see relay.Relay.SetAdmin).
func NewServer(r *relay.Relay, cfg config.AdminConfig) (*Server, error) {
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listen on %s: %w", cfg.Addr, err)
	}
	a := &Server{r: r, log: r.Logger(), ln: ln}
	a.set.Store(newSettings(cfg))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.page)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.Handle("GET /metrics", a.auth(promhttp.HandlerFor(r.Registry(), promhttp.HandlerOpts{})))
	mux.Handle("GET /v1/sinks", a.auth(http.HandlerFunc(a.sinks)))
	mux.Handle("GET /v1/sinks/{name}", a.auth(http.HandlerFunc(a.sink)))
	mux.Handle("GET /v1/poll", a.auth(http.HandlerFunc(a.pollStatus)))
	mux.Handle("GET /v1/cluster", a.auth(http.HandlerFunc(a.cluster)))
	mux.Handle("GET /v1/events", a.auth(http.HandlerFunc(a.events)))
	mux.Handle("GET /v1/schemas/{file}", a.auth(http.HandlerFunc(a.schema)))
	mux.Handle("GET /v1/asyncapi.yaml", a.auth(http.HandlerFunc(a.asyncAPI)))
	mux.Handle("POST /v1/sinks/{name}/replay", a.auth(http.HandlerFunc(a.replay)))
	mux.Handle("POST /v1/sinks/{name}/resume", a.auth(http.HandlerFunc(a.resume)))
	mux.Handle("GET /v1/reload", a.auth(http.HandlerFunc(a.reloadStatus)))
	mux.Handle("POST /v1/reload", a.auth(http.HandlerFunc(a.reload)))
	// Every POST changes state: refuse those a browser says come from
	// another origin (a form or fetch on some web page the operator has
	// open). The page's own calls are same-origin; curl sends neither
	// Sec-Fetch-Site nor Origin and passes.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		a.log.Debug().Str("method", req.Method).Str("path", req.URL.Path).Msg("admin: cross-origin request refused")
		httpError(w, http.StatusForbidden, "cross-origin request refused: the admin API takes POSTs from its own page and from clients such as curl, not from other sites")
	}))
	a.srv = &http.Server{Handler: a.guard(cop.Handler(mux)), ReadHeaderTimeout: 10 * time.Second}
	return a, nil
}

// guard sets the security headers on every answer and refuses, with 421
// and before any handler runs, a request whose Host names a host the
// relay does not know: after DNS rebinding, a web page's own name points
// at the admin address and its scripts could read the API.
func (a *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if host := hostOnly(req.Host); !a.hostAccepted(host) {
			a.log.Debug().Str("path", req.URL.Path).Msg("admin: request for an unknown host refused")
			httpError(w, http.StatusMisdirectedRequest, fmt.Sprintf("host %q is not accepted: the admin API answers requests for IP addresses, localhost, the host of admin.addr and the names listed in admin.hosts", host))
			return
		}
		next.ServeHTTP(w, req)
	})
}

// hostAccepted reports whether a request may name host: an IP address (a
// rebinding attack needs a name), localhost, or a name in a.hosts, in any
// case. An empty Host (HTTP/1.0) names nothing to rebind and is accepted.
func (a *Server) hostAccepted(host string) bool {
	if host == "" {
		return true
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	host = strings.ToLower(host)
	return host == "localhost" || a.set.Load().hosts[host]
}

// hostOnly returns the host of a Host header or host:port address, without
// port or IPv6 brackets.
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}

// Addr is the address the admin API listens on.
func (a *Server) Addr() string { return a.ln.Addr().String() }

// Start serves in the background until Close.
func (a *Server) Start() {
	go func() {
		if err := a.srv.Serve(a.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error().Err(err).Msg("admin server")
		}
	}()
}

// Close stops serving.
func (a *Server) Close(ctx context.Context) {
	_ = a.srv.Shutdown(ctx)
	_ = a.ln.Close()
}

// auth requires the admin token, when one is set, as a bearer token (or a
// token query parameter, for the admin page).
func (a *Server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := a.set.Load().token
		if token == "" {
			next.ServeHTTP(w, r)
			return
		}
		got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if got == "" {
			got = r.URL.Query().Get("token")
		}
		if subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			httpError(w, http.StatusUnauthorized, "admin token required")
			return
		}
		next.ServeHTTP(w, r)
	})
}
