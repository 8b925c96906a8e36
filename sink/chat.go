package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/incs-relay/incs-relay/diff"
)

// ChatConfig configures a chat sink (Slack or Feishu). Zero values take the
// platform's defaults; NewSlack and NewFeishu validate it.
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
	// ChatTemplateData. A template that does not parse or fails on the
	// sample events is an error of NewSlack/NewFeishu.
	Template string

	// Statuses, Assignees and TaskTypes filter events (see Filter). Empty
	// means any.
	Statuses  []int
	Assignees []string
	TaskTypes []int

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
	// Now is the clock for Feishu signature timestamps. Default time.Now.
	Now func() time.Time
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
var ErrChatClosed = errors.New("chat sink closed")

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

// chatCore is the part shared by Slack and Feishu: config, rendering,
// filtering, rate limiting with digests, and the HTTP post.
type chatCore struct {
	p        chatPlatform
	name     string
	url      string
	host     string
	client   *http.Client
	ownsHTTP bool
	timeout  time.Duration
	log      zerolog.Logger
	render   *chatRenderer
	filter   Filter
	batch    *chatBatcher
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
	loc := chatLocales[cfg.Locale]
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
	c := &chatCore{
		p:       p,
		name:    cfg.Name,
		url:     cfg.URL,
		host:    u.Host,
		client:  cfg.HTTPClient,
		timeout: cfg.Timeout,
		log:     cfg.Logger.With().Str("sink", cfg.Name).Str("type", p.kind).Logger(),
		filter:  cfg.Filter(),
	}
	if c.client == nil {
		c.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		c.ownsHTTP = true
	}
	c.render = &chatRenderer{
		loc:    loc,
		locale: cfg.Locale,
		link:   cfg.Link,
		redact: slices.Clone(cfg.Redact),
		esc:    p.esc,
	}
	if cfg.Template != "" {
		t, err := template.New(cfg.Name).Funcs(chatTemplateFuncs).Option("missingkey=error").Parse(cfg.Template)
		if err != nil {
			return nil, errf("template: %v", err)
		}
		c.render.tmpl = t
		for _, ev := range chatTemplateSamples() {
			out, err := c.render.execute(&ev)
			if err != nil {
				return nil, errf("template: %v", err)
			}
			if out == "" {
				return nil, errf("template: renders empty text for the %s sample event", ev.Type)
			}
		}
	}
	c.batch = newChatBatcher(rate.NewLimiter(cfg.RateLimit, cfg.Burst), chatDigestMax)
	return c, nil
}

// deliver is Deliver of both chat sinks. send posts one message for evs.
func (c *chatCore) deliver(ctx context.Context, ev *diff.Event, send chatSendFunc) error {
	if c.filter != nil && !c.filter(ev) {
		return nil
	}
	return c.batch.deliver(ctx, ev, send)
}

