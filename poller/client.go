package poller

// The Client: one GET /external/tasks request at a time, behind the rate
// limiter and the Retry-After gate, its failures classified as APIErrors
// with the token redacted. Paging through a query is sweep.go; decoding a
// page, decode.go and head.go.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/incs-relay/incs-relay/retryafter"
)

const (
	maxBody      = 64 << 20 // largest page body accepted
	maxErrBody   = 64 << 10 // largest error body read
	maxMessage   = 200      // bytes of a server message kept in errors
	maxPooledBuf = 8 << 20  // body buffers larger than this are not reused
)

// Client sends GET /external/tasks requests. It is safe for concurrent use:
// its rate limiter and its Retry-After gate are shared by all calls.
type Client struct {
	// cfg holds what cannot change while the client runs (BaseURL,
	// Location, Now); what Reconfigure changes is in set and the limiter.
	cfg      Config
	set      atomic.Pointer[clientSettings]
	endpoint string // base URL + TasksPath, no query
	http     *http.Client
	limiter  *rate.Limiter
	gate     gate
	log      zerolog.Logger
}

// clientSettings are the settings Reconfigure changes. A request reads
// them once, when it starts, and keeps them to its end.
type clientSettings struct {
	token     string
	auth      string // the Authorization header: "Bearer " + token
	pageSize  int
	timeout   time.Duration
	retries   int
	retryWait time.Duration
}

// newClientSettings takes the settings from cfg, defaults filled in.
func newClientSettings(cfg Config) *clientSettings {
	return &clientSettings{
		token:     cfg.Token,
		auth:      "Bearer " + cfg.Token,
		pageSize:  cfg.PageSize,
		timeout:   cfg.Timeout,
		retries:   cfg.Retries,
		retryWait: cfg.RetryWait,
	}
}

// rateLimit is the limiter's limit for Config.RateLimit (defaults filled
// in): no limit when negative or +Inf.
func rateLimit(r float64) rate.Limit {
	if r < 0 || math.IsInf(r, 1) {
		return rate.Inf
	}
	return rate.Limit(r)
}

// NewClient returns a client for cfg, with defaults filled in. It does no
// I/O; a bad BaseURL shows up as an error of the first request.
func NewClient(cfg Config, log zerolog.Logger) *Client {
	cfg = cfg.withDefaults()
	hc := cfg.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 4
		hc = &http.Client{Transport: tr}
	}
	host := ""
	if u, err := url.Parse(cfg.BaseURL); err == nil {
		host = u.Host
	}
	c := &Client{
		cfg:      cfg,
		endpoint: strings.TrimRight(cfg.BaseURL, "/") + TasksPath,
		http:     hc,
		limiter:  rate.NewLimiter(rateLimit(cfg.RateLimit), 1),
		log:      log.With().Str("upstream", host).Logger(),
	}
	c.cfg.Token = "" // the token is in c.set only: one place to change it
	c.set.Store(newClientSettings(cfg))
	return c
}

// Reconfigure changes the client's Token, PageSize, RateLimit, Timeout,
// Retries and RetryWait to cfg's, defaults filled in as NewClient fills
// them; cfg's BaseURL, Location, HTTPClient and Now are ignored, as they
// cannot change while the client runs. It is safe for concurrent use,
// also while requests run.
//
// The new rate limit applies to every call that reaches the limiter
// afterwards (a negative or infinite RateLimit lifts it); a call already
// waiting for the limiter keeps the wait it was given. The token and the
// timeout apply to every request sent after Reconfigure returned, a retry
// included; a request in flight keeps the ones it was sent with. The page
// size applies to the calls and sweeps that start afterwards: a sweep
// under way keeps its page size to its end, since its page numbers rest
// on it. Retries and RetryWait apply to the requests whose first attempt
// starts afterwards. The token is never logged.
func (c *Client) Reconfigure(cfg Config) {
	cfg = cfg.withDefaults()
	set := newClientSettings(cfg)
	old := c.set.Swap(set)
	c.limiter.SetLimit(rateLimit(cfg.RateLimit))
	c.limiter.SetBurst(1)
	c.log.Debug().Int("page_size", set.pageSize).Float64("rate_limit", cfg.RateLimit).Dur("timeout", set.timeout).
		Int("retries", set.retries).Dur("retry_wait", set.retryWait).Bool("token_changed", old.token != set.token).
		Msg("client reconfigured")
}

