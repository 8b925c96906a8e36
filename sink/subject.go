package sink

// Subject, the template of a NATS sink's subjects: parsed once, rendered per
// event, and turned into the wildcard a stream stores.

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/incs-relay/incs-relay/diff"
)

// Subject is a parsed NATS subject template; see ParseSubject.
type Subject struct{ parts []subjectPart }

type subjectPart struct {
	lit string
	ph  string // placeholder name, or "" for a literal
}

// ParseSubject parses a NATS subject template. Placeholders are {task_id},
// {event} (e.g. status_changed) and {type} (e.g. task.status_changed); any
// other {...} is an error, as are unbalanced braces, wildcards, whitespace
// and empty tokens. It is the one check of a subject: the NATS sink and
// the config validation both call it.
func ParseSubject(tmpl string) (Subject, error) {
	var parts []subjectPart
	rest := tmpl
	for rest != "" {
		i := strings.IndexAny(rest, "{}")
		if i < 0 {
			parts = append(parts, subjectPart{lit: rest})
			break
		}
		if rest[i] == '}' {
			return Subject{}, fmt.Errorf("%q: unmatched }", tmpl)
		}
		if i > 0 {
			parts = append(parts, subjectPart{lit: rest[:i]})
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return Subject{}, fmt.Errorf("%q: unclosed {", tmpl)
		}
		name := rest[i+1 : i+j]
		switch name {
		case "task_id", "event", "type":
		default:
			return Subject{}, fmt.Errorf("unknown placeholder {%s} (want {task_id}, {event} or {type})", name)
		}
		parts = append(parts, subjectPart{ph: name})
		rest = rest[i+j+1:]
	}
	s := Subject{parts: parts}
	// Check the shape with sample values.
	sample := s.Render(&diff.Event{Type: diff.TypeTaskStatusChanged, Data: diff.Data{TaskID: 1}})
	if sample == "" || strings.ContainsAny(sample, " \t\r\n*>") || !server.IsValidSubject(sample) {
		return Subject{}, fmt.Errorf("%q is not a valid NATS subject", tmpl)
	}
	return s, nil
}

// Render returns the subject ev is published on.
func (s Subject) Render(ev *diff.Event) string {
	if len(s.parts) == 1 && s.parts[0].ph == "" {
		return s.parts[0].lit
	}
	var b strings.Builder
	b.Grow(48)
	for _, p := range s.parts {
		switch p.ph {
		case "":
			b.WriteString(p.lit)
		case "task_id":
			b.WriteString(strconv.FormatInt(ev.Data.TaskID, 10))
		case "event":
			b.WriteString(diff.ShortType(ev.Type))
		case "type":
			b.WriteString(ev.Type)
		}
	}
	return b.String()
}

// Wildcard returns the subject filter matching every subject s renders:
// each token holding a placeholder becomes "*" ({type} spans two tokens).
func (s Subject) Wildcard() string {
	const mark = "\x00"
	var b strings.Builder
	for _, p := range s.parts {
		switch p.ph {
		case "":
			b.WriteString(p.lit)
		case "type":
			b.WriteString(mark + "." + mark)
		default:
			b.WriteString(mark)
		}
	}
	toks := strings.Split(b.String(), ".")
	for i, tok := range toks {
		if strings.Contains(tok, mark) {
			toks[i] = "*"
		}
	}
	return strings.Join(toks, ".")
}

// NATSSubject renders a subject template ({task_id}, {event}, {type}) for
// ev, as the NATS sink would publish it.
func NATSSubject(tmpl string, ev *diff.Event) (string, error) {
	s, err := ParseSubject(tmpl)
	if err != nil {
		return "", err
	}
	return s.Render(ev), nil
}