func (c *chatCore) close(ctx context.Context) error {
	var err error
	c.closed.Do(func() {
		err = c.batch.close(ctx)
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

// chatRetryAfter reads Retry-After (seconds or an HTTP date) and, for
// Feishu's gateway, x-ogw-ratelimit-reset (seconds). Zero when absent.
func chatRetryAfter(h http.Header, now time.Time) time.Duration {
	for _, k := range []string{"Retry-After", "X-Ogw-Ratelimit-Reset"} {
		v := strings.TrimSpace(h.Get(k))
		if v == "" {
			continue
		}
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			return time.Duration(n) * time.Second
		}
		if t, err := http.ParseTime(v); err == nil && t.After(now) {
			return t.Sub(now)
		}
	}
	return 0
}

// chatPlatformText returns an answer body fit for an error message: one
// line, printable, at most 200 bytes.
func chatPlatformText(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, strings.TrimSpace(string(b)))
	return chatTruncate(s, 200)
}

// chatTruncate shortens s to at most n runes, ending in "…" when cut.
func chatTruncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// chatMarshal encodes v without HTML escaping, so that what is sent reads
// like what the platforms document.
func chatMarshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// ---- rate limit and digests ----

// chatSendFunc posts one message carrying evs (one event, or a digest of
// several) and classifies the platform's answer.
type chatSendFunc func(ctx context.Context, evs []*diff.Event) error

// chatBatcher keeps a sink within its rate limit without dropping events.
// A Deliver that gets a token at once sends its event alone. Otherwise the
// event joins the pending digest, which reserved the next token; when that
// token is due, the digest is sent as one message and every Deliver waiting
// on it returns that message's result.
type chatBatcher struct {
	lim *rate.Limiter
	max int

	ctx    context.Context // ends on close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	pending *chatDigest
	// solo holds events whose digest was rejected as a whole: they are
	// sent on their own next time, so one bad event cannot take the
	// others to the dead letters.
	solo map[string]struct{}
}

type chatDigest struct {
	evs     []*diff.Event
	send    chatSendFunc
	sending bool
	done    chan struct{}
	err     error
}

func newChatBatcher(lim *rate.Limiter, max int) *chatBatcher {
	ctx, cancel := context.WithCancel(context.Background())
	return &chatBatcher{lim: lim, max: max, ctx: ctx, cancel: cancel, solo: map[string]struct{}{}}
}

func (b *chatBatcher) deliver(ctx context.Context, ev *diff.Event, send chatSendFunc) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrChatClosed
	}
	if _, ok := b.solo[ev.ID]; ok {
		b.mu.Unlock()
		return b.deliverSolo(ctx, ev, send)
	}
	if b.pending == nil && b.lim.Allow() {
		b.mu.Unlock()
		return send(ctx, []*diff.Event{ev})
	}
	d := b.pending
	if d == nil || len(d.evs) >= b.max {
		d = &chatDigest{send: send, done: make(chan struct{})}
		b.pending = d
		r := b.lim.Reserve()
		b.wg.Add(1)
		go b.run(d, r)
	}
	d.evs = append(d.evs, ev)
	b.mu.Unlock()

	select {
	case <-d.done:
		return d.err
	case <-ctx.Done():
		b.mu.Lock()
		defer b.mu.Unlock()
		select {
		case <-d.done:
			return d.err
		default:
		}
		if !d.sending {
			d.evs = slices.DeleteFunc(d.evs, func(e *diff.Event) bool { return e == ev })
		}
		return ctx.Err()
	}
}

// deliverSolo waits for a token and sends ev alone.
func (b *chatBatcher) deliverSolo(ctx context.Context, ev *diff.Event, send chatSendFunc) error {
	r := b.lim.Reserve()
	if !r.OK() {
		return fmt.Errorf("rate limiter refused a reservation")
	}
	if d := r.Delay(); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			r.Cancel()
			return ctx.Err()
		case <-b.ctx.Done():
			t.Stop()
			r.Cancel()
			return ErrChatClosed
		}
	}
	err := send(ctx, []*diff.Event{ev})
	if err == nil || errors.Is(err, ErrPermanent) || errors.Is(err, ErrPaused) {
		b.mu.Lock()
		delete(b.solo, ev.ID)
		b.mu.Unlock()
	}
	return err
}

// run sends digest d once its reserved token is due.
func (b *chatBatcher) run(d *chatDigest, r *rate.Reservation) {
	defer b.wg.Done()
	if !r.OK() {
		b.finish(d, nil, fmt.Errorf("rate limiter refused a reservation"))
		return
	}
	t := time.NewTimer(r.Delay())
	select {
	case <-t.C:
	case <-b.ctx.Done():
		t.Stop()
		r.Cancel()
		b.finish(d, nil, ErrChatClosed)
		return
	}
	b.mu.Lock()
	if b.pending == d {
		b.pending = nil
	}
	d.sending = true
	evs := slices.Clone(d.evs)
	b.mu.Unlock()
	if len(evs) == 0 { // every waiter gave up
		b.finish(d, nil, nil)
		return
	}
	err := d.send(b.ctx, evs)
	b.finish(d, evs, err)
}

func (b *chatBatcher) finish(d *chatDigest, evs []*diff.Event, err error) {
	if len(evs) > 1 && errors.Is(err, ErrPermanent) {
		// The platform refused the digest as a whole. The fault may lie
		// in one event's content: send each alone before dead-lettering.
		b.mu.Lock()
		if len(b.solo) > 4096 {
			clear(b.solo)
		}
		for _, ev := range evs {
			b.solo[ev.ID] = struct{}{}
		}
		b.mu.Unlock()
		err = fmt.Errorf("digest of %d events rejected, each is retried alone: %v", len(evs), err)
	}
	d.err = err
	close(d.done)
}

func (b *chatBatcher) close(ctx context.Context) error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ---- filters ----

