package chat

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/incs-relay/incs-relay/diff"
)

// SlackEscape escapes text for Slack mrkdwn: &, < and > (which would start
// a link or a mention such as <!channel>).
func SlackEscape(s string) string {
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
func slackEmoji(c *Card) string {
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
	case diff.TypeTaskUpdated, diff.TypeTaskLogUpdated:
		return ":pencil2:"
	case diff.TypeTaskDeleted:
		return ":wastebasket:"
	case "digest":
		return ":bookmark_tabs:"
	}
	return ":memo:"
}

// slackDate formats t with Slack's date token, so each reader sees it in
// their own zone, falling back to the event's zone.
func slackDate(t time.Time) string {
	return fmt.Sprintf("<!date^%d^{date_num} {time_secs}|%s>", t.Unix(), t.Format(timeLayout))
}

// SlackPayload shapes a card as an incoming webhook message.
func SlackPayload(c *Card) ([]byte, error) {
	m := slackMessage{Text: truncate(SlackEscape(c.Fallback), slackTextMax)}
	m.Blocks = append(m.Blocks, slackBlock{Type: "header", Text: &slackText{
		Type: "plain_text", Text: truncate(slackEmoji(c)+" "+c.Title, slackHeaderMax), Emoji: true}})
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
			task := SlackEscape(l.Task)
			if l.Link != "" {
				task = "<" + slackLinkEscape(l.Link) + "|" + task + ">"
			}
			line := truncate("• "+task+" "+SlackEscape(l.Text), slackSectionMax)
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
		m.Blocks = append(m.Blocks, slackBlock{Type: "section", Text: slackMrkdwn(truncate(c.Custom, slackSectionMax))})
	default:
		sec := slackBlock{Type: "section"}
		for _, f := range c.Fields {
			sec.Fields = append(sec.Fields, slackText{Type: "mrkdwn",
				Text: truncate("*"+SlackEscape(f.Label)+"*\n"+SlackEscape(f.Value), slackFieldMax)})
		}
		if len(sec.Fields) > 0 { // none for a task.deleted of a task whose values were not kept
			m.Blocks = append(m.Blocks, sec)
		}
		if c.Quote != "" {
			var text string
			if c.Type == diff.TypeTaskCommented || c.Type == diff.TypeTaskLogUpdated {
				text = ">" + strings.ReplaceAll(SlackEscape(c.Quote), "\n", "\n>")
			} else {
				text = "```" + SlackEscape(c.Quote) + "```"
			}
			text = "*" + SlackEscape(c.QuoteTag) + "*\n" + text
			m.Blocks = append(m.Blocks, slackBlock{Type: "section", Text: slackMrkdwn(truncate(text, slackSectionMax))})
		}
		if len(c.Changes) > 0 {
			text := "*" + SlackEscape(c.ChangesTag) + "*\n" + SlackEscape(strings.Join(c.Changes, "\n"))
			m.Blocks = append(m.Blocks, slackBlock{Type: "section", Text: slackMrkdwn(truncate(text, slackSectionMax))})
		}
	}
	var ctx []string
	if c.Type == "digest" {
		ctx = append(ctx, SlackEscape(c.Summary))
	} else {
		ctx = append(ctx, slackDate(c.Time), SlackEscape(c.Ref))
	}
	if c.Link != "" {
		ctx = append(ctx, "<"+slackLinkEscape(c.Link)+"|"+SlackEscape(c.LinkText)+">")
	}
	m.Blocks = append(m.Blocks, slackBlock{Type: "context", Elements: []slackText{
		{Type: "mrkdwn", Text: truncate(strings.Join(ctx, " · "), slackSectionMax)}}})
	return marshal(&m)
}

// slackLinkEscape makes a URL safe inside <url|text>: & < > escaped and
// "|" percent-encoded.
func slackLinkEscape(u string) string {
	return strings.ReplaceAll(SlackEscape(u), "|", "%7C")
}
