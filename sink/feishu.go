package sink

// The Feishu sink: a chat sink (chat.go) that posts to a Feishu custom bot,
// signed when a secret is set, and reads Feishu's answer codes as
// delivered, retryable or refused.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/sink/chat"
)

// Feishu posts events to a Feishu (Lark) custom bot webhook as message
// cards, signed when a secret is set, within the bot's rate limit, grouping
// bursts into digest messages (see ChatConfig). It is safe for concurrent
// use.
type Feishu struct {
	core   *chatCore
	secret string
}

var _ Sink = (*Feishu)(nil)

// NewFeishu validates cfg and returns a Feishu sink. The locale defaults
// to "zh". A template is parsed and executed on SampleEvents here, so a
// broken template is an error naming the problem. It starts no goroutine
// until Deliver needs one; Close releases everything.
func NewFeishu(cfg ChatConfig) (*Feishu, error) {
	core, err := newChatCore(cfg, chatPlatform{
		kind:          "feishu",
		defaultLocale: "zh",
		defaultRate:   FeishuRateLimit,
		defaultBurst:  FeishuBurst,
		esc:           chat.FeishuEscape,
	})
	if err != nil {
		return nil, err
	}
	return &Feishu{core: core, secret: cfg.Secret}, nil
}

// Name returns the sink's name.
func (f *Feishu) Name() string { return f.core.name }

// Deliver posts ev, alone or in a digest with other events that arrived
// faster than the rate limit, and blocks until Feishu accepted or refused
// that message or ctx ended. It does not filter: its dispatcher applies
// the sink's filter first (see FilterConfig). Feishu answers most errors with HTTP 200 and a non-zero code,
// so the body decides: code 0 is success; a frequency limit (HTTP 429,
// code 11232, 99991400, or 9499 "too many request") is retryable, as a
// *RetryAfterError when the answer says how long to wait; 5xx, 408 and 425
// are retryable; any other code (19021 bad signature, 19022 IP not
// allowed, 19024 keyword not found, 9499 bad request, …) is a
// *PermanentError carrying Feishu's code and msg (see ChatError).
func (f *Feishu) Deliver(ctx context.Context, ev *diff.Event) error {
	return f.core.deliver(ctx, ev, f.send)
}

// Close stops pending digests (their Deliver calls return ErrChatClosed)
// and waits for them up to ctx. It is idempotent.
func (f *Feishu) Close(ctx context.Context) error { return f.core.close(ctx) }

// Render returns the JSON body Deliver would post for ev alone, without the "timestamp" and "sign" members that
// Deliver adds when a secret is set. A template that fails on ev is an
// error here, where Deliver would fall back to the default body.
func (f *Feishu) Render(ev *diff.Event) ([]byte, error) {
	c, err := f.core.render.Card(ev)
	if err != nil {
		return nil, fmt.Errorf("feishu %s: template: %w", f.core.name, err)
	}
	return chat.FeishuPayload(&c, "", "")
}

// RenderDigest returns the JSON body of the digest message that would carry
// evs (one event renders as Render does), without signing members.
func (f *Feishu) RenderDigest(evs []*diff.Event) ([]byte, error) {
	if len(evs) == 1 {
		return f.Render(evs[0])
	}
	c := f.core.render.Digest(evs)
	return chat.FeishuPayload(&c, "", "")
}

// feishuMaxBody is the custom bot's documented request body limit.
const feishuMaxBody = 20 << 10

func (f *Feishu) send(ctx context.Context, evs []*diff.Event) error {
	var c chat.Card
	if len(evs) == 1 {
		var err error
		if c, err = f.core.render.Card(evs[0]); err != nil {
			f.core.log.Warn().Err(err).Str("event_id", evs[0].ID).Msg("template failed; sending the default message")
		}
	} else {
		c = f.core.render.Digest(evs)
	}
	var ts, sign string
	if f.secret != "" {
		now := f.core.clock.Now().Unix()
		ts, sign = strconv.FormatInt(now, 10), feishuSign(f.secret, now)
	}
	body, err := chat.FeishuPayload(&c, ts, sign)
	if err != nil {
		return Permanent(fmt.Errorf("feishu %s: encode: %w", f.core.name, err))
	}
	if len(body) > feishuMaxBody {
		return Permanent(fmt.Errorf("feishu %s: message is %d bytes, over the custom bot's %d byte limit",
			f.core.name, len(body), feishuMaxBody))
	}
	a, err := f.core.post(ctx, body)
	if err != nil {
		return err
	}
	if err := f.classify(a); err != nil {
		return err
	}
	if len(evs) > 1 {
		f.core.log.Info().Int("events", len(evs)).Msg("sent digest")
	}
	return nil
}

// feishuSign returns the custom bot signature for a Unix timestamp in
// seconds: base64 of HMAC-SHA256 keyed with timestamp+"\n"+secret over an
// empty message. Feishu accepts it within an hour of timestamp.
func feishuSign(secret string, timestamp int64) string {
	mac := hmac.New(sha256.New, []byte(strconv.FormatInt(timestamp, 10)+"\n"+secret))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// feishuAnswer is a custom bot's answer; older bots use StatusCode and
// StatusMessage.
type feishuAnswer struct {
	Code          *int   `json:"code"`
	Msg           string `json:"msg"`
	StatusCode    *int   `json:"StatusCode"`
	StatusMessage string `json:"StatusMessage"`
}

// Feishu codes that mean "too many requests": 11232 (custom bot frequency
// limit), 99991400 (gateway frequency limit), 9499 with "too many request"
// in msg (9499 otherwise means a bad request).
func feishuRateLimited(code int, msg string) bool {
	switch code {
	case 11232, 99991400:
		return true
	case 9499:
		return strings.Contains(strings.ToLower(msg), "too many")
	}
	return false
}

// classify maps Feishu's answer to an error kind.
func (f *Feishu) classify(a *chatAnswer) error {
	ce := &ChatError{Sink: f.core.name, Platform: "feishu", Host: f.core.host, HTTPStatus: a.status}
	var ans feishuAnswer
	decoded := json.Unmarshal(a.body, &ans) == nil && (ans.Code != nil || ans.StatusCode != nil)
	if decoded {
		if ans.Code != nil {
			ce.Code, ce.Message = *ans.Code, ans.Msg
		} else {
			ce.Code, ce.Message = *ans.StatusCode, ans.StatusMessage
		}
		ce.Message = chat.PlatformText([]byte(ce.Message))
	} else {
		ce.Message = chat.PlatformText(a.body)
	}
	ok2xx := a.status >= 200 && a.status < 300
	switch {
	case a.status == http.StatusTooManyRequests || (decoded && feishuRateLimited(ce.Code, ce.Message)):
		if w := f.core.retryAfter(a, "Retry-After", "X-Ogw-Ratelimit-Reset"); w > 0 {
			return &RetryAfterError{Err: ce, Wait: w}
		}
		return ce
	case a.status == http.StatusRequestTimeout || a.status == http.StatusTooEarly || a.status >= 500:
		if w := f.core.retryAfter(a, "Retry-After", "X-Ogw-Ratelimit-Reset"); w > 0 {
			return &RetryAfterError{Err: ce, Wait: w}
		}
		return ce
	case !decoded && ok2xx:
		// A 200 that is not Feishu's JSON (a proxy, a truncated body): the
		// message may or may not have arrived; try again.
		ce.Message = "unreadable answer: " + ce.Message
		return ce
	case decoded && ce.Code == 0 && ok2xx:
		return nil
	}
	return Permanent(ce)
}