// Filter returns the sink's filter on task status, assignee and task type,
// or nil when none is set. An event passes when each set list matches:
// Statuses the event's status (for task.status_changed the new status),
// Assignees the log's assignee or, when the log names none, the task's,
// TaskTypes the task's "type". The event type filter is not part of it.
// The returned Filter is safe for concurrent use.
func (c ChatConfig) Filter() Filter {
	if len(c.Statuses) == 0 && len(c.Assignees) == 0 && len(c.TaskTypes) == 0 {
		return nil
	}
	statuses, assignees, types := slices.Clone(c.Statuses), slices.Clone(c.Assignees), slices.Clone(c.TaskTypes)
	return func(ev *diff.Event) bool {
		if len(statuses) > 0 && !slices.Contains(statuses, ev.Data.Status) {
			return false
		}
		if len(assignees) == 0 && len(types) == 0 {
			return true
		}
		var t struct {
			Type     *int   `json:"type"`
			Assignee string `json:"assignee_username"`
		}
		_ = json.Unmarshal(ev.Data.Task, &t) // a task that does not decode matches no type
		if len(assignees) > 0 {
			a := ev.Data.AssigneeUsername
			if a == "" {
				a = t.Assignee
			}
			if !slices.Contains(assignees, a) {
				return false
			}
		}
		if len(types) > 0 && (t.Type == nil || !slices.Contains(types, *t.Type)) {
			return false
		}
		return true
	}
}

// ---- rendering ----

// chatLocale holds the words of one locale.
type chatLocale struct {
	status                                                    [4]string
	unknownStatus                                             string // %d
	titleCreated, titleAssigned, titleStatus, titleComment    string
	titleLogged                                               string
	labelStatus, labelAssignee, labelUser, labelComment       string
	labelLog, labelTask                                       string
	assignedWas, unassigned, unknownLog, openTask, digestNote string
	digestTitle, digestSpan                                   string
	lineCreated, lineAssigned, lineComment, lineLogged        string
	// Derived events: "stalled for 4 h", "no longer stalled", the rule's
	// words for known rule event names, and units.
	lineDerived, lineResolved, titleDerived   string
	labelSince, labelRule, labelStep          string
	unitDay, unitHour, unitMinute, unitSecond string
	derivedWords                              map[string]string
}

var chatLocales = map[string]*chatLocale{
	"en": {
		status:        [4]string{"not started", "in progress", "completed", "terminated"},
		unknownStatus: "status %d",
		titleCreated:  "New task: %s",
		titleAssigned: "Task assigned: %s",
		titleStatus:   "Task %s: %s",
		titleComment:  "New comment on %s",
		titleLogged:   "Task update: %s",
		labelStatus:   "Status",
		labelAssignee: "Assignee",
		labelUser:     "User",
		labelComment:  "Comment",
		labelLog:      "Log",
		labelTask:     "Task",
		assignedWas:   "%s (was %s)",
		unassigned:    "unassigned",
		unknownLog:    "log type %s",
		openTask:      "Open task",
		digestTitle:   "%d task updates",
		digestSpan:    "%d task updates between %s and %s, sent as one message: they came faster than this channel's rate limit.",
		digestNote:    "sent as one message: updates came faster than this channel's rate limit",
		lineCreated:   "created",
		lineAssigned:  "assigned to %s",
		lineComment:   "comment: %s",
		lineLogged:    "log type %s",
		lineDerived:   "%s for %s",
		lineResolved:  "no longer %s (was %s)",
		titleDerived:  "Task %s: %s",
		labelSince:    "Since",
		labelRule:     "Rule",
		labelStep:     "Reminder",
		unitDay:       "%d d", unitHour: "%d h", unitMinute: "%d min", unitSecond: "%d s",
		derivedWords: map[string]string{"stalled": "stalled", "overdue": "overdue", "late": "late", "unassigned": "unassigned"},
	},
	"zh": {
		status:        [4]string{"未开始", "进行中", "已完成", "被终止"},
		unknownStatus: "状态 %d",
		titleCreated:  "新任务：%s",
		titleAssigned: "任务已分配：%s",
		titleStatus:   "任务%s：%s",
		titleComment:  "任务有新备注：%s",
		titleLogged:   "任务动态：%s",
		labelStatus:   "状态",
		labelAssignee: "负责人",
		labelUser:     "用户",
		labelComment:  "备注",
		labelLog:      "日志",
		labelTask:     "任务",
		assignedWas:   "%s（原为 %s）",
		unassigned:    "未分配",
		unknownLog:    "日志类型 %s",
		openTask:      "查看任务",
		digestTitle:   "%d 条任务动态",
		digestSpan:    "%[2]s 至 %[3]s 共 %[1]d 条任务动态，因超过本群机器人的发送频率限制而合并为一条消息。",
		digestNote:    "合并发送：任务动态的到达速度超过了本群机器人的发送频率限制",
		lineCreated:   "新建",
		lineAssigned:  "分配给 %s",
		lineComment:   "备注：%s",
		lineLogged:    "日志类型 %s",
		lineDerived:   "%s %s",
		lineResolved:  "已解除%s（持续 %s）",
		titleDerived:  "任务%s：%s",
		labelSince:    "起始",
		labelRule:     "规则",
		labelStep:     "提醒",
		unitDay:       "%d 天", unitHour: "%d 小时", unitMinute: "%d 分钟", unitSecond: "%d 秒",
		derivedWords: map[string]string{"stalled": "已停滞", "overdue": "已逾期", "late": "已超时", "unassigned": "无人负责"},
	},
}

