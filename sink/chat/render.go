// Package chat renders events as chat messages and keeps a chat sink within
// its rate limit: the platform-neutral card of one event or of a digest
// (Renderer), the Slack Block Kit and Feishu card shapes of a card
// (SlackPayload, FeishuPayload), and the batcher that groups events
// arriving faster than the limit into digests (Batcher). The Slack and
// Feishu sinks of package sink use it; it does not import sink.
package chat

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/incs-relay/incs-relay/diff"
)

// TemplateData is what a chat sink's template is executed with. Every
// string in it, including those inside Task and Log, is already escaped for
// the platform's markup (Slack mrkdwn, Feishu lark_md), so a comment cannot
// mention @channel or @all; the template's output is used as markup as it
// is. Redacted fields (redact, default user_phone) are already masked.
//
// A template replaces the body of a single-event message: the fields and
// the comment. The title, its colour, the link and the footer stay, and
// digests list events with the default one-line form. The template is run
// with missingkey=error; a template that fails at delivery time falls back
// to the default body and logs a warning. Functions: mask
// (RendererConfig.Mask; the sinks use sink.MaskValue) and trunc N (shorten
// to N characters).
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
//	                    (task.updated, task.log_updated, task.deleted: the task's status and
//	                    assignee, the previous ones those a task.updated changed)
//	.Comment            the comment of a task.commented event; the log's comment now for task.log_updated
//	.Changes            the changes of task.updated and task.log_updated, one line each in the locale: "renamed: A → B"
//	.UserName           the task's user_name; .UserPhone its user_phone (masked by default)
//	.Time               the log's time (time.Time); .TimeText formatted "2006-01-02 15:04:05 -07:00"
//	.Link               the link built from the sink's link template, or ""
//	.Locale             "zh" or "en"
//
// Example: "{{.TaskName}}: {{.PreviousStatusName}} → {{.StatusName}} ({{.Assignee}})".
type TemplateData struct {
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
	Changes            []string
	UserName           string
	UserPhone          string
	Time               time.Time
	TimeText           string
	Link               string
	Locale             string
}

// timeLayout formats event times in messages.
const timeLayout = "2006-01-02 15:04:05 -07:00"

// RendererConfig configures a Renderer.
type RendererConfig struct {
	// Name names the template in its errors.
	Name string
	// Locale is "zh" or "en".
	Locale string
	// Link is an optional URL template with {task_id} and {event_id}.
	Link string
	// Template is an optional text/template for a single event's body;
	// see TemplateData.
	Template string
	// Escape escapes plain text for the platform's markup (SlackEscape,
	// FeishuEscape).
	Escape func(string) string
	// Redact returns a copy of an event with the configured fields masked;
	// nil shows events as they are.
	Redact func(*diff.Event) *diff.Event
	// Mask is the template function "mask"; nil leaves values as they are.
	Mask func(string) string
}

// Renderer turns events into platform-neutral cards. It is safe for
// concurrent use.
type Renderer struct {
	loc    *locale
	locale string
	link   string
	redact func(*diff.Event) *diff.Event
	tmpl   *template.Template
	esc    func(string) string
}

// NewRenderer checks cfg and returns its Renderer. A template is parsed
// and executed on the sample events (diff.SampleEvents and
// diff.SampleStatusChanges), so a broken template is an error here. The
// samples of the changes that leave no log are held to less: a template
// may name a task or log member they lack (they have no log, and a
// task.deleted's task has only the last values seen) or render nothing
// for them; such an event gets the default body at delivery, as any
// event does whose template fails, so that a template that served before
// these types existed still loads.
func NewRenderer(cfg RendererConfig) (*Renderer, error) {
	loc, ok := locales[cfg.Locale]
	if !ok {
		return nil, fmt.Errorf("locale %q: want zh or en", cfg.Locale)
	}
	if err := CheckLink(cfg.Link); err != nil {
		return nil, fmt.Errorf("link: %w", err)
	}
	esc := cfg.Escape
	if esc == nil {
		esc = func(s string) string { return s }
	}
	r := &Renderer{loc: loc, locale: cfg.Locale, link: cfg.Link, redact: cfg.Redact, esc: esc}
	if cfg.Template == "" {
		return r, nil
	}
	mask := cfg.Mask
	if mask == nil {
		mask = func(s string) string { return s }
	}
	funcs := template.FuncMap{
		"mask":  mask,
		"trunc": func(n int, s string) string { return truncate(s, max(n, 1)) },
	}
	t, err := template.New(cfg.Name).Funcs(funcs).Option("missingkey=error").Parse(cfg.Template)
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	r.tmpl = t
	for _, ev := range append(diff.SampleEvents(), diff.SampleStatusChanges()...) {
		out, err := r.execute(&ev)
		edit := diff.IsEdit(ev.Type)
		if edit && err != nil && strings.Contains(err.Error(), "map has no entry for key") {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("template: %w", err)
		}
		if out == "" && !edit {
			return nil, fmt.Errorf("template: renders empty text for the %s sample event", ev.Type)
		}
	}
	return r, nil
}

