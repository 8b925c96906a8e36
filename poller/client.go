package poller

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
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	jsonv1 "github.com/go-json-experiment/json/v1"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/diff/jsonscan"
	"github.com/incs-relay/incs-relay/retryafter"
)

const (
	// TasksPath is the API's only endpoint, appended to Config.BaseURL.
	TasksPath = "/external/tasks"

	// DefaultBaseURL is the API's base URL when Config.BaseURL is empty.
	DefaultBaseURL = "https://api.incsapp.com"
	// DefaultTimezone is the API's zone when Config.Location is nil.
	DefaultTimezone = "Asia/Shanghai"
	// MaxPageSize is the largest page the API serves.
	MaxPageSize = 100
	// DefaultPageSize is Config.PageSize's default: the largest page.
	DefaultPageSize = MaxPageSize
	// DefaultRateLimit is Config.RateLimit's default, in requests per
	// second.
	DefaultRateLimit = 5.0
	// DefaultTimeout is Config.Timeout's default.
	DefaultTimeout = 10 * time.Second
	// DefaultLookback is Config.Lookback's default: 30 days.
	DefaultLookback = 720 * time.Hour
	// DefaultInterval is Config.Interval's default.
	DefaultInterval = 10 * time.Second
	// DefaultFullSweep is Config.FullSweep's default.
	DefaultFullSweep = 10 * time.Minute
	// DefaultRetries is Config.Retries's default.
	DefaultRetries = 3
	// DefaultRetryWait is Config.RetryWait's default.
	DefaultRetryWait = 500 * time.Millisecond

	maxBody      = 64 << 20         // largest page body accepted
	maxErrBody   = 64 << 10         // largest error body read
	maxMessage   = 200              // bytes of a server message kept in errors
	maxPooledBuf = 8 << 20          // body buffers larger than this are not reused
	shanghaiUTC  = 8 * 60 * 60      // Asia/Shanghai's offset, for systems without tzdata
	retryMaxWait = 30 * time.Second // longest wait between retries in a sweep
)

// MaxBudget is the most requests the rate limit lets one interval send,
// the ceiling of a sensible Config.Budget.
func MaxBudget(rateLimit float64, interval time.Duration) float64 {
	return rateLimit * interval.Seconds()
}

// DefaultBudget is the request budget per interval when Config.Budget is
// not set: 80 % of MaxBudget, at least 1. The rest is left for retries,
// follow-ups and cycles that run long.
func DefaultBudget(rateLimit float64, interval time.Duration) int {
	return max(int(math.Floor(0.8*MaxBudget(rateLimit, interval)+1e-9)), 1)
}

// DefaultOpenSweep is Config.OpenSweep's default for an interval: two
// intervals, so each cycle reads half of the open tasks.
func DefaultOpenSweep(interval time.Duration) time.Duration { return 2 * interval }