// derivedWord is the locale's word for a rule's event type, or the type's
// name with underscores as spaces.
func (l *chatLocale) derivedWord(eventType string) string {
	name := strings.TrimSuffix(diff.ShortType(eventType), "_resolved")
	if w, ok := l.derivedWords[name]; ok {
		return w
	}
	return strings.ReplaceAll(name, "_", " ")
}

// duration writes d as "4 h", "1 d 2 h", "30 min" in the locale's units,
// to its two largest units.
func (l *chatLocale) duration(d time.Duration) string {
	d = d.Round(time.Second)
	units := []struct {
		size   time.Duration
		format string
	}{{24 * time.Hour, l.unitDay}, {time.Hour, l.unitHour}, {time.Minute, l.unitMinute}, {time.Second, l.unitSecond}}
	var parts []string
	for _, u := range units {
		if n := d / u.size; n > 0 || u.size == time.Second && len(parts) == 0 {
			parts = append(parts, fmt.Sprintf(u.format, n))
			d -= n * u.size
		}
		if len(parts) == 2 || len(parts) == 1 && d == 0 {
			break
		}
	}
	return strings.Join(parts, " ")
}

// derivedChange is the one-line change of a derived event: "stalled for
// 4 h" or "no longer stalled (was 6 h)".
func (l *chatLocale) derivedChange(ev *diff.Event) string {
	d := ev.Data.Derived
	word := l.derivedWord(ev.Type)
	if d.Resolved {
		return fmt.Sprintf(l.lineResolved, word, l.duration(d.FiredAt.Sub(d.AnchorAt)))
	}
	return fmt.Sprintf(l.lineDerived, word, l.duration(d.DueAt.Sub(d.AnchorAt)))
}

func (l *chatLocale) statusName(s int) string {
	if s >= 0 && s < len(l.status) {
		return l.status[s]
	}
	return fmt.Sprintf(l.unknownStatus, s)
}

// ChatTemplateData is what a chat sink's template is executed with. Every
// string in it, including those inside Task and Log, is already escaped for
// the platform's markup (Slack mrkdwn, Feishu lark_md), so a comment cannot
// mention @channel or @all; the template's output is used as markup as it
// is. Redacted fields (redact, default user_phone) are already masked.
//
// A template replaces the body of a single-event message: the fields and
// the comment. The title, its colour, the link and the footer stay, and
// digests list events with the default one-line form. The template is run
// with missingkey=error; a template that fails at delivery time falls back
// to the default body and logs a warning. Functions: mask (MaskValue) and
// trunc N (shorten to N characters).
//
//	.Event              the event (*diff.Event, redacted): .Event.ID, .Event.Offset, .Event.Time …
//	.Type               event type, e.g. "task.status_changed"
//	.ShortType          e.g. "status_changed"
//	.TaskID             task id
//	.TaskName           task name
//	.Task               the task's JSON object as a map: {{.Task.user_name}}, {{.Task.type}} …
//	.Log                the log's JSON object as a map: {{.Log.comment}} …
//	.Status             status after the log (int); .StatusName in the sink's locale
//	.PreviousStatus     status before the log; .PreviousStatusName in the locale
//	.Assignee           the log's assignee (new assignee for task.assigned)
//	.PreviousAssignee   the assignee before a task.assigned log, if known
//	.Comment            the comment of a task.commented event
//	.UserName           the task's user_name; .UserPhone its user_phone (masked by default)
//	.Time               the log's time (time.Time); .TimeText formatted "2006-01-02 15:04:05 -07:00"
//	.Link               the link built from the sink's link template, or ""
//	.Locale             "zh" or "en"
//
// Example: "{{.TaskName}}: {{.PreviousStatusName}} → {{.StatusName}} ({{.Assignee}})".
type ChatTemplateData struct {
	Event              *diff.Event
	Type, ShortType    string
	TaskID             int64
	TaskName           string
	Task, Log          map[string]any
	Status             int
	StatusName         string
	PreviousStatus     int
	PreviousStatusName string
	Assignee           string
	PreviousAssignee   string
	Comment            string
	UserName           string
	UserPhone          string
	Time               time.Time
	TimeText           string
	Link               string
	Locale             string
}

