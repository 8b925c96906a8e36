package sink

// The webhook sink: WebhookConfig, the POST of each event in one of the
// body formats, signed per Standard Webhooks, and how its answers count
// (2xx delivered; 408, 425, 429 and 5xx retried; 410 a pause; the rest
// permanent).

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/retryafter"
	"github.com/incs-relay/incs-relay/sink/consume"
)

// Webhook defaults.
const (
	DefaultWebhookTimeout = 10 * time.Second
	webhookDrainLimit     = 4 << 10 // response bytes read to reuse the connection
)

// Webhook body formats (WebhookConfig.Format).
const (
	// WebhookJSON posts the event as the body with Content-Type
	// application/json, for plain JSON receivers. The default.
	WebhookJSON = "json"
	// WebhookCloudEvents posts the same body with Content-Type
	// application/cloudevents+json: CloudEvents HTTP structured mode.
	WebhookCloudEvents = "cloudevents"
	// WebhookBinary posts the event's data alone, as stored, with
	// Content-Type application/json and the event's attributes in ce-*
	// headers: CloudEvents HTTP binary mode.
	WebhookBinary = "binary"
)

// WebhookFormats lists the webhook body formats, the default first.
var WebhookFormats = []string{WebhookJSON, WebhookCloudEvents, WebhookBinary}

// WebhookConfig configures a Webhook.
type WebhookConfig struct {
	Name string
	// URL is the http or https endpoint events are POSTed to.
	URL string
	// Secrets are Standard Webhooks secrets, "whsec_<base64 key>". Every
	// request carries one signature per secret, so a receiver can rotate:
	// list the new secret first and the old one second. At least one.
	Secrets []string
	// Format is one of WebhookFormats; empty means WebhookJSON.
	Format string
	// Timeout bounds one attempt, from dial to the response headers
	// (default 10s).
	Timeout time.Duration
	// MaxInFlight is the dispatcher's concurrency; it sizes the pool of
	// idle keep-alive connections (default 16).
	MaxInFlight int
	// Transport, when set, replaces the default transport (a keep-alive
	// tuned *http.Transport), e.g. to guard which networks may be dialed.
	Transport http.RoundTripper
	Logger    zerolog.Logger
	Now       func() time.Time // default time.Now; sets webhook-timestamp
}

// Webhook delivers events as Standard Webhooks: it POSTs what
// WebhookMessage returns for its format (ev.Body, or in binary mode the
// event's data with ce-* headers) and the headers webhook-id (the event
// id), webhook-timestamp (Unix seconds of the attempt) and
// webhook-signature ("v1,<base64 HMAC-SHA256(key, id.timestamp.body)>"
// over the body sent, one space-separated entry per secret). A 2xx status
// acknowledges. Network errors, timeouts, 408, 425, 429 and 5xx are
// retryable (a *RetryAfterError when the response has Retry-After); 410
// Gone is a *PauseError; other statuses, redirects included (they are not
// followed), are permanent. Errors name the sink and the URL's host, never
// its path, query or the secrets.
//
// A Webhook is safe for concurrent use.
type Webhook struct {
	name    string
	url     *url.URL
	host    string
	signer  *webhookSigner
	auth    string // "Basic …" from the URL's user info, as http.Client sends it; "" without
	format  string
	timeout time.Duration
	client  *http.Client
	now     func() time.Time
	log     zerolog.Logger

	closed    atomic.Bool
	closeOnce sync.Once
}

var _ Sink = (*Webhook)(nil)

// ParseWebhookSecret decodes a Standard Webhooks secret "whsec_<base64>"
// into its HMAC key. The base64 may be padded or not. Its errors never
// quote the secret.
func ParseWebhookSecret(s string) ([]byte, error) { return consume.ParseSecret(s) }

