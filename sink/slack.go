package sink

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/incs-relay/incs-relay/diff"
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
		esc:           slackEscape,
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
// that message or ctx ended. Events the sink's filter rejects return nil
// at once. Slack's answers map to error kinds: 2xx is success; 429 is a
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

// Render returns the JSON body Deliver would post for ev alone, ignoring
// the sink's filter. A template that fails on ev is an error here, where
// Deliver would fall back to the default body.
func (s *Slack) Render(ev *diff.Event) ([]byte, error) {
	c, err := s.core.render.card(ev)
	if err != nil {
		return nil, fmt.Errorf("slack %s: template: %w", s.core.name, err)
	}
	return slackPayload(&c)
}

// RenderDigest returns the JSON body of the digest message that would carry
// evs (one event renders as Render does).
func (s *Slack) RenderDigest(evs []*diff.Event) ([]byte, error) {
	if len(evs) == 1 {
		return s.Render(evs[0])
	}
	c := s.core.render.digest(evs)
	return slackPayload(&c)
}

func (s *Slack) send(ctx context.Context, evs []*diff.Event) error {
	var c chatCard
	if len(evs) == 1 {
		var err error
		if c, err = s.core.render.card(evs[0]); err != nil {
			s.core.log.Warn().Err(err).Str("event_id", evs[0].ID).Msg("template failed; sending the default message")
		}
	} else {
		c = s.core.render.digest(evs)
	}
	body, err := slackPayload(&c)
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
		Message: chatPlatformText(a.body)}
	switch {
	case a.status == http.StatusTooManyRequests || a.status == http.StatusServiceUnavailable:
		if w := chatRetryAfter(a.header, time.Now()); w > 0 {
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

// slackEscape escapes text for Slack mrkdwn: &, < and > (which would start
// a link or a mention such as <!channel>).
func slackEscape(s string) string {
	return slackEscaper.Replace(s)
}

var slackEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// Slack Block Kit limits that rendering keeps to.
const (
	slackHeaderMax  = 150  // header block plain_text
	slackSectionMax = 3000 // section text
	slackFieldMax   = 2000 // one section field
	slackTextMax    = 3000 // top-level fallback text (Slack truncates at 40,000)
)

type slackText struct {
	Type  string `json:"type"`
	Text  string `json:"text"`
	Emoji bool   `json:"emoji,omitempty"`
}

type slackBlock struct {
	Type     string      `json:"type"`
	Text     *slackText  `json:"text,omitempty"`
	Fields   []slackText `json:"fields,omitempty"`
	Elements []slackText `json:"elements,omitempty"`
}

type slackMessage struct {
	Text   string       `json:"text"`
	Blocks []slackBlock `json:"blocks"`
}

func slackMrkdwn(s string) *slackText { return &slackText{Type: "mrkdwn", Text: s} }

// slackEmoji marks a card's kind in its header, since Block Kit has no
// colour: status changes by their new status.
func slackEmoji(c *chatCard) string {
	switch c.Type {
	case diff.TypeTaskStatusChanged:
		switch c.Status {
		case diff.StatusNotStarted:
			return ":white_circle:"
		case diff.StatusInProgress:
			return ":large_blue_circle:"
		case diff.StatusCompleted:
			return ":white_check_mark:"
		case diff.StatusTerminated:
			return ":no_entry:"
		}
	case diff.TypeTaskCreated:
		return ":new:"
	case diff.TypeTaskAssigned:
		return ":bust_in_silhouette:"
	case diff.TypeTaskCommented:
		return ":speech_balloon:"
	case "digest":
		return ":bookmark_tabs:"
	}
	return ":memo:"
}

// slackDate formats t with Slack's date token, so each reader sees it in
// their own zone, falling back to the event's zone.
func slackDate(t time.Time) string {
	return fmt.Sprintf("<!date^%d^{date_num} {time_secs}|%s>", t.Unix(), t.Format(chatTimeLayout))
}

// slackPayload shapes a card as an incoming webhook message.
func slackPayload(c *chatCard) ([]byte, error) {
	m := slackMessage{Text: chatTruncate(slackEscape(c.Fallback), slackTextMax)}
	m.Blocks = append(m.Blocks, slackBlock{Type: "header", Text: &slackText{
		Type: "plain_text", Text: chatTruncate(slackEmoji(c)+" "+c.Title, slackHeaderMax), Emoji: true}})
	switch {
	case c.Type == "digest":
		// Every line must reach the channel: lines that do not fit one
		// section's 3000 characters go on in the next section.
		var b strings.Builder
		flush := func() {
			if b.Len() > 0 {
				m.Blocks = append(m.Blocks, slackBlock{Type: "section", Text: slackMrkdwn(b.String())})
				b.Reset()
			}
		}
		for _, l := range c.Lines {
			task := slackEscape(l.Task)
			if l.Link != "" {
				task = "<" + slackLinkEscape(l.Link) + "|" + task + ">"
			}
			line := chatTruncate("• "+task+" "+slackEscape(l.Text), slackSectionMax)
			if b.Len() > 0 && utf8.RuneCountInString(b.String())+1+utf8.RuneCountInString(line) > slackSectionMax {
				flush()
			}
			if b.Len() > 0 {
				b.WriteByte('\n')
			}
			b.WriteString(line)
		}
		flush()
	case c.Custom != "":
		m.Blocks = append(m.Blocks, slackBlock{Type: "section", Text: slackMrkdwn(chatTruncate(c.Custom, slackSectionMax))})
	default:
		sec := slackBlock{Type: "section"}
		for _, f := range c.Fields {
			sec.Fields = append(sec.Fields, slackText{Type: "mrkdwn",
				Text: chatTruncate("*"+slackEscape(f.Label)+"*\n"+slackEscape(f.Value), slackFieldMax)})
		}
		m.Blocks = append(m.Blocks, sec)
		if c.Quote != "" {
			var text string
			if c.Type == diff.TypeTaskCommented {
				text = ">" + strings.ReplaceAll(slackEscape(c.Quote), "\n", "\n>")
			} else {
				text = "```" + slackEscape(c.Quote) + "```"
			}
			text = "*" + slackEscape(c.QuoteTag) + "*\n" + text
			m.Blocks = append(m.Blocks, slackBlock{Type: "section", Text: slackMrkdwn(chatTruncate(text, slackSectionMax))})
		}
	}
	var ctx []string
	if c.Type == "digest" {
		ctx = append(ctx, slackEscape(c.Summary))
	} else {
		ctx = append(ctx, slackDate(c.Time), slackEscape(c.Ref))
	}
	if c.Link != "" {
		ctx = append(ctx, "<"+slackLinkEscape(c.Link)+"|"+slackEscape(c.LinkText)+">")
	}
	m.Blocks = append(m.Blocks, slackBlock{Type: "context", Elements: []slackText{
		{Type: "mrkdwn", Text: chatTruncate(strings.Join(ctx, " · "), slackSectionMax)}}})
	return chatMarshal(&m)
}

// slackLinkEscape makes a URL safe inside <url|text>: & < > escaped and
// "|" percent-encoded.
func slackLinkEscape(u string) string {
	return strings.ReplaceAll(slackEscape(u), "|", "%7C")
}
