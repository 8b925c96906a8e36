package chat

import (
	"strings"

	"github.com/incs-relay/incs-relay/diff"
)

// FeishuEscape escapes text for lark_md: &, < and > as HTML entities, so
// user text cannot open an <at id=all> mention or other tag.
func FeishuEscape(s string) string { return feishuEscaper.Replace(s) }

var feishuEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// feishuLinkEscape makes a URL safe inside a lark_md [text](url) link.
func feishuLinkEscape(u string) string {
	return strings.NewReplacer("(", "%28", ")", "%29", " ", "%20").Replace(u)
}

type feishuText struct {
	Tag     string `json:"tag"`
	Content string `json:"content"`
}

type feishuField struct {
	IsShort bool       `json:"is_short"`
	Text    feishuText `json:"text"`
}

type feishuButton struct {
	Tag  string     `json:"tag"`
	Text feishuText `json:"text"`
	Type string     `json:"type"`
	URL  string     `json:"url"`
}

type feishuElement struct {
	Tag      string         `json:"tag"`
	Text     *feishuText    `json:"text,omitempty"`
	Fields   []feishuField  `json:"fields,omitempty"`
	Actions  []feishuButton `json:"actions,omitempty"`
	Elements []feishuText   `json:"elements,omitempty"`
}

type feishuHeader struct {
	Template string     `json:"template"`
	Title    feishuText `json:"title"`
}

type feishuCardConfig struct {
	WideScreenMode bool `json:"wide_screen_mode"`
}

type feishuCard struct {
	Config   feishuCardConfig `json:"config"`
	Header   feishuHeader     `json:"header"`
	Elements []feishuElement  `json:"elements"`
}

type feishuMessage struct {
	Timestamp string     `json:"timestamp,omitempty"`
	Sign      string     `json:"sign,omitempty"`
	MsgType   string     `json:"msg_type"`
	Card      feishuCard `json:"card"`
}

// feishuColor picks the card header colour: status changes by their new
// status, other events by their type.
func feishuColor(c *Card) string {
	switch c.Type {
	case diff.TypeTaskStatusChanged:
		switch c.Status {
		case diff.StatusNotStarted:
			return "grey"
		case diff.StatusInProgress:
			return "blue"
		case diff.StatusCompleted:
			return "green"
		case diff.StatusTerminated:
			return "red"
		}
	case diff.TypeTaskCreated:
		return "turquoise"
	case diff.TypeTaskAssigned:
		return "indigo"
	case diff.TypeTaskCommented, diff.TypeTaskLogUpdated:
		return "wathet"
	case diff.TypeTaskUpdated:
		return "yellow"
	case diff.TypeTaskDeleted:
		return "carmine"
	case "digest":
		return "orange"
	}
	return "grey"
}

func feishuMD(s string) *feishuText { return &feishuText{Tag: "lark_md", Content: s} }

// FeishuPayload shapes a card as a custom bot "interactive" message.
func FeishuPayload(c *Card, timestamp, sign string) ([]byte, error) {
	card := feishuCard{
		Config: feishuCardConfig{WideScreenMode: true},
		Header: feishuHeader{Template: feishuColor(c), Title: feishuText{Tag: "plain_text", Content: c.Title}},
	}
	switch {
	case c.Type == "digest":
		var b strings.Builder
		for i, l := range c.Lines {
			if i > 0 {
				b.WriteByte('\n')
			}
			task := FeishuEscape(l.Task)
			if l.Link != "" {
				task = "[" + task + "](" + feishuLinkEscape(l.Link) + ")"
			}
			b.WriteString("• " + task + " " + FeishuEscape(l.Text))
		}
		card.Elements = append(card.Elements, feishuElement{Tag: "div", Text: feishuMD(b.String())})
	case c.Custom != "":
		card.Elements = append(card.Elements, feishuElement{Tag: "div", Text: feishuMD(c.Custom)})
	default:
		div := feishuElement{Tag: "div"}
		for _, fl := range c.Fields {
			div.Fields = append(div.Fields, feishuField{IsShort: true,
				Text: feishuText{Tag: "lark_md", Content: "**" + FeishuEscape(fl.Label) + "**\n" + FeishuEscape(fl.Value)}})
		}
		if len(div.Fields) > 0 { // none for a task.deleted of a task whose values were not kept
			card.Elements = append(card.Elements, div)
		}
		if c.Quote != "" {
			card.Elements = append(card.Elements, feishuElement{Tag: "div", Text: feishuMD("**" + FeishuEscape(c.QuoteTag) + "**\n" + FeishuEscape(c.Quote))})
		}
		if len(c.Changes) > 0 {
			card.Elements = append(card.Elements, feishuElement{Tag: "div", Text: feishuMD("**" + FeishuEscape(c.ChangesTag) + "**\n" + FeishuEscape(strings.Join(c.Changes, "\n")))})
		}
	}
	if c.Link != "" {
		card.Elements = append(card.Elements, feishuElement{Tag: "action", Actions: []feishuButton{{
			Tag: "button", Text: feishuText{Tag: "plain_text", Content: c.LinkText}, Type: "primary", URL: c.Link}}})
	}
	var note string
	if c.Type == "digest" {
		note = c.Summary
	} else {
		note = c.Time.Format(timeLayout) + " · " + c.Ref
	}
	card.Elements = append(card.Elements, feishuElement{Tag: "note", Elements: []feishuText{{Tag: "plain_text", Content: note}}})
	return marshal(&feishuMessage{Timestamp: timestamp, Sign: sign, MsgType: "interactive", Card: card})
}
