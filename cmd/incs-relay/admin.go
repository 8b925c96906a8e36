package main

import (
	"context"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/store"
)

//go:embed admin.html
var adminPage []byte

// defaultSinkFailingBound is how long a sink may keep failing (its last
// attempts failed, none succeeded) before /readyz reports the relay not
// ready.
const defaultSinkFailingBound = time.Minute

// adminServer serves /, /healthz, /readyz, /metrics and the /v1 API.
type adminServer struct {
	r     *Relay
	ln    net.Listener
	srv   *http.Server
	token string
	// hosts are the lowercased host names accepted in Host besides IP
	// addresses and localhost: admin.hosts and the host of admin.addr.
	hosts map[string]bool
	// redact lists the event fields masked in /v1/events (admin.redact).
	redact []string
	// sinkFailing bounds how long a sink may fail before /readyz is 503;
	// set before Start (tests shorten it).
	sinkFailing time.Duration
}

func newAdminServer(r *Relay, cfg config.AdminConfig) (*adminServer, error) {
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listen on %s: %w", cfg.Addr, err)
	}
	a := &adminServer{r: r, ln: ln, token: cfg.Token, hosts: map[string]bool{}, redact: cfg.Redact, sinkFailing: defaultSinkFailingBound}
	for _, h := range append([]string{hostOnly(cfg.Addr)}, cfg.Hosts...) {
		if h != "" {
			a.hosts[strings.ToLower(h)] = true
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.page)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.Handle("GET /metrics", a.auth(promhttp.HandlerFor(r.metrics.reg, promhttp.HandlerOpts{})))
	mux.Handle("GET /v1/sinks", a.auth(http.HandlerFunc(a.sinks)))
	mux.Handle("GET /v1/sinks/{name}", a.auth(http.HandlerFunc(a.sink)))
	mux.Handle("GET /v1/poll", a.auth(http.HandlerFunc(a.pollStatus)))
	mux.Handle("GET /v1/cluster", a.auth(http.HandlerFunc(a.cluster)))
	mux.Handle("GET /v1/events", a.auth(http.HandlerFunc(a.events)))
	mux.Handle("GET /v1/schemas/{file}", a.auth(http.HandlerFunc(a.schema)))
	mux.Handle("GET /v1/asyncapi.yaml", a.auth(http.HandlerFunc(a.asyncAPI)))
	mux.Handle("POST /v1/sinks/{name}/replay", a.auth(http.HandlerFunc(a.replay)))
	mux.Handle("POST /v1/sinks/{name}/resume", a.auth(http.HandlerFunc(a.resume)))
	// Every POST changes state: refuse those a browser says come from
	// another origin (a form or fetch on some web page the operator has
	// open). The page's own calls are same-origin; curl sends neither
	// Sec-Fetch-Site nor Origin and passes.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		a.r.log.Debug().Str("method", req.Method).Str("path", req.URL.Path).Msg("admin: cross-origin request refused")
		httpError(w, http.StatusForbidden, "cross-origin request refused: the admin API takes POSTs from its own page and from clients such as curl, not from other sites")
	}))
	a.srv = &http.Server{Handler: a.guard(cop.Handler(mux)), ReadHeaderTimeout: 10 * time.Second}
	return a, nil
}

// guard sets the security headers on every answer and refuses, with 421
// and before any handler runs, a request whose Host names a host the
// relay does not know: after DNS rebinding, a web page's own name points
// at the admin address and its scripts could read the API.
func (a *adminServer) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if host := hostOnly(req.Host); !a.hostAccepted(host) {
			a.r.log.Debug().Str("path", req.URL.Path).Msg("admin: request for an unknown host refused")
			httpError(w, http.StatusMisdirectedRequest, fmt.Sprintf("host %q is not accepted: the admin API answers requests for IP addresses, localhost, the host of admin.addr and the names listed in admin.hosts", host))
			return
		}
		next.ServeHTTP(w, req)
	})
}