var chatTemplateFuncs = template.FuncMap{
	"mask":  MaskValue,
	"trunc": func(n int, s string) string { return chatTruncate(s, max(n, 1)) },
}

// chatTimeLayout formats event times in messages.
const chatTimeLayout = "2006-01-02 15:04:05 -07:00"

// chatRenderer turns events into platform-neutral cards.
type chatRenderer struct {
	loc    *chatLocale
	locale string
	link   string
	redact []string
	tmpl   *template.Template
	esc    func(string) string
}

// chatField is one labelled value of a card, plain text.
type chatField struct{ Label, Value string }

// chatLine is one event of a digest: "#237" (linked to Link when set) and
// the rest of the line, plain text.
type chatLine struct{ Task, Link, Text string }

func (l chatLine) String() string { return l.Task + " " + l.Text }

// chatCard is one message before it takes a platform's shape. Text is
// plain unless noted.
type chatCard struct {
	Type     string // event type, or "digest"
	Title    string
	Status   int // status for colour; -1 when the type decides
	Fields   []chatField
	Quote    string     // the comment, or a raw unknown log
	QuoteTag string     // the label of Quote
	Custom   string     // template output, already markup
	Lines    []chatLine // digest lines
	Summary  string     // digest summary sentence
	Link     string
	LinkText string
	Time     time.Time
	Ref      string // "log-533 · #237"
	Fallback string // one-line plain summary
}

// chatTask is what messages show of the task JSON.
type chatTask struct {
	Name      string `json:"name"`
	UserName  string `json:"user_name"`
	UserPhone any    `json:"user_phone"`
}

// view returns the redacted event, its task fields and its task/log maps.
func (r *chatRenderer) view(ev *diff.Event) (*diff.Event, chatTask, map[string]any, map[string]any) {
	red := Redact(ev, r.redact)
	var t chatTask
	_ = json.Unmarshal(red.Data.Task, &t)
	tm := chatObject(red.Data.Task)
	lm := chatObject(red.Data.Log)
	return red, t, tm, lm
}

func chatObject(raw json.RawMessage) map[string]any {
	m := map[string]any{}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	_ = dec.Decode(&m)
	return m
}

func chatString(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case json.Number:
		return v.String()
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func (r *chatRenderer) taskLabel(ev *diff.Event, t chatTask) string {
	if t.Name != "" {
		return t.Name
	}
	return "#" + strconv.FormatInt(ev.Data.TaskID, 10)
}

// linkFor fills the link template for ev, or returns "".
func (r *chatRenderer) linkFor(ev *diff.Event) string {
	if r.link == "" {
		return ""
	}
	return strings.NewReplacer(
		"{task_id}", strconv.FormatInt(ev.Data.TaskID, 10),
		"{event_id}", url.PathEscape(ev.ID),
	).Replace(r.link)
}

// chatCheckLink validates a link template.
func chatCheckLink(link string) error {
	if link == "" {
		return nil
	}
	rest := strings.NewReplacer("{task_id}", "1", "{event_id}", "log-1").Replace(link)
	if i := strings.IndexAny(rest, "{}"); i >= 0 {
		return fmt.Errorf("%q: unknown placeholder; known: {task_id}, {event_id}", link)
	}
	u, err := url.Parse(rest)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", link)
	}
	return nil
}

