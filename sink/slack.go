package sink

// The Slack sink: a chat sink (chat.go) that posts to a Slack incoming
// webhook and reads Slack's answers as retry, pause or refusal.

import (
	"context"
	"fmt"
	"net/http"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/sink/chat"
)

// Slack posts events to a Slack incoming webhook as Block Kit messages with
// a plain-text fallback, within Slack's rate limit, grouping bursts into
// digest messages (see ChatConfig). It is safe for concurrent use.
type Slack struct {
	core *chatCore
}

var _ Sink = (*Slack)(nil)

// NewSlack validates cfg and returns a Slack sink. The locale defaults to
// "en". A template is parsed and executed on SampleEvents here, so a
// broken template is an error naming the problem. It starts no goroutine
// until Deliver needs one; Close releases everything.
func NewSlack(cfg ChatConfig) (*Slack, error) {
	if cfg.Secret != "" {
		return nil, fmt.Errorf("slack %s: secret: Slack incoming webhooks are not signed; remove it", cfg.Name)
	}
	core, err := newChatCore(cfg, chatPlatform{
		kind:          "slack",
		defaultLocale: "en",
		defaultRate:   SlackRateLimit,
		defaultBurst:  SlackBurst,
		esc:           chat.SlackEscape,
	})
	if err != nil {
		return nil, err
	}
	return &Slack{core: core}, nil
}

// Name returns the sink's name.
func (s *Slack) Name() string { return s.core.name }

// Deliver posts ev, alone or in a digest with other events that arrived
// faster than the rate limit, and blocks until Slack accepted or refused
// that message or ctx ended. It does not filter: its dispatcher applies
// the sink's filter first (see FilterConfig). Slack's answers map to error kinds: 2xx is success; 429 is a
// *RetryAfterError with its Retry-After; 408, 425 and 5xx are retryable;
// 403 (action_prohibited, invalid_token), 404 (channel_not_found,
// no_service) and 410 (channel_is_archived) are a *PauseError, since no
// later message could pass either; other 4xx (invalid_payload, no_text,
// invalid_blocks) are a *PermanentError carrying Slack's answer.
func (s *Slack) Deliver(ctx context.Context, ev *diff.Event) error {
	return s.core.deliver(ctx, ev, s.send)
}

// Close stops pending digests (their Deliver calls return ErrChatClosed)
// and waits for them up to ctx. It is idempotent.
func (s *Slack) Close(ctx context.Context) error { return s.core.close(ctx) }

// Render returns the JSON body Deliver would post for ev alone. A template that fails on ev is an error here, where
// Deliver would fall back to the default body.
func (s *Slack) Render(ev *diff.Event) ([]byte, error) {
	c, err := s.core.render.Card(ev)
	if err != nil {
		return nil, fmt.Errorf("slack %s: template: %w", s.core.name, err)
	}
	return chat.SlackPayload(&c)
}

// RenderDigest returns the JSON body of the digest message that would carry
// evs (one event renders as Render does).
func (s *Slack) RenderDigest(evs []*diff.Event) ([]byte, error) {
	if len(evs) == 1 {
		return s.Render(evs[0])
	}
	c := s.core.render.Digest(evs)
	return chat.SlackPayload(&c)
}

func (s *Slack) send(ctx context.Context, evs []*diff.Event) error {
	var c chat.Card
	if len(evs) == 1 {
		var err error
		if c, err = s.core.render.Card(evs[0]); err != nil {
			s.core.log.Warn().Err(err).Str("event_id", evs[0].ID).Msg("template failed; sending the default message")
		}
	} else {
		c = s.core.render.Digest(evs)
	}
	body, err := chat.SlackPayload(&c)
	if err != nil {
		return Permanent(fmt.Errorf("slack %s: encode: %w", s.core.name, err))
	}
	a, err := s.core.post(ctx, body)
	if err != nil {
		return err
	}
	if err := s.classify(a); err != nil {
		return err
	}
	if len(evs) > 1 {
		s.core.log.Info().Int("events", len(evs)).Msg("sent digest")
	}
	return nil
}

// classify maps Slack's answer to an error kind.
func (s *Slack) classify(a *chatAnswer) error {
	if a.status >= 200 && a.status < 300 {
		return nil
	}
	ce := &ChatError{Sink: s.core.name, Platform: "slack", Host: s.core.host, HTTPStatus: a.status,
		Message: chat.PlatformText(a.body)}
	switch {
	case a.status == http.StatusTooManyRequests || a.status == http.StatusServiceUnavailable:
		if w := s.core.retryAfter(a); w > 0 {
			return &RetryAfterError{Err: ce, Wait: w}
		}
		return ce
	case a.status == http.StatusRequestTimeout || a.status == http.StatusTooEarly || a.status >= 500:
		return ce
	case a.status == http.StatusForbidden || a.status == http.StatusNotFound || a.status == http.StatusGone:
		return &PauseError{Err: ce}
	}
	return Permanent(ce)
}