// hostAccepted reports whether a request may name host: an IP address (a
// rebinding attack needs a name), localhost, or a name in a.hosts, in any
// case. An empty Host (HTTP/1.0) names nothing to rebind and is accepted.
func (a *adminServer) hostAccepted(host string) bool {
	if host == "" {
		return true
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	host = strings.ToLower(host)
	return host == "localhost" || a.hosts[host]
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
func (a *adminServer) Addr() string { return a.ln.Addr().String() }

// Start serves in the background until Close.
func (a *adminServer) Start() {
	go func() {
		if err := a.srv.Serve(a.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.r.log.Error().Err(err).Msg("admin server")
		}
	}()
}

// Close stops serving.
func (a *adminServer) Close(ctx context.Context) {
	_ = a.srv.Shutdown(ctx)
	_ = a.ln.Close()
}

// auth requires the admin token, when one is set, as a bearer token (or a
// token query parameter, for the admin page).
func (a *adminServer) auth(next http.Handler) http.Handler {
	if a.token == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if got == "" {
			got = r.URL.Query().Get("token")
		}
		if subtle.ConstantTimeCompare([]byte(got), []byte(a.token)) != 1 {
			httpError(w, http.StatusUnauthorized, "admin token required")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *adminServer) page(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(adminPage)
}

// readyz is 200 once the store is open and the last poll succeeded, and 503
// with the reason while polls keep failing or a sink is paused or failing.
func (a *adminServer) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if reason := a.r.notReady(time.Now(), a.sinkFailing); reason != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready:", reason)
		return
	}
	fmt.Fprintln(w, "ready")
}

// sinkFailingBound is the admin server's bound, or the default without one.
func (r *Relay) sinkFailingBound() time.Duration {
	if r.admin != nil {
		return r.admin.sinkFailing
	}
	return defaultSinkFailingBound
}

// pollStaleBound is how long after the last successful poll cycle the
// relay stays ready: three intervals, or one interval plus two request
// timeouts when that is longer (a slow API is not yet a failing one), plus
// the last cycle's own duration (a long sweep is progress, not silence).
func (r *Relay) pollStaleBound(ps poller.Status) time.Duration {
	interval := r.cfg.Poll.Interval.D()
	return max(3*interval, interval+2*r.cfg.Upstream.Timeout.D()) + ps.LastSweep.Duration
}

// notReady returns why the relay is not ready, or "": the store is not
// open; no poll cycle succeeded yet; the last success is older than
// pollStaleBound; a sink is paused; or a sink has been failing for longer
// than sinkFailing.
func (r *Relay) notReady(now time.Time, sinkFailing time.Duration) string {
	if r.db == nil {
		return "store not open"
	}
	// A jetstream replica that does not lead polls nothing: it is ready
	// when it reaches the cluster and some replica holds the lease.
	if reason, follower := r.replicaNotReady(now); reason != "" {
		return reason
	} else if !follower {
		if reason := r.pollNotReady(now); reason != "" {
			return reason
		}
	}
	for _, o := range r.outs {
		st := o.disp.State()
		if st.Paused {
			return fmt.Sprintf("sink %s paused: %s (resume or replay it)", o.cfg.Name, st.PauseReason)
		}
		if st.Failing {
			since, ok := r.metrics.failingFor(o.cfg.Name)
			if !ok { // not seen turning failing: the most it can be
				since = r.started
				if st.LastDeliveryAt.After(since) {
					since = st.LastDeliveryAt
				}
			}
			if now.Sub(since) > sinkFailing {
				return fmt.Sprintf("sink %s failing for %s: %s", o.cfg.Name, roundDur(now.Sub(since)), st.LastError)
			}
		}
	}
	return ""
}

// pollNotReady returns why the polls make the relay not ready, or "".
func (r *Relay) pollNotReady(now time.Time) string {
	r.pipeMu.RLock()
	ps := r.poll.Status()
	r.pipeMu.RUnlock()
	switch since := r.leadSince.Load(); {
	case ps.LastSuccess.IsZero() && ps.LastError == "" && since != 0 && now.Sub(time.Unix(0, since)) <= r.pollStaleBound(ps):
		return "" // a replica that just took over polls its first cycle
	case ps.LastSuccess.IsZero() && ps.LastError != "":
		return "no poll has succeeded yet: " + ps.LastError
	case ps.LastSuccess.IsZero():
		return "waiting for the first poll to complete"
	}
	if since := now.Sub(ps.LastSuccess); since > r.pollStaleBound(ps) {
		if ps.ConsecutiveFailures > 0 {
			return fmt.Sprintf("polls failing for %s (%d in a row): %s", roundDur(since), ps.ConsecutiveFailures, ps.LastError)
		}
		return fmt.Sprintf("no poll has succeeded for %s", roundDur(since))
	}
	return ""
}

// roundDur rounds d for a message: to seconds, or to milliseconds below one.
func roundDur(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}

// sinkStatus is what `status` and GET /v1/sinks show per sink.
type sinkStatus struct {
	Name           string             `json:"name"`
	Type           string             `json:"type"`
	Cursor         uint64             `json:"cursor"`
	Head           uint64             `json:"head"`
	First          uint64             `json:"first"`
	Lag            uint64             `json:"lag"`
	LagSeconds     float64            `json:"lag_seconds"`
	DeadLetters    int                `json:"dead_letters"`
	Dead           []store.DeadLetter `json:"dead,omitempty"`
	Paused         bool               `json:"paused"`
	PauseReason    string             `json:"pause_reason,omitempty"`
	Failing        bool               `json:"failing"`
	LastError      string             `json:"last_error,omitempty"`
	LastErrorAt    *time.Time         `json:"last_error_at,omitempty"`
	LastDeliveryAt *time.Time         `json:"last_delivery_at,omitempty"`
	InFlight       int                `json:"in_flight"`
	Delivered      uint64             `json:"delivered"`
	Retried        uint64             `json:"retried"`
	Running        bool               `json:"running"`
}

// sinkStatuses reports every configured sink from the store and, while the
// relay runs, its dispatcher.
func (r *Relay) sinkStatuses() []sinkStatus {
	out := make([]sinkStatus, 0, len(r.outs))
	for _, o := range r.outs {
		s, err := storeSinkStatus(r.db, o.cfg)
		if err != nil {
			r.log.Warn().Err(err).Str("sink", o.cfg.Name).Msg("status")
		}
		st := o.disp.State()
		s.Running = st.Running
		if st.Cursor > s.Cursor {
			s.Cursor = st.Cursor
		}
		s.Paused, s.PauseReason = st.Paused, st.PauseReason
		s.Failing = st.Failing
		if st.LastError != "" {
			s.LastError = st.LastError
			s.LastErrorAt = timePtr(st.LastErrorAt)
		}
		if !st.LastDeliveryAt.IsZero() {
			s.LastDeliveryAt = timePtr(st.LastDeliveryAt)
		}
		s.InFlight, s.Delivered, s.Retried = st.InFlight, st.Delivered, st.Retried
		finishLag(r.db, &s)
		out = append(out, s)
	}
	return out
}

// storeSinkStatus reads a sink's status from the store alone.
func storeSinkStatus(db store.Store, sc config.SinkConfig) (sinkStatus, error) {
	s := sinkStatus{Name: sc.Name, Type: sc.Type}
	st, err := db.Stats()
	if err != nil {
		return s, err
	}
	s.Head, s.First = st.Head, st.First
	if s.Cursor, err = db.Cursor(sc.Name); err != nil {
		return s, err
	}
	if s.Dead, err = db.DeadLetters(sc.Name); err != nil {
		return s, err
	}
	s.DeadLetters = len(s.Dead)
	ss, err := db.SinkState(sc.Name)
	if err != nil {
		return s, err
	}
	s.Paused, s.PauseReason, s.LastError = ss.Paused, ss.PauseReason, ss.LastError
	s.LastErrorAt, s.LastDeliveryAt = timePtr(ss.LastErrorAt), timePtr(ss.LastDeliveryAt)
	finishLag(db, &s)
	return s, nil
}

func finishLag(db store.Store, s *sinkStatus) {
	s.Lag, s.LagSeconds = 0, 0
	if s.Head > s.Cursor {
		s.Lag = s.Head - s.Cursor
		if ev, err := db.Event(max(s.Cursor+1, s.First)); err == nil && !ev.StoredAt.IsZero() {
			s.LagSeconds = time.Since(ev.StoredAt).Seconds()
		}
	}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// pollView is what `status` and GET /v1/poll show of the poller.
type pollView struct {
	Strategy            string     `json:"strategy"`
	LastSuccess         *time.Time `json:"last_success,omitempty"`
	LastError           string     `json:"last_error,omitempty"`
	ConsecutiveFailures int        `json:"consecutive_failures"`
	Cycles              int        `json:"cycles"`
	Requests            int        `json:"requests_last_cycle"`
	Tiers               *tierView  `json:"tiers,omitempty"`
	MaxUnseenAgeSeconds *float64   `json:"max_unseen_age_seconds,omitempty"`
	Rules               *rulesView `json:"rules,omitempty"`
	// Cluster is the jetstream store's replicas; nil with bbolt.
	Cluster *clusterView `json:"cluster,omitempty"`
}

// tierView is the tiered strategy's part of pollView: requests of the last
// cycle by tier, the budget against what the ceilings need, and each
// tier's freshness.
type tierView struct {
	Scan        int     `json:"scan"`
	Newest      int     `json:"newest"`
	Open        int     `json:"open"`
	Sweep       int     `json:"sweep"`
	Budgeted    int     `json:"budgeted"`
	Fetch       int     `json:"fetch"`
	Tasks       int     `json:"tasks"`
	OpenN       int     `json:"open_tasks"`
	Budget      int     `json:"budget"`
	CeilingNeed float64 `json:"ceiling_need"`
	BudgetShort bool    `json:"budget_short,omitempty"`
	SweepMissed bool    `json:"full_sweep_missed,omitempty"`
	Ordered     bool    `json:"updated_order,omitempty"`
	// OpenAge and FinishedAge are the tiers' freshness in seconds; absent
	// before the first full sweep.
	OpenAge     *float64 `json:"open_freshness_seconds,omitempty"`
	FinishedAge *float64 `json:"finished_freshness_seconds,omitempty"`
}

func (r *Relay) pollView() pollView {
	r.pipeMu.RLock()
	defer r.pipeMu.RUnlock()
	ps := r.poll.Status()
	v := pollView{Strategy: r.cfg.Poll.Strategy, LastSuccess: timePtr(ps.LastSuccess), LastError: ps.LastError,
		ConsecutiveFailures: ps.ConsecutiveFailures, Cycles: ps.Cycles, Requests: ps.Requests}
	if r.tiers != nil {
		t := ps.Tiers
		v.Tiers = &tierView{Scan: t.ScanRequests, Newest: t.NewestRequests, Open: t.OpenRequests, Sweep: t.SweepRequests,
			Budgeted: t.BudgetRequests, Fetch: t.FetchRequests, Tasks: t.Tasks, OpenN: t.Open,
			Budget: t.Budget, CeilingNeed: t.CeilingNeed, BudgetShort: t.BudgetShort, SweepMissed: ps.FullSweepMissed, Ordered: t.Ordered}
		if t.Ready {
			open, fin := ps.OpenAge.Seconds(), ps.FinishedAge.Seconds()
			v.Tiers.OpenAge, v.Tiers.FinishedAge = &open, &fin
		}
	}
	if !ps.SeenThrough.IsZero() {
		age := ps.MaxUnseenAge.Seconds()
		v.MaxUnseenAgeSeconds = &age
	}
	v.Rules = r.rulesView(ps)
	v.Cluster = r.clusterView()
	return v
}

func (a *adminServer) pollStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.r.pollView())
}

