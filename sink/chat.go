package sink

// What the chat sinks (Slack, Feishu) share: ChatConfig and its defaults,
// ChatError, and chatCore, which renders, rate-limits with digests (package
// chat) and posts; each platform's own part is slack.go or feishu.go.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/retryafter"
	"github.com/incs-relay/incs-relay/sink/chat"
)

// ChatConfig configures a chat sink (Slack or Feishu). Zero values take the
// platform's defaults; NewSlack and NewFeishu validate it. It has no
// filter: a sink's dispatcher applies the sink's FilterConfig before
// Deliver, once.
type ChatConfig struct {
	// Name is the sink's name from the config.
	Name string
	// URL is the incoming webhook URL. It holds the webhook's credential in
	// its path, so it never appears in logs or errors: only its host does.
	URL string
	// Secret is the Feishu signing secret (optional). Slack does not sign
	// incoming webhooks; a secret on a Slack sink is a config error.
	Secret string
	// Locale is "zh" or "en": status names and labels. Default "zh" for
	// Feishu and "en" for Slack.
	Locale string
	// Link is an optional URL template shown as a link in every message,
	// e.g. "https://app.example/tasks/{task_id}". Placeholders: {task_id},
	// {event_id}.
	Link string
	// Redact lists the JSON field names masked in what the sink sends (see
	// MaskValue), at any depth of the task and the log. Nil means the chat
	// default, ["user_phone"]; an empty, non-nil slice masks nothing.
	Redact []string
	// Template is an optional text/template for the message body; see
	// chat.TemplateData. A template that does not parse or fails on the
	// sample events (diff.SampleEvents) is an error of NewSlack/NewFeishu.
	Template string

	// RateLimit is the most messages per second the sink sends and Burst
	// how many it may send at once. Zero takes the platform's documented
	// limit: Slack 1 per second, burst 1; Feishu 100 per minute and 5 per
	// second, as 97/60 per second with burst 3.
	RateLimit rate.Limit
	Burst     int
	// Timeout bounds one HTTP request. Default 10s.
	Timeout time.Duration
	// Logger receives the sink's logs. Default zerolog.Nop().
	Logger zerolog.Logger
	// HTTPClient sends the requests. Default: a client of the sink's own,
	// closed by Close.
	HTTPClient *http.Client
	// Clock reads the time for Feishu signature timestamps, Retry-After
	// dates and the rate limiter, and runs the rate limiter's waits.
	// Default SystemClock.
	Clock Clock
}

// Platform defaults.
const (
	// SlackRateLimit is Slack's documented limit for incoming webhooks:
	// one message per second (short bursts tolerated but not promised).
	SlackRateLimit rate.Limit = 1
	// SlackBurst is the default burst of a Slack sink.
	SlackBurst = 1
	// FeishuRateLimit and FeishuBurst keep a Feishu custom bot within its
	// documented 100 requests per minute and 5 per second: a token bucket
	// sends at most Burst + RateLimit·T messages in any window of T, which
	// is 3 + 1.62 < 5 for one second and 3 + 97 = 100 for one minute.
	FeishuRateLimit rate.Limit = 97.0 / 60
	FeishuBurst                = 3

	chatDefaultTimeout = 10 * time.Second
	// chatDigestMax is the most events one digest message lists; more
	// events waiting start the next digest. Every event of a digest is
	// listed, so none is acknowledged without appearing in a message.
	chatDigestMax = 20
	// chatMaxResponse bounds how much of an answer body is read.
	chatMaxResponse = 64 << 10
)

// chatDefaultRedact is the redact list of chat sinks when none is set.
var chatDefaultRedact = []string{"user_phone"}

// ErrChatClosed is returned by Deliver on a chat sink after Close.
var ErrChatClosed = chat.ErrClosed

// ChatError is a chat platform's refusal of a message, wrapped in the
// error kind Deliver returns (see Slack.Deliver and Feishu.Deliver); use
// errors.As to read it. Message is the platform's answer (Slack's body
// such as "invalid_payload", Feishu's msg); it never holds the webhook
// URL or a secret.
type ChatError struct {
	Sink, Platform, Host string
	HTTPStatus           int
	Code                 int // Feishu's code; 0 for Slack
	Message              string
}