// card renders one event. A template that fails falls back to the default
// body; the error is returned with the card.
func (r *chatRenderer) card(ev *diff.Event) (chatCard, error) {
	red, t, _, lm := r.view(ev)
	l := r.loc
	name := chatTruncate(chatOneLine(r.taskLabel(red, t)), 100)
	c := chatCard{
		Type:   red.Type,
		Status: -1,
		Link:   r.linkFor(red),
		Time:   red.Time,
		Ref:    red.ID + " · #" + strconv.FormatInt(red.Data.TaskID, 10),
	}
	if c.Link != "" {
		c.LinkText = l.openTask
	}
	status := l.statusName(red.Data.Status)
	statusField := chatField{l.labelStatus, status}
	assignee := red.Data.AssigneeUsername
	var user string
	if t.UserName != "" || chatString(t.UserPhone) != "" {
		user = strings.TrimSpace(t.UserName + chatParen(chatString(t.UserPhone), r.locale))
	}
	var change string
	switch {
	case red.Data.Derived != nil:
		d := red.Data.Derived
		change = l.derivedChange(red)
		c.Title = fmt.Sprintf(l.titleDerived, change, name)
		if !d.Resolved {
			c.Status = red.Data.Status
		}
		c.Fields = append(c.Fields, chatField{l.labelSince, d.AnchorAt.Format("2006-01-02 15:04:05")}, chatField{l.labelRule, chatTruncate(d.Rule, 100)})
		if d.Step > 0 && !d.Resolved {
			c.Fields = append(c.Fields, chatField{l.labelStep, strconv.Itoa(d.Step + 1)})
		}
	case red.Type == diff.TypeTaskCreated:
		c.Title = fmt.Sprintf(l.titleCreated, name)
		change = l.lineCreated
	case red.Type == diff.TypeTaskAssigned:
		c.Title = fmt.Sprintf(l.titleAssigned, name)
		a := assignee
		if a == "" {
			a = l.unassigned
		}
		if red.Data.PreviousAssignee != "" && red.Data.PreviousAssignee != assignee {
			a = fmt.Sprintf(l.assignedWas, a, red.Data.PreviousAssignee)
		}
		assignee = a
		change = fmt.Sprintf(l.lineAssigned, a)
	case red.Type == diff.TypeTaskStatusChanged:
		c.Status = red.Data.Status
		c.Title = fmt.Sprintf(l.titleStatus, status, name)
		statusField.Value = l.statusName(red.Data.PreviousStatus) + " → " + status
		change = statusField.Value
	case red.Type == diff.TypeTaskCommented:
		c.Title = fmt.Sprintf(l.titleComment, name)
		c.Quote, c.QuoteTag = chatTruncate(red.Data.Comment, 2000), l.labelComment
		change = fmt.Sprintf(l.lineComment, chatTruncate(chatOneLine(red.Data.Comment), 80))
	default:
		c.Title = fmt.Sprintf(l.titleLogged, name)
		lt := chatString(lm["type"])
		change = fmt.Sprintf(l.lineLogged, lt)
		c.Quote, c.QuoteTag = chatTruncate(string(red.Data.Log), 1000), l.labelLog
	}
	c.Fields = append(c.Fields, statusField)
	if assignee != "" {
		c.Fields = append(c.Fields, chatField{l.labelAssignee, chatTruncate(assignee, 500)})
	}
	if user != "" {
		c.Fields = append(c.Fields, chatField{l.labelUser, chatTruncate(user, 500)})
	}
	c.Fallback = c.Title + " — " + change
	if r.tmpl != nil {
		out, err := r.execute(ev)
		if err != nil {
			return c, err
		}
		if out != "" {
			c.Custom = chatTruncate(out, 2900)
		}
	}
	return c, nil
}

func chatParen(s, locale string) string {
	if s == "" {
		return ""
	}
	if locale == "zh" {
		return "（" + s + "）"
	}
	return " (" + s + ")"
}

func chatOneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// execute runs the template for ev and returns its trimmed output.
func (r *chatRenderer) execute(ev *diff.Event) (string, error) {
	red, t, tm, lm := r.view(ev)
	esc := r.esc
	d := ChatTemplateData{
		Event:              red,
		Type:               red.Type,
		ShortType:          diff.ShortType(red.Type),
		TaskID:             red.Data.TaskID,
		TaskName:           esc(r.taskLabel(red, t)),
		Task:               chatEscapeMap(tm, esc),
		Log:                chatEscapeMap(lm, esc),
		Status:             red.Data.Status,
		StatusName:         esc(r.loc.statusName(red.Data.Status)),
		PreviousStatus:     red.Data.PreviousStatus,
		PreviousStatusName: esc(r.loc.statusName(red.Data.PreviousStatus)),
		Assignee:           esc(red.Data.AssigneeUsername),
		PreviousAssignee:   esc(red.Data.PreviousAssignee),
		Comment:            esc(red.Data.Comment),
		UserName:           esc(t.UserName),
		UserPhone:          esc(chatString(t.UserPhone)),
		Time:               red.Time,
		TimeText:           red.Time.Format(chatTimeLayout),
		Link:               r.linkFor(red),
		Locale:             r.locale,
	}
	var buf bytes.Buffer
	if err := r.tmpl.Execute(&buf, &d); err != nil {
		return "", err
	}
	return strings.TrimSpace(buf.String()), nil
}