func (a *adminServer) sinks(w http.ResponseWriter, _ *http.Request) {
	st := a.r.sinkStatuses()
	for i := range st {
		st[i].Dead = nil // the list stays small; GET /v1/sinks/{name} has them
	}
	writeJSON(w, http.StatusOK, map[string]any{"sinks": st})
}

func (a *adminServer) sink(w http.ResponseWriter, req *http.Request) {
	name := req.PathValue("name")
	for _, s := range a.r.sinkStatuses() {
		if s.Name == name {
			writeJSON(w, http.StatusOK, s)
			return
		}
	}
	httpError(w, http.StatusNotFound, fmt.Sprintf("no sink %q", name))
}

// events lists stored events: ?from=N&limit=K&type=T, or ?latest=K for the
// newest K.
func (a *adminServer) events(w http.ResponseWriter, req *http.Request) {
	q := req.URL.Query()
	eq, err := parseEventQuery(q.Get("from"), q.Get("limit"), q.Get("type"), a.r.cfg.KnownEventType)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if l := q.Get("latest"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			httpError(w, http.StatusBadRequest, "latest: want 1 to 1000")
			return
		}
		head, err := a.r.db.Head()
		if err != nil {
			httpError(w, http.StatusInternalServerError, err.Error())
			return
		}
		eq.From, eq.Limit = uint64(max(int64(head)-int64(n)+1, 1)), n
	}
	evs, err := a.r.db.Events(req.Context(), eq)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	head, _ := a.r.db.Head()
	body := struct {
		Events []json.RawMessage `json:"events"`
		Next   uint64            `json:"next"`
		Head   uint64            `json:"head"`
	}{Events: make([]json.RawMessage, 0, len(evs)), Next: eq.From, Head: head}
	for i := range evs {
		body.Events = append(body.Events, redactedBody(&evs[i], a.redact))
		body.Next = evs[i].Offset + 1
	}
	writeEventsJSON(w, body)
}