// Error reads "feishu ops: open.feishu.cn answered HTTP 200 code 19021: …".
func (e *ChatError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %s answered HTTP %d", e.Platform, e.Sink, e.Host, e.HTTPStatus)
	if e.Code != 0 {
		fmt.Fprintf(&b, " code %d", e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	return b.String()
}

// chatPlatform is what differs between Slack and Feishu.
type chatPlatform struct {
	kind          string // "slack" or "feishu", for errors and logs
	defaultLocale string
	defaultRate   rate.Limit
	defaultBurst  int
	// esc escapes plain text for the platform's markup.
	esc func(string) string
}

// chatCore is the part shared by Slack and Feishu: config, rendering and
// rate limiting with digests (package chat), and the HTTP post.
type chatCore struct {
	p        chatPlatform
	name     string
	url      string
	host     string
	client   *http.Client
	ownsHTTP bool
	timeout  time.Duration
	log      zerolog.Logger
	clock    Clock
	render   *chat.Renderer
	batch    *chat.Batcher
	closed   sync.Once
}

func newChatCore(cfg ChatConfig, p chatPlatform) (*chatCore, error) {
	errf := func(format string, a ...any) error {
		return fmt.Errorf("%s %s: %s", p.kind, cfg.Name, fmt.Sprintf(format, a...))
	}
	if cfg.Name == "" {
		return nil, fmt.Errorf("%s: name is empty", p.kind)
	}
	if cfg.URL == "" {
		return nil, errf("url is empty")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// The parse error would quote the URL and with it the credential.
		return nil, errf("url is not an http(s) URL")
	}
	if err := CheckChatConfig(cfg); err != nil {
		return nil, errf("%v", err)
	}
	if cfg.Timeout < 0 {
		return nil, errf("timeout %s is negative", cfg.Timeout)
	}
	if cfg.Locale == "" {
		cfg.Locale = p.defaultLocale
	}
	if cfg.RateLimit == 0 {
		cfg.RateLimit = p.defaultRate
	}
	if cfg.Burst == 0 {
		cfg.Burst = p.defaultBurst
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = chatDefaultTimeout
	}
	if cfg.Redact == nil {
		cfg.Redact = chatDefaultRedact
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock
	}
	redact := slices.Clone(cfg.Redact)
	render, err := chat.NewRenderer(chat.RendererConfig{
		Name:     cfg.Name,
		Locale:   cfg.Locale,
		Link:     cfg.Link,
		Template: cfg.Template,
		Escape:   p.esc,
		Redact:   func(ev *diff.Event) *diff.Event { return Redact(ev, redact) },
		Mask:     MaskValue,
	})
	if err != nil {
		return nil, errf("%v", err)
	}
	c := &chatCore{
		p:       p,
		name:    cfg.Name,
		url:     cfg.URL,
		host:    u.Host,
		client:  cfg.HTTPClient,
		timeout: cfg.Timeout,
		clock:   cfg.Clock,
		log:     cfg.Logger.With().Str("sink", cfg.Name).Str("type", p.kind).Logger(),
		render:  render,
	}
	if c.client == nil {
		c.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		c.ownsHTTP = true
	}
	c.batch = chat.NewBatcher(rate.NewLimiter(cfg.RateLimit, cfg.Burst), chatDigestMax, cfg.Clock,
		func(err error) bool { return errors.Is(err, ErrPermanent) })
	return c, nil
}

// deliver is Deliver of both chat sinks. send posts one message for evs.
// It does not filter: the dispatcher did.
func (c *chatCore) deliver(ctx context.Context, ev *diff.Event, send chat.SendFunc) error {
	return c.batch.Deliver(ctx, ev, send)
}

// retryAfter is how long the answer asks to wait (see retryafter.Parse),
// on the sink's clock; names are the headers read, in order.
func (c *chatCore) retryAfter(a *chatAnswer, names ...string) time.Duration {
	return retryafter.Header(a.header, c.clock.Now(), names...)
}

func (c *chatCore) close(ctx context.Context) error {
	var err error
	c.closed.Do(func() {
		err = c.batch.Close(ctx)
		if c.ownsHTTP {
			c.client.CloseIdleConnections()
		}
	})
	if err != nil {
		return fmt.Errorf("%s %s: close: %w", c.p.kind, c.name, err)
	}
	return nil
}

// chatAnswer is what a platform answered to one post.
type chatAnswer struct {
	status int
	header http.Header
	body   []byte
}

// post sends body as JSON and returns the answer. Errors name the host,
// never the URL: the webhook credential is in its path.
func (c *chatCore) post(ctx context.Context, body []byte) (*chatAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return nil, Permanent(fmt.Errorf("%s %s: request to %s: %w", c.p.kind, c.name, c.host, chatStripURL(err)))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "incs-relay")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: post to %s: %w", c.p.kind, c.name, c.host, chatStripURL(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, chatMaxResponse))
	if err != nil {
		return nil, fmt.Errorf("%s %s: post to %s: read answer: %w", c.p.kind, c.name, c.host, chatStripURL(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, chatMaxResponse))
	return &chatAnswer{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// chatStripURL drops the *url.Error layer, whose message quotes the URL.
func chatStripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