func chatEscapeMap(m map[string]any, esc func(string) string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = chatEscapeAny(v, esc)
	}
	return out
}

func chatEscapeAny(v any, esc func(string) string) any {
	switch v := v.(type) {
	case string:
		return esc(v)
	case map[string]any:
		return chatEscapeMap(v, esc)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = chatEscapeAny(e, esc)
		}
		return out
	}
	return v
}

// digest renders several events as one card listing each on a line, in
// time order.
func (r *chatRenderer) digest(evs []*diff.Event) chatCard {
	l := r.loc
	sorted := slices.Clone(evs)
	slices.SortStableFunc(sorted, func(a, b *diff.Event) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return chatCmpUint(a.Offset, b.Offset)
	})
	c := chatCard{Type: "digest", Status: -1, Title: fmt.Sprintf(l.digestTitle, len(evs))}
	for _, ev := range sorted {
		red, t, _, lm := r.view(ev)
		var change string
		switch {
		case red.Data.Derived != nil:
			change = l.derivedChange(red)
		case red.Type == diff.TypeTaskCreated:
			change = l.lineCreated
		case red.Type == diff.TypeTaskAssigned:
			change = fmt.Sprintf(l.lineAssigned, red.Data.AssigneeUsername)
		case red.Type == diff.TypeTaskStatusChanged:
			change = l.statusName(red.Data.PreviousStatus) + " → " + l.statusName(red.Data.Status)
		case red.Type == diff.TypeTaskCommented:
			change = fmt.Sprintf(l.lineComment, chatTruncate(chatOneLine(red.Data.Comment), 60))
		default:
			change = fmt.Sprintf(l.lineLogged, chatString(lm["type"]))
		}
		text := fmt.Sprintf("%s — %s · %s", chatTruncate(chatOneLine(r.taskLabel(red, t)), 40), change,
			red.Time.Format("01-02 15:04:05"))
		c.Lines = append(c.Lines, chatLine{
			Task: "#" + strconv.FormatInt(red.Data.TaskID, 10),
			Link: r.linkFor(red),
			Text: chatTruncate(text, 120),
		})
	}
	first, last := sorted[0].Time, sorted[len(sorted)-1].Time
	c.Time = last
	c.Summary = fmt.Sprintf(l.digestSpan, len(evs), first.Format("01-02 15:04:05"), last.Format("01-02 15:04:05"))
	lines := make([]string, len(c.Lines))
	for i, ln := range c.Lines {
		lines[i] = ln.String()
	}
	c.Fallback = chatTruncate(c.Title+": "+strings.Join(lines, "; "), 3000)
	c.Ref = l.digestNote
	return c
}

func chatCmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ---- sample events ----

// chatSampleTask is the task behind SampleEvents, as the API sends it.
const chatSampleTask = `{"id":237,"creation_id":104,"auth_id":30058,"name":"Callback 4.8","description":"Customer asked for a callback about order 4.8","type":3,"user_name":"Erin","user_phone":"6281519140316","assignee_username":"incs_1","status":1,"created_at":"2026-04-08 17:22:01","updated_at":"2026-04-08 17:25:01","logs":[` +
	`{"id":531,"type":1,"status":0,"pre_status":0,"assignee_username":"","comment":"","created_at":"2026-04-08 17:22:01","updated_at":"2026-04-08 17:22:01"},` +
	`{"id":532,"type":2,"status":0,"pre_status":0,"assignee_username":"incs_2","comment":"","created_at":"2026-04-08 17:22:04","updated_at":"2026-04-08 17:22:04"},` +
	`{"id":533,"type":2,"status":0,"pre_status":0,"assignee_username":"incs_1","comment":"","created_at":"2026-04-08 17:22:06","updated_at":"2026-04-08 17:22:06"},` +
	`{"id":534,"type":3,"status":1,"pre_status":0,"assignee_username":"incs_1","comment":"","created_at":"2026-04-08 17:25:00","updated_at":"2026-04-08 17:25:00"},` +
	`{"id":535,"type":4,"status":1,"pre_status":1,"assignee_username":"incs_1","comment":"已经跟进 — customer will call back <tomorrow> & confirm","created_at":"2026-04-08 17:25:01","updated_at":"2026-04-08 17:25:01"},` +
	`{"id":536,"type":9,"status":1,"pre_status":1,"assignee_username":"incs_1","comment":"","created_at":"2026-04-08 17:26:30","updated_at":"2026-04-08 17:26:30","extra":"sla_warning"}]}`