// redactedBody returns ev's stored body with the fields masked as a chat
// sink's redact masks them (envelope fields never are), or the body as
// stored when fields is empty.
func redactedBody(ev *diff.Event, fields []string) json.RawMessage {
	if len(fields) == 0 {
		return ev.Body
	}
	return sink.Redact(ev, fields).Body
}

// parseEventQuery validates the events filters shared by the CLI and API.
func parseEventQuery(from, limit, typ string, known func(eventType string) bool) (store.EventQuery, error) {
	q := store.EventQuery{From: 1, Limit: 100}
	if from != "" {
		n, err := strconv.ParseUint(from, 10, 64)
		if err != nil || n < 1 {
			return q, fmt.Errorf("from: want an offset from 1, got %q", from)
		}
		q.From = n
	}
	if limit != "" {
		n, err := strconv.Atoi(limit)
		if err != nil || n < 1 || n > 100000 {
			return q, fmt.Errorf("limit: want 1 to 100000, got %q", limit)
		}
		q.Limit = n
	}
	if typ != "" {
		if !known(typ) {
			return q, fmt.Errorf("type: unknown event type %q (want one of %s, or a configured rule's type)", typ, strings.Join(diff.Types, ", "))
		}
		q.Type = typ
	}
	return q, nil
}

// replay rewinds a sink: ?from=OFFSET or ?since=RFC3339.
func (a *adminServer) replay(w http.ResponseWriter, req *http.Request) {
	name := req.PathValue("name")
	o := a.r.output(name)
	if o == nil {
		httpError(w, http.StatusNotFound, fmt.Sprintf("no sink %q", name))
		return
	}
	q := req.URL.Query()
	from, err := resolveReplayFrom(a.r.db, q.Get("from"), q.Get("since"))
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), 30*time.Second)
	defer cancel()
	if err := o.disp.Reset(ctx, func() error { return a.r.db.Rewind(name, from) }); err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	a.r.log.Info().Str("sink", name).Uint64("offset", from).Msg("replay: sink rewound")
	head, _ := a.r.db.Head()
	writeJSON(w, http.StatusOK, map[string]any{"sink": name, "from": from, "head": head})
}