// Field is one labelled value of a card, plain text.
type Field struct{ Label, Value string }

// Line is one event of a digest: "#237" (linked to Link when set) and
// the rest of the line, plain text.
type Line struct{ Task, Link, Text string }

// String is the line as plain text: "#237 Callback 4.8 — …".
func (l Line) String() string { return l.Task + " " + l.Text }

// Card is one message before it takes a platform's shape. Text is
// plain unless noted.
type Card struct {
	Type     string // event type, or "digest"
	Title    string
	Status   int // status for colour; -1 when the type decides
	Fields   []Field
	Quote    string // the comment, or a raw unknown log
	QuoteTag string // the label of Quote
	// Changes are the lines of a change that leaves no log ("renamed:
	// A → B"), or an edited comment's text before, labelled ChangesTag.
	Changes    []string
	ChangesTag string
	Custom     string // template output, already markup
	Lines      []Line // digest lines
	Summary    string // digest summary sentence
	Link       string
	LinkText   string
	Time       time.Time
	Ref        string // "log-533 · #237"
	Fallback   string // one-line plain summary
}

// taskView is what messages show of the task JSON.
type taskView struct {
	Name      string `json:"name"`
	UserName  string `json:"user_name"`
	UserPhone any    `json:"user_phone"`
}

// view returns the redacted event, its task fields and its task/log maps.
func (r *Renderer) view(ev *diff.Event) (*diff.Event, taskView, map[string]any, map[string]any) {
	red := ev
	if r.redact != nil {
		red = r.redact(ev)
	}
	var t taskView
	_ = json.Unmarshal(red.Data.Task, &t)
	tm := object(red.Data.Task)
	lm := object(red.Data.Log)
	return red, t, tm, lm
}

func object(raw json.RawMessage) map[string]any {
	m := map[string]any{}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	_ = dec.Decode(&m)
	return m
}