// Config configures a Client and a Poller. Zero fields take the defaults
// named on each; cmd fills it from the YAML config.
type Config struct {
	// BaseURL is the API's base URL; "/external/tasks" is appended.
	// Default DefaultBaseURL.
	BaseURL string
	// Token is the bearer token. It is sent in the Authorization header only
	// and never appears in logs or errors.
	Token string
	// Location is the API's zone, used for start_at/end_at and for reading
	// times. Default Asia/Shanghai.
	Location *time.Location
	// PageSize is the page size requested, at most MaxPageSize. Default 100.
	PageSize int
	// RateLimit is the most requests per second sent to the API. Default 5;
	// negative or +Inf means no limit.
	RateLimit float64
	// Timeout bounds one request, body included. Default 10s.
	Timeout time.Duration
	// Lookback: tasks created longer ago are not scanned. Default 720h.
	Lookback time.Duration
	// Interval is the time between the starts of two poll cycles. Default 10s.
	Interval time.Duration
	// FullSweep is, for the Tiered strategy, the longest time between two
	// reads of a finished task (status 2 or 3): every task in the lookback
	// window is read at least this often. Default 10m; at least Interval.
	FullSweep time.Duration
	// OpenSweep is, for the Tiered strategy, the longest time between two
	// reads of an open task (status 0 or 1), counted in cycles:
	// OpenSweep/Interval of them, at least 1. Default 2×Interval: each
	// cycle reads half of the open tasks. Interval reads all of them every
	// cycle, at twice the requests. When the rate limit makes cycles
	// longer than Interval, so many cycles take longer too.
	OpenSweep time.Duration
	// Budget is, for the Tiered strategy, the number of API requests per
	// Interval it aims to spend on average: after the newest window, the
	// open tier and the follow-ups, it reads as many finished slices as the
	// rest of the budget pays for, least recently read first, so a world
	// whose full sweep fits is read whole every cycle. OpenSweep and
	// FullSweep stay ceilings that are kept even beyond the budget; the
	// rate limit is never exceeded. Default DefaultBudget(RateLimit,
	// Interval); without a rate limit, or when negative, there is no budget
	// and only the ceilings are read.
	Budget int
	// Retries is how often a sweep repeats a request that failed in a
	// transient way before it gives up. Default 3; negative means none.
	Retries int
	// RetryWait is the first backoff step between retries; it doubles with
	// jitter up to 30s, and a longer Retry-After wins. Default 500ms.
	RetryWait time.Duration
	// HTTPClient sends the requests. Default: a client of its own with a
	// clone of http.DefaultTransport. Its Timeout should be zero: Timeout
	// above bounds each request.
	HTTPClient *http.Client
	// Now returns the current time; default time.Now. Tests set it.
	Now func() time.Time
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.BaseURL == "" {
		c.BaseURL = DefaultBaseURL
	}
	if c.Location == nil {
		c.Location = DefaultLocation()
	}
	if c.PageSize <= 0 {
		c.PageSize = DefaultPageSize
	}
	c.PageSize = min(c.PageSize, MaxPageSize)
	if c.RateLimit == 0 {
		c.RateLimit = DefaultRateLimit
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Lookback <= 0 {
		c.Lookback = DefaultLookback
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.FullSweep <= 0 {
		c.FullSweep = DefaultFullSweep
	}
	c.FullSweep = max(c.FullSweep, c.Interval)
	if c.OpenSweep <= 0 {
		c.OpenSweep = DefaultOpenSweep(c.Interval)
	}
	c.OpenSweep = min(max(c.OpenSweep, c.Interval), c.FullSweep)
	if c.Budget == 0 && c.RateLimit > 0 && !math.IsInf(c.RateLimit, 1) {
		c.Budget = DefaultBudget(c.RateLimit, c.Interval)
	}
	c.Budget = max(c.Budget, 0)
	if c.Retries == 0 {
		c.Retries = DefaultRetries
	}
	if c.Retries < 0 {
		c.Retries = 0
	}
	if c.RetryWait <= 0 {
		c.RetryWait = DefaultRetryWait
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// DefaultLocation returns Asia/Shanghai, or a fixed UTC+8 zone named CST
// where the system has no time zone database.
func DefaultLocation() *time.Location {
	if loc, err := time.LoadLocation(DefaultTimezone); err == nil {
		return loc
	}
	return time.FixedZone("CST", shanghaiUTC)
}

// Query selects tasks. Nil pointers, an empty Name and zero times are
// omitted from the request. StartAt and EndAt filter by creation time and
// are sent in the client's Location. CreatedFrom and CreatedTo, when not
// zero, are sent as start_at and end_at instead: they name wall-clock
// times of the API's zone exactly, also where a daylight-saving change
// makes a time.Time skip or repeat them. All four bounds are inclusive, to
// the second. Page defaults to 1 and PageSize to the client's page size,
// capped at MaxPageSize.
type Query struct {
	TaskID      *int64
	CreationID  *int64
	Type        *int
	Status      *int
	Name        string
	StartAt     time.Time
	EndAt       time.Time
	CreatedFrom WallTime
	CreatedTo   WallTime
	Page        int
	PageSize    int
	// Pages, when above 0, is the most pages a sweep reads, from Page on:
	// 1 reads Page alone, with nothing fetched ahead.
	Pages int
}

// encode returns q as a query string, times formatted in loc. Spaces are
// sent as %20, which every server decodes, rather than form-style '+'.
func (q *Query) encode(loc *time.Location) string {
	v := make(url.Values, 9)
	if q.TaskID != nil {
		v.Set("task_id", strconv.FormatInt(*q.TaskID, 10))
	}
	if q.CreationID != nil {
		v.Set("creation_id", strconv.FormatInt(*q.CreationID, 10))
	}
	if q.Type != nil {
		v.Set("type", strconv.Itoa(*q.Type))
	}
	if q.Status != nil {
		v.Set("status", strconv.Itoa(*q.Status))
	}
	if q.Name != "" {
		v.Set("name", q.Name)
	}
	switch {
	case q.CreatedFrom != 0:
		v.Set("start_at", q.CreatedFrom.String())
	case !q.StartAt.IsZero():
		v.Set("start_at", q.StartAt.In(loc).Format(diff.TimeLayout))
	}
	switch {
	case q.CreatedTo != 0:
		v.Set("end_at", q.CreatedTo.String())
	case !q.EndAt.IsZero():
		v.Set("end_at", q.EndAt.In(loc).Format(diff.TimeLayout))
	}
	if q.Page > 0 {
		v.Set("page", strconv.Itoa(q.Page))
	}
	if q.PageSize > 0 {
		v.Set("page_size", strconv.Itoa(q.PageSize))
	}
	return strings.ReplaceAll(v.Encode(), "+", "%20")
}

// Page is one page of tasks as the API returned it.
type Page struct {
	// Total is the number of tasks matching the query, as the API counted
	// them when it answered.
	Total int
	// Tasks are the page's tasks in the API's order, each with its raw JSON;
	// with a Skipper, only those it did not skip.
	Tasks []diff.Task
	// Heads are every task of the page in brief, in the API's order,
	// skipped or not.
	Heads []TaskHead
	// Number is the page number, from 1.
	Number int
	// Size is the page size requested.
	Size int
}

// Client sends GET /external/tasks requests. It is safe for concurrent use:
// its rate limiter and its Retry-After gate are shared by all calls.
type Client struct {
	cfg      Config
	endpoint string // base URL + TasksPath, no query
	http     *http.Client
	limiter  *rate.Limiter
	gate     gate
	log      zerolog.Logger
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
	limit := rate.Limit(cfg.RateLimit)
	if cfg.RateLimit < 0 || math.IsInf(cfg.RateLimit, 1) {
		limit = rate.Inf
	}
	host := ""
	if u, err := url.Parse(cfg.BaseURL); err == nil {
		host = u.Host
	}
	return &Client{
		cfg:      cfg,
		endpoint: strings.TrimRight(cfg.BaseURL, "/") + TasksPath,
		http:     hc,
		limiter:  rate.NewLimiter(limit, 1),
		log:      log.With().Str("upstream", host).Logger(),
	}
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
	q = c.normalize(q)
	if err := c.wait(ctx, q.Page); err != nil {
		return nil, err
	}
	return c.do(ctx, q, skip)
}

// normalize fills in Page and PageSize.
func (c *Client) normalize(q Query) Query {
	if q.Page < 1 {
		q.Page = 1
	}
	if q.PageSize <= 0 {
		q.PageSize = c.cfg.PageSize
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
	rctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, c.endpoint+"?"+q.encode(c.cfg.Location), nil)
	if err != nil {
		// The URL error would print the query string; name the problem only.
		return nil, &APIError{Kind: KindRequest, Page: q.Page, Message: "invalid base URL"}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "incs-relay")
	req.Header.Set("Authorization", "Bearer "+c.cfg.Token)

	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, rctx, q.Page, err)
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, c.statusError(ctx, q.Page, resp)
	}

	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= maxPooledBuf {
			bufPool.Put(buf)
		}
	}()
	if n := resp.ContentLength; n > 0 && n <= maxBody {
		buf.Grow(int(n))
	}
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, maxBody+1)); err != nil {
		return nil, c.transportError(ctx, rctx, q.Page, err)
	}
	if buf.Len() > maxBody {
		return nil, &APIError{Kind: KindDecode, Page: q.Page, StatusCode: resp.StatusCode,
			Message: fmt.Sprintf("body larger than %d bytes", maxBody)}
	}
	p, err := decodePageSkip(buf.Bytes(), q.Page, q.PageSize, skip)
	if err != nil {
		var ae *APIError
		if errors.As(err, &ae) {
			ae.StatusCode = resp.StatusCode
			ae.Message = c.redact(ae.Message)
		}
		return nil, err
	}
	c.log.Debug().Int("page", p.Number).Int("tasks", len(p.Heads)).Int("decoded", len(p.Tasks)).Int("total", p.Total).
		Dur("took", time.Since(start)).Msg("listed tasks")
	return p, nil
}