func (a *adminServer) resume(w http.ResponseWriter, req *http.Request) {
	name := req.PathValue("name")
	o := a.r.output(name)
	if o == nil {
		httpError(w, http.StatusNotFound, fmt.Sprintf("no sink %q", name))
		return
	}
	o.disp.Resume()
	a.r.saveResumed(o) // so that a crash right after does not bring the pause back
	a.r.log.Info().Str("sink", name).Msg("sink resumed")
	writeJSON(w, http.StatusOK, map[string]any{"sink": name, "resumed": true})
}

// resolveReplayFrom turns --from / --since into a first offset.
func resolveReplayFrom(db store.Store, from, since string) (uint64, error) {
	switch {
	case from != "" && since != "":
		return 0, errors.New("give from or since, not both")
	case from != "":
		n, err := strconv.ParseUint(from, 10, 64)
		if err != nil || n < 1 {
			return 0, fmt.Errorf("from: want an offset from 1, got %q", from)
		}
		head, err := db.Head()
		if err != nil {
			return 0, err
		}
		if n > head+1 {
			return 0, fmt.Errorf("from: offset %d is beyond the newest event (%d)", n, head)
		}
		return n, nil
	case since != "":
		t, err := time.Parse(time.RFC3339, since)
		if err != nil {
			return 0, fmt.Errorf("since: want an RFC 3339 time such as 2026-04-08T17:00:00+08:00, got %q", since)
		}
		return db.OffsetSince(t)
	}
	return 0, errors.New("give from=OFFSET or since=RFC3339")
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeEventsJSON writes without indenting, so each event in the answer
// is byte for byte the stored body (compact, as json.Marshal writes it).
func writeEventsJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

var _ sink.Observer = (*metrics)(nil)