// CloseIdleConnections closes the client's idle keep-alive connections.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// List sends one GET /external/tasks for q and returns the decoded page.
//
// It blocks first until a Retry-After of an earlier answer has passed and
// the rate limiter allows a request, then for at most Config.Timeout for the
// answer. It returns a page only when the whole body was received and
// decoded; every failure is an *APIError (see ErrorKind), except a cancelled
// ctx, which returns an error wrapping ctx.Err(). List never retries.
func (c *Client) List(ctx context.Context, q Query) (*Page, error) {
	return c.ListSkip(ctx, q, nil)
}

// ListSkip is List, but tasks that skip finds unchanged are not decoded:
// they are in Page.Heads, marked Skipped, and not in Page.Tasks. A nil
// skip decodes every task.
func (c *Client) ListSkip(ctx context.Context, q Query, skip Skipper) (*Page, error) {
	q = c.normalize(q, c.set.Load().pageSize)
	if err := c.wait(ctx, q.Page); err != nil {
		return nil, err
	}
	return c.do(ctx, q, skip)
}

// normalize fills in Page, and PageSize with pageSize.
func (c *Client) normalize(q Query, pageSize int) Query {
	if q.Page < 1 {
		q.Page = 1
	}
	if q.PageSize <= 0 {
		q.PageSize = pageSize
	}
	q.PageSize = min(q.PageSize, MaxPageSize)
	return q
}

// wait blocks until the gate is open and the limiter grants a request.
func (c *Client) wait(ctx context.Context, page int) error {
	if err := c.gate.wait(ctx); err != nil {
		return ctxError(ctx, page)
	}
	if err := c.limiter.Wait(ctx); err != nil {
		if ctx.Err() != nil {
			return ctxError(ctx, page)
		}
		// The limiter refuses when the wait would pass ctx's deadline.
		return &APIError{Kind: KindTimeout, Page: page, Err: context.DeadlineExceeded}
	}
	// A Retry-After may have arrived while this call waited for the limiter.
	if err := c.gate.wait(ctx); err != nil {
		return ctxError(ctx, page)
	}
	return nil
}

// ctxError is the error of a request cut short by ctx: a timeout for a
// deadline, otherwise ctx's error wrapped in the request's path.
func ctxError(ctx context.Context, page int) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return &APIError{Kind: KindTimeout, Page: page, Err: err}
	}
	return fmt.Errorf("incsapp: GET %s page %d: %w", TasksPath, page, err)
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func (c *Client) do(ctx context.Context, q Query, skip Skipper) (*Page, error) {
	start := time.Now()
	set := c.set.Load()
	rctx, cancel := context.WithTimeout(ctx, set.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, c.endpoint+"?"+q.encode(c.cfg.Location), nil)
	if err != nil {
		// The URL error would print the query string; name the problem only.
		return nil, &APIError{Kind: KindRequest, Page: q.Page, Message: "invalid base URL"}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "incs-relay")
	req.Header.Set("Authorization", set.auth)

	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, rctx, set, q.Page, err)
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, c.statusError(ctx, set, q.Page, resp)
	}

	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	kept := false
	defer func() {
		if !kept && buf.Cap() <= maxPooledBuf {
			bufPool.Put(buf)
		}
	}()
	if n := resp.ContentLength; n > 0 && n <= maxBody {
		// ReadFrom wants MinRead bytes free before each read, the one that
		// finds the end included: without them a body of exactly n bytes
		// would be copied into a buffer twice as large at its end.
		buf.Grow(int(n) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, maxBody+1)); err != nil {
		return nil, c.transportError(ctx, rctx, set, q.Page, err)
	}
	if buf.Len() > maxBody {
		return nil, &APIError{Kind: KindDecode, Page: q.Page, StatusCode: resp.StatusCode,
			Message: fmt.Sprintf("body larger than %d bytes", maxBody)}
	}
	p, kept, err := decodePageSkip(buf.Bytes(), q.Page, q.PageSize, skip, true)
	if err != nil {
		var ae *APIError
		if errors.As(err, &ae) {
			ae.StatusCode = resp.StatusCode
			ae.Message = set.redact(ae.Message)
		}
		return nil, err
	}
	c.log.Debug().Int("page", p.Number).Int("tasks", len(p.Heads)).Int("decoded", len(p.Tasks)).Int("total", p.Total).
		Dur("took", time.Since(start)).Msg("listed tasks")
	return p, nil
}