// SampleEvents returns one realistic event per event type, in the order of
// diff.Types: created, assigned (a reassignment), status_changed (not
// started → in progress), commented, and logged (an unknown log type 9).
// They come from one task decoded and diffed as the relay does, with times
// in UTC+8, offsets from 1 and Body set. Each call returns fresh copies.
func SampleEvents() []diff.Event {
	var t diff.Task
	if err := json.Unmarshal([]byte(chatSampleTask), &t); err != nil {
		panic("sink: sample task: " + err.Error())
	}
	all, err := diff.Diff(&t, nil, time.FixedZone("UTC+8", 8*3600))
	if err != nil {
		panic("sink: sample task: " + err.Error())
	}
	var out []diff.Event
	for _, typ := range diff.Types {
		var pick *diff.Event
		for i := range all {
			if all[i].Type == typ {
				pick = &all[i] // the last of its type
			}
		}
		if pick != nil {
			out = append(out, *pick)
		}
	}
	for i := range out {
		out[i].Offset = uint64(i + 1)
		b, err := json.Marshal(&out[i])
		if err != nil {
			panic("sink: sample event: " + err.Error())
		}
		out[i].Body = b
	}
	return out
}

// SampleDerivedEvent returns a realistic event of a rule that fired on the
// sample task (step 0, after after since its last log), or its resolving
// event: for previews and tests.
func SampleDerivedEvent(rule, eventType, since string, after time.Duration, resolved bool) diff.Event {
	samples := SampleEvents()
	last := samples[len(samples)-1]
	var l diff.Log
	_ = json.Unmarshal(last.Data.Log, &l)
	anchor := last.Time
	due := anchor.Add(after)
	ev := diff.Event{
		SpecVersion: diff.SpecVersion, ID: diff.RuleEventID(rule, last.Data.TaskID, l.ID, 0), Source: diff.Source,
		Type: eventType, Subject: last.Subject, Time: due, DataContentType: diff.DataContentType, Offset: uint64(len(samples) + 1),
		Data: diff.Data{TaskID: last.Data.TaskID, Task: last.Data.Task, Status: diff.StatusInProgress, StatusName: diff.StatusName(diff.StatusInProgress),
			AssigneeUsername: last.Data.AssigneeUsername,
			Derived:          &diff.Derived{Rule: rule, Since: since, AnchorLogID: l.ID, AnchorAt: anchor, DueAt: due, FiredAt: due.Add(7 * time.Second)}},
	}
	if resolved {
		ev.ID = diff.RuleEventID(rule, last.Data.TaskID, l.ID, -1)
		ev.Type = diff.ResolvedType(eventType)
		ev.Offset++
		ev.Data.Resolved = true
		ev.Data.FiredAt = due.Add(2 * time.Hour)
		ev.Time = ev.Data.FiredAt
		ev.Data.Status, ev.Data.StatusName = diff.StatusCompleted, diff.StatusName(diff.StatusCompleted)
	}
	ev.Body, _ = json.Marshal(&ev)
	return ev
}

// chatTemplateSamples are the events a template is validated on: the
// samples plus a status change to every status.
func chatTemplateSamples() []diff.Event {
	evs := SampleEvents()
	for _, ev := range chatStatusVariants(evs) {
		evs = append(evs, ev)
	}
	return evs
}

// chatStatusVariants returns the sample status change turned into a change
// to each status in turn (from the previous one).
func chatStatusVariants(samples []diff.Event) []diff.Event {
	var base *diff.Event
	for i := range samples {
		if samples[i].Type == diff.TypeTaskStatusChanged {
			base = &samples[i]
		}
	}
	if base == nil {
		return nil
	}
	var out []diff.Event
	for s := diff.StatusNotStarted; s <= diff.StatusTerminated; s++ {
		ev := *base
		prev := s - 1
		if prev < 0 {
			prev = diff.StatusInProgress
		}
		ev.Data.Status, ev.Data.StatusName = s, diff.StatusName(s)
		ev.Data.PreviousStatus, ev.Data.PreviousStatusName = prev, diff.StatusName(prev)
		var lg map[string]any
		if json.Unmarshal(ev.Data.Log, &lg) == nil {
			lg["status"], lg["pre_status"] = s, prev
			ev.Data.Log, _ = json.Marshal(lg)
		}
		ev.Body, _ = json.Marshal(&ev)
		out = append(out, ev)
	}
	return out
}