// NewWebhook checks cfg and returns a Webhook. It does no I/O.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	if cfg.Name == "" {
		return nil, errors.New("webhook: no name")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhook %s: url: want an absolute http or https URL", cfg.Name)
	}
	if len(cfg.Secrets) == 0 {
		return nil, fmt.Errorf("webhook %s: no secret", cfg.Name)
	}
	keys := make([][]byte, len(cfg.Secrets))
	for i, s := range cfg.Secrets {
		if keys[i], err = ParseWebhookSecret(s); err != nil {
			return nil, fmt.Errorf("webhook %s: secret %d: %w", cfg.Name, i+1, err)
		}
	}
	if cfg.Format == "" {
		cfg.Format = WebhookJSON
	}
	if !slices.Contains(WebhookFormats, cfg.Format) {
		return nil, fmt.Errorf("webhook %s: unknown format %q (want %s)", cfg.Name, cfg.Format, strings.Join(WebhookFormats, ", "))
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultWebhookTimeout
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	rt := cfg.Transport
	if rt == nil {
		rt = newWebhookTransport(cfg.MaxInFlight)
	}
	return &Webhook{
		name:    cfg.Name,
		url:     u,
		host:    u.Host,
		signer:  newWebhookSigner(keys),
		auth:    basicAuth(u.User),
		format:  cfg.Format,
		timeout: cfg.Timeout,
		client: &http.Client{
			Transport:     rt,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		now: cfg.Now,
		log: cfg.Logger.With().Str("sink", cfg.Name).Logger(),
	}, nil
}

// newWebhookTransport returns a transport that keeps a keep-alive
// connection per concurrent delivery.
func newWebhookTransport(maxInFlight int) *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          max(100, maxInFlight),
		MaxIdleConnsPerHost:   maxInFlight,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// Name returns the sink's name.
func (w *Webhook) Name() string { return w.name }

// Deliver POSTs ev once and blocks until the response headers arrive, the
// timeout passes or ctx ends. See Webhook for how failures are classified.
func (w *Webhook) Deliver(ctx context.Context, ev *diff.Event) error {
	if w.closed.Load() {
		return fmt.Errorf("webhook %s: closed", w.name)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("webhook %s: POST %s: %w", w.name, w.host, err)
	}
	h, body, err := WebhookMessage(w.format, ev)
	if err != nil {
		return Permanent(fmt.Errorf("webhook %s: encode event %s: %w", w.name, ev.ID, err))
	}
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	// The URL was parsed once, in NewWebhook; the transport does not
	// modify a request's URL.
	req := (&http.Request{
		Method: http.MethodPost, URL: w.url, Host: w.url.Host,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
		// As http.NewRequest sets it: HTTP/2 resends a request refused
		// before it was processed (REFUSED_STREAM, GOAWAY) only with it.
		GetBody: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil },
	}).WithContext(ctx)
	ts := strconv.FormatInt(w.now().Unix(), 10)
	h["User-Agent"] = []string{"incs-relay"}
	h["Webhook-Id"] = []string{ev.ID}
	h["Webhook-Timestamp"] = []string{ts}
	h["Webhook-Signature"] = []string{w.signer.sign(ev.ID, ts, body)}
	if w.auth != "" {
		h["Authorization"] = []string{w.auth}
	}

	// The transport itself: http.Client would clone the headers for
	// redirects, which are not followed (a 3xx is returned as it is).
	resp, err := w.client.Transport.RoundTrip(req)
	if err != nil {
		return w.requestError(ctx, err)
	}
	_, _ = io.CopyN(io.Discard, resp.Body, webhookDrainLimit)
	_ = resp.Body.Close()
	return w.statusError(resp)
}

// requestError turns a transport error into one that names the host only:
// *url.Error quotes the whole URL, so only its cause is kept.
func (w *Webhook) requestError(ctx context.Context, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
		return fmt.Errorf("webhook %s: POST %s: no response within %s: %w", w.name, w.host, w.timeout, context.DeadlineExceeded)
	}
	return fmt.Errorf("webhook %s: POST %s: %w", w.name, w.host, err)
}

// statusError classifies a response status.
func (w *Webhook) statusError(resp *http.Response) error {
	code := resp.StatusCode
	if code >= 200 && code <= 299 {
		return nil
	}
	err := fmt.Errorf("webhook %s: POST %s: HTTP %d", w.name, w.host, code)
	switch {
	case code == http.StatusGone:
		return &PauseError{Err: err}
	case code == http.StatusRequestTimeout, code == http.StatusTooEarly, code == http.StatusTooManyRequests, code >= 500:
		if wait := retryafter.Parse(resp.Header.Get("Retry-After"), w.now()); wait > 0 {
			return &RetryAfterError{Err: err, Wait: wait}
		}
		return err
	case code >= 300 && code <= 399:
		return Permanent(fmt.Errorf("%w (redirects are not followed)", err))
	}
	return Permanent(err)
}

// Close closes idle connections; later Deliver calls fail. It is
// idempotent and does not wait for deliveries under way.
func (w *Webhook) Close(context.Context) error {
	w.closeOnce.Do(func() {
		w.closed.Store(true)
		w.client.CloseIdleConnections()
	})
	return nil
}