// transportError classifies a failure to send the request or read its body.
func (c *Client) transportError(ctx, rctx context.Context, set *clientSettings, page int, err error) error {
	if ctx.Err() != nil {
		return ctxError(ctx, page)
	}
	// *url.Error prints the URL with its query string: keep only the cause.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	if rctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return &APIError{Kind: KindTimeout, Page: page, Timeout: set.timeout, Err: context.DeadlineExceeded}
	}
	return &APIError{Kind: KindNetwork, Page: page, Err: redactedError{err, set.redact(err.Error())}}
}

// statusError classifies a non-2xx answer and closes the gate for its
// Retry-After.
func (c *Client) statusError(ctx context.Context, set *clientSettings, page int, resp *http.Response) error {
	e := &APIError{Page: page, StatusCode: resp.StatusCode}
	switch code := resp.StatusCode; {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		e.Kind = KindUnauthorized
	case code == http.StatusTooManyRequests:
		e.Kind = KindRateLimited
	case code == http.StatusRequestTimeout:
		e.Kind = KindTimeout
	case code >= 500:
		e.Kind = KindServer
	default:
		e.Kind = KindRequest
	}
	if e.Kind == KindRateLimited || e.Kind == KindServer {
		e.RetryAfter = retryafter.Parse(resp.Header.Get("Retry-After"), c.cfg.Now())
		if e.RetryAfter > 0 {
			c.gate.hold(e.RetryAfter)
		}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxErrBody))
	if err == nil {
		e.Code, e.Message = errorBodyMessage(body)
		e.Message = set.redact(e.Message)
	} else if ctx.Err() != nil {
		return ctxError(ctx, page)
	}
	return e
}

// errorBodyMessage returns the code and message of a JSON error body, or
// zero values for any other body.
func errorBodyMessage(body []byte) (int, string) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return 0, ""
	}
	var env struct {
		Code    json.RawMessage `json:"code"`
		Message string          `json:"message"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return 0, ""
	}
	code, _ := parseCode(env.Code)
	return code, env.Message
}

// redact removes the token from s and shortens s to one line of at most
// maxMessage bytes.
func (set *clientSettings) redact(s string) string {
	if set.token != "" {
		s = strings.ReplaceAll(s, set.token, "[redacted]")
	}
	return shorten(s)
}

func shorten(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= maxMessage {
		return s
	}
	cut := maxMessage
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// redactedError keeps an error for errors.Is/As but prints a cleaned text.
type redactedError struct {
	err error
	msg string
}

func (e redactedError) Error() string { return e.msg }
func (e redactedError) Unwrap() error { return e.err }

// gate holds every request back until a Retry-After has passed. It is
// shared by all calls of a Client.
type gate struct {
	mu    sync.Mutex
	until time.Time
}

// hold closes the gate for d from now, unless it is closed for longer.
func (g *gate) hold(d time.Duration) {
	until := time.Now().Add(d)
	g.mu.Lock()
	if until.After(g.until) {
		g.until = until
	}
	g.mu.Unlock()
}

// wait blocks until the gate is open or ctx ends.
func (g *gate) wait(ctx context.Context) error {
	for {
		g.mu.Lock()
		d := time.Until(g.until)
		g.mu.Unlock()
		if d <= 0 {
			return nil
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