func str(v any) string {
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

func (r *Renderer) taskLabel(ev *diff.Event, t taskView) string {
	if t.Name != "" {
		return t.Name
	}
	return "#" + strconv.FormatInt(ev.Data.TaskID, 10)
}

// linkFor fills the link template for ev, or returns "".
func (r *Renderer) linkFor(ev *diff.Event) string {
	if r.link == "" {
		return ""
	}
	return strings.NewReplacer(
		"{task_id}", strconv.FormatInt(ev.Data.TaskID, 10),
		"{event_id}", url.PathEscape(ev.ID),
	).Replace(r.link)
}

// CheckLink checks a link template: an http(s) URL whose only
// placeholders are {task_id} and {event_id}; "" is no link.
func CheckLink(link string) error {
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

// Card renders one event. A template that fails falls back to the default
// body; the error is returned with the card.
func (r *Renderer) Card(ev *diff.Event) (Card, error) {
	red, t, tm, lm := r.view(ev)
	l := r.loc
	name := truncate(oneLine(r.taskLabel(red, t)), 100)
	c := Card{
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
	statusField := Field{l.labelStatus, status}
	assignee := red.Data.AssigneeUsername
	if diff.IsEdit(red.Type) {
		// No status or assignee members in their data: the task's.
		status, assignee = "", str(tm["assignee_username"])
		if s, err := strconv.Atoi(str(tm["status"])); err == nil {
			status = l.statusName(s)
		}
		statusField.Value = status
	}
	var user string
	if t.UserName != "" || str(t.UserPhone) != "" {
		user = strings.TrimSpace(t.UserName + paren(str(t.UserPhone), r.locale))
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
		c.Fields = append(c.Fields, Field{l.labelSince, d.AnchorAt.Format("2006-01-02 15:04:05")}, Field{l.labelRule, truncate(d.Rule, 100)})
		if d.Step > 0 && !d.Resolved {
			c.Fields = append(c.Fields, Field{l.labelStep, strconv.Itoa(d.Step + 1)})
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
		c.Quote, c.QuoteTag = truncate(red.Data.Comment, 2000), l.labelComment
		change = fmt.Sprintf(l.lineComment, truncate(oneLine(red.Data.Comment), 80))
	case diff.IsEdit(red.Type):
		change = r.editCard(&c, red, lm, name)
	default:
		c.Title = fmt.Sprintf(l.titleLogged, name)
		lt := str(lm["type"])
		change = fmt.Sprintf(l.lineLogged, lt)
		c.Quote, c.QuoteTag = truncate(string(red.Data.Log), 1000), l.labelLog
	}
	if statusField.Value != "" {
		c.Fields = append(c.Fields, statusField)
	}
	if assignee != "" {
		c.Fields = append(c.Fields, Field{l.labelAssignee, truncate(assignee, 500)})
	}
	if user != "" {
		c.Fields = append(c.Fields, Field{l.labelUser, truncate(user, 500)})
	}
	c.Fallback = c.Title + " — " + change
	if r.tmpl != nil {
		out, err := r.execute(ev)
		if err != nil {
			return c, err
		}
		if out != "" {
			c.Custom = truncate(out, 2900)
		}
	}
	return c, nil
}

func paren(s, locale string) string {
	if s == "" {
		return ""
	}
	if locale == "zh" {
		return "（" + s + "）"
	}
	return " (" + s + ")"
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// execute runs the template for ev and returns its trimmed output.
func (r *Renderer) execute(ev *diff.Event) (string, error) {
	red, t, tm, lm := r.view(ev)
	esc := r.esc
	d := TemplateData{
		Event:              red,
		Type:               red.Type,
		ShortType:          diff.ShortType(red.Type),
		TaskID:             red.Data.TaskID,
		TaskName:           esc(r.taskLabel(red, t)),
		Task:               escapeMap(tm, esc),
		Log:                escapeMap(lm, esc),
		Status:             red.Data.Status,
		StatusName:         esc(r.loc.statusName(red.Data.Status)),
		PreviousStatus:     red.Data.PreviousStatus,
		PreviousStatusName: esc(r.loc.statusName(red.Data.PreviousStatus)),
		Assignee:           esc(red.Data.AssigneeUsername),
		PreviousAssignee:   esc(red.Data.PreviousAssignee),
		Comment:            esc(red.Data.Comment),
		UserName:           esc(t.UserName),
		UserPhone:          esc(str(t.UserPhone)),
		Time:               red.Time,
		TimeText:           red.Time.Format(timeLayout),
		Link:               r.linkFor(red),
		Locale:             r.locale,
	}
	if diff.IsEdit(red.Type) {
		r.editTemplateData(&d, red, tm, lm)
	}
	var buf bytes.Buffer
	if err := r.tmpl.Execute(&buf, &d); err != nil {
		return "", err
	}
	return strings.TrimSpace(buf.String()), nil
}

func escapeMap(m map[string]any, esc func(string) string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = escapeAny(v, esc)
	}
	return out
}

func escapeAny(v any, esc func(string) string) any {
	switch v := v.(type) {
	case string:
		return esc(v)
	case map[string]any:
		return escapeMap(v, esc)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = escapeAny(e, esc)
		}
		return out
	}
	return v
}

// Digest renders several events as one card listing each on a line, in
// time order.
func (r *Renderer) Digest(evs []*diff.Event) Card {
	l := r.loc
	sorted := slices.Clone(evs)
	slices.SortStableFunc(sorted, func(a, b *diff.Event) int {
		return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.Offset, b.Offset))
	})
	c := Card{Type: "digest", Status: -1, Title: fmt.Sprintf(l.digestTitle, len(evs))}
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
			change = fmt.Sprintf(l.lineComment, truncate(oneLine(red.Data.Comment), 60))
		case diff.IsEdit(red.Type):
			change = r.editLine(red, lm, 20)
		default:
			change = fmt.Sprintf(l.lineLogged, str(lm["type"]))
		}
		text := fmt.Sprintf("%s — %s · %s", truncate(oneLine(r.taskLabel(red, t)), 40), change,
			red.Time.Format("01-02 15:04:05"))
		c.Lines = append(c.Lines, Line{
			Task: "#" + strconv.FormatInt(red.Data.TaskID, 10),
			Link: r.linkFor(red),
			Text: truncate(text, 120),
		})
	}
	first, last := sorted[0].Time, sorted[len(sorted)-1].Time
	c.Time = last
	c.Summary = fmt.Sprintf(l.digestSpan, len(evs), first.Format("01-02 15:04:05"), last.Format("01-02 15:04:05"))
	lines := make([]string, len(c.Lines))
	for i, ln := range c.Lines {
		lines[i] = ln.String()
	}
	c.Fallback = truncate(c.Title+": "+strings.Join(lines, "; "), 3000)
	c.Ref = l.digestNote
	return c
}

// PlatformText returns an answer body fit for an error message: one
// line, printable, at most 200 bytes.
func PlatformText(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, strings.TrimSpace(string(b)))
	return truncate(s, 200)
}

// truncate shortens s to at most n runes, ending in "…" when cut.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// marshal encodes v without HTML escaping, so that what is sent reads
// like what the platforms document.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