// transportError classifies a failure to send the request or read its body.
func (c *Client) transportError(ctx, rctx context.Context, page int, err error) error {
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
		return &APIError{Kind: KindTimeout, Page: page, Timeout: c.cfg.Timeout, Err: context.DeadlineExceeded}
	}
	return &APIError{Kind: KindNetwork, Page: page, Err: redactedError{err, c.redact(err.Error())}}
}

// statusError classifies a non-2xx answer and closes the gate for its
// Retry-After.
func (c *Client) statusError(ctx context.Context, page int, resp *http.Response) error {
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
		e.Message = c.redact(e.Message)
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
func (c *Client) redact(s string) string {
	if c.cfg.Token != "" {
		s = strings.ReplaceAll(s, c.cfg.Token, "[redacted]")
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

// envelope is the API's answer. Pointers tell a missing member from a zero.
type envelope struct {
	Status  string          `json:"status"`
	Code    json.RawMessage `json:"code"`
	Message string          `json:"message"`
	Data    *pageData       `json:"data"`
}

type pageData struct {
	Total *int        `json:"total"`
	Tasks *[]wireTask `json:"data"`
}

// wireTask is diff.Task without its UnmarshalJSON: encoding/json decodes a
// page of them in one pass, and attachRaw then gives each task its raw JSON
// with a light scan instead of a second and third full parse.
type wireTask diff.Task

// attachRaw copies the page's task array out of body once and points each
// task's (and log's) Raw into the copy. It leaves Raw unset if the array
// cannot be matched to tasks, which only costs a re-encode later.
func attachRaw(body []byte, tasks []diff.Task) {
	data, ok := jsonscan.RawMember(body, "data")
	if !ok {
		return
	}
	arr, ok := jsonscan.RawMember(data, "data")
	if !ok {
		return
	}
	els := jsonscan.RawElements(bytes.Clone(arr))
	if len(els) != len(tasks) {
		return
	}
	for i := range tasks {
		tasks[i].AttachRaw(els[i])
	}
}

// decodePage decodes a 2xx body of the page requested with the given number
// and size. The body is decoded once; each diff.Task keeps a copy of its raw
// JSON, so body may be reused afterwards. Every failure is an *APIError of
// kind KindEnvelope or KindDecode.
func decodePage(body []byte, number, size int) (*Page, error) {
	var env envelope
	err := jsonv1.Unmarshal(body, &env)
	var typeErr *jsonv1.UnmarshalTypeError
	if err != nil && !errors.As(err, &typeErr) {
		return nil, &APIError{Kind: KindDecode, Page: number, Err: err}
	}
	// An error envelope may carry data of any shape: report it by its status
	// and code, whatever else failed to decode.
	code, codeErr := parseCode(env.Code)
	if env.Status != "success" || codeErr != nil || code != http.StatusOK {
		if env.Status == "" && len(env.Code) == 0 {
			return nil, &APIError{Kind: KindDecode, Page: number, Message: "no status or code in body"}
		}
		return nil, &APIError{Kind: KindEnvelope, Page: number, Status: env.Status, Code: code, Message: shorten(env.Message)}
	}
	if err != nil {
		return nil, &APIError{Kind: KindDecode, Page: number, Err: err}
	}
	if env.Data == nil {
		return nil, &APIError{Kind: KindDecode, Page: number, Message: "missing data"}
	}
	if env.Data.Total == nil {
		return nil, &APIError{Kind: KindDecode, Page: number, Message: "missing data.total"}
	}
	total := *env.Data.Total
	if total < 0 {
		return nil, &APIError{Kind: KindDecode, Page: number, Message: fmt.Sprintf("data.total %d", total)}
	}
	var tasks []diff.Task
	if env.Data.Tasks != nil {
		ws := *env.Data.Tasks
		tasks = make([]diff.Task, len(ws))
		for i := range ws {
			tasks[i] = diff.Task(ws[i])
		}
		attachRaw(body, tasks)
	} else if total > (number-1)*size {
		// The API says this page holds tasks but sent none.
		return nil, &APIError{Kind: KindDecode, Page: number, Message: fmt.Sprintf("missing data.data with data.total %d", total)}
	}
	var heads []TaskHead
	if len(tasks) > 0 {
		heads = make([]TaskHead, len(tasks))
	}
	for i := range tasks {
		t := &tasks[i]
		if t.ID <= 0 {
			return nil, &APIError{Kind: KindDecode, Page: number, Message: fmt.Sprintf("task %d of the page has no id", i+1)}
		}
		for j := range t.Logs {
			if t.Logs[j].ID <= 0 {
				return nil, &APIError{Kind: KindDecode, Page: number, Message: fmt.Sprintf("task %d: log %d has no id", t.ID, j+1)}
			}
		}
		heads[i] = headOf(t)
	}
	return &Page{Total: total, Tasks: tasks, Heads: heads, Number: number, Size: size}, nil
}

// parseCode reads an envelope code sent as a number or a numeric string.
func parseCode(raw json.RawMessage) (int, error) {
	return strconv.Atoi(strings.Trim(string(raw), `"`))
}

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