// WebhookMessage returns the headers that say how ev is encoded and the body
// a webhook sink of the given format sends for it (the body is what is
// signed; the Standard Webhooks headers are not included):
//
//   - json: Content-Type application/json, the event as body;
//   - cloudevents: Content-Type application/cloudevents+json, the same body;
//   - binary: Content-Type application/json (the event's datacontenttype),
//     ce-specversion, ce-id, ce-source, ce-type, ce-subject, ce-time and
//     ce-offset, and the event's "data" member as body, byte for byte as the
//     stored event holds it.
//
// The body is ev.Body, or ev encoded when it has none (an event built in
// code). An empty format is json.
func WebhookMessage(format string, ev *diff.Event) (http.Header, []byte, error) {
	body, err := eventBodyOrJSON(ev)
	if err != nil {
		return nil, nil, err
	}
	switch format {
	case "", WebhookJSON:
		return http.Header{"Content-Type": {"application/json"}}, body, nil
	case WebhookCloudEvents:
		return http.Header{"Content-Type": {"application/cloudevents+json"}}, body, nil
	case WebhookBinary:
	default:
		return nil, nil, fmt.Errorf("unknown webhook format %q", format)
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(body, &members); err != nil {
		return nil, nil, fmt.Errorf("event body: %w", err)
	}
	data, ok := members["data"]
	if !ok {
		return nil, nil, errors.New(`event body has no "data"`)
	}
	ct := ev.DataContentType
	if ct == "" {
		ct = diff.DataContentType
	}
	h := http.Header{"Content-Type": {ct}}
	for _, a := range [...]struct{ key, value string }{
		{"Ce-Specversion", ev.SpecVersion},
		{"Ce-Id", ev.ID},
		{"Ce-Source", ev.Source},
		{"Ce-Type", ev.Type},
		{"Ce-Subject", ev.Subject},
		{"Ce-Time", ev.Time.Format(time.RFC3339Nano)},
		{"Ce-Offset", strconv.FormatUint(ev.Offset, 10)},
	} {
		h[a.key] = []string{ceHeaderValue(a.value)}
	}
	return h, data, nil
}

// ceHeaderValue percent-encodes what the CloudEvents HTTP binding says a
// ce-* header value must not hold: space, '"', '%' and bytes outside
// printable ASCII. The relay's attribute values never hold them; this
// keeps a header valid if one did.
func ceHeaderValue(s string) string {
	clean := func(c byte) bool { return c > ' ' && c < 0x7f && c != '"' && c != '%' }
	i := 0
	for i < len(s) && clean(s[i]) {
		i++
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		if c := s[i]; clean(c) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// basicAuth returns the Authorization value http.Client derives from a
// URL's user info ("" without): requests go to the transport itself,
// which does not.
func basicAuth(u *url.Userinfo) string {
	if u == nil {
		return ""
	}
	pass, _ := u.Password()
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pass))
}

// webhookSigner makes webhook-signature values for a set of keys. Each
// key's HMAC, keyed once, is reused from a pool: a signature then costs
// no key schedule and allocates only its header value.
type webhookSigner struct {
	pools []sync.Pool // of hash.Hash, one pool per key
}

func newWebhookSigner(keys [][]byte) *webhookSigner {
	s := &webhookSigner{pools: make([]sync.Pool, len(keys))}
	for i, k := range keys {
		s.pools[i].New = func() any { return hmac.New(sha256.New, k) }
	}
	return s
}

// sign returns the webhook-signature header value for id, ts and body:
// one "v1,<base64 HMAC-SHA256(key, id.ts.body)>" per key, space-separated.
func (s *webhookSigner) sign(id, ts string, body []byte) string {
	const sigLen = 3 + 44 // "v1," and a SHA-256 in padded base64
	// scratch holds "id.ts.", written first for every key.
	scratch := make([]byte, 0, max(len(id)+len(ts)+2, sha256.Size))
	scratch = append(append(append(append(scratch, id...), '.'), ts...), '.')
	out := make([]byte, 0, len(s.pools)*(sigLen+1))
	var sum []byte
	for i := range s.pools {
		m := s.pools[i].Get().(hash.Hash)
		m.Reset()
		m.Write(scratch)
		m.Write(body)
		sum = m.Sum(sum[:0])
		s.pools[i].Put(m)
		if i > 0 {
			out = append(out, ' ')
		}
		out = append(out, "v1,"...)
		out = base64.StdEncoding.AppendEncode(out, sum)
	}
	return string(out)
}

// eventBodyOrJSON returns what a sink sends for ev: the stored Body, or the
// event encoded when it has none (an event built in code).
func eventBodyOrJSON(ev *diff.Event) ([]byte, error) {
	if len(ev.Body) > 0 {
		return ev.Body, nil
	}
	return json.Marshal(ev)
}
