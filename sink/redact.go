package sink

// Redaction: masking configured fields in what a sink sends, for every
// sink type, and a wrapper that applies it before a sink delivers.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/incs-relay/incs-relay/diff"
)

// MaskValue masks the middle of s, keeping at each end up to four
// characters and less than a third of it: MaskValue("6281519140316") is
// "6281****0316". Strings of four characters or fewer become "****"; the
// empty string stays empty.
func MaskValue(s string) string {
	r := []rune(s)
	n := len(r)
	switch {
	case n == 0:
		return ""
	case n <= 4:
		return "****"
	}
	k := min(4, (n-1)/3)
	return string(r[:k]) + "****" + string(r[n-k:])
}

// RedactJSON returns raw with the value of every object member named in
// fields masked, at any depth: strings and numbers become MaskValue of
// their text, objects and arrays become "****", null and "" stay. Member
// order and unnamed members are kept; raw is returned as it is when nothing
// matched. It fails only when raw is not JSON.
func RedactJSON(raw json.RawMessage, fields []string) (json.RawMessage, error) {
	if len(fields) == 0 || len(raw) == 0 {
		return raw, nil
	}
	out, _, err := chatRedact(raw, chatFieldSet(fields), -1)
	return out, err
}

// Redact returns a copy of ev whose Data.Task and Data.Log have the named
// fields masked (see RedactJSON), as have the string members of Data with
// those JSON names (e.g. "comment", "assignee_username") and the "from"
// and "to" of each of Data's changes (task.updated, task.log_updated)
// whose "field" is a named one, and whose Body, when set, is the stored
// body with the same members masked under "data". Envelope fields are
// never masked. A Task or Log that is not JSON becomes
// null rather than leak. With no fields it returns a plain copy. Safe for
// concurrent use; ev is not modified.
func Redact(ev *diff.Event, fields []string) *diff.Event {
	c := *ev
	if len(fields) == 0 {
		return &c
	}
	set := chatFieldSet(fields)
	red := func(raw json.RawMessage) json.RawMessage {
		if len(raw) == 0 {
			return raw
		}
		out, _, err := chatRedact(raw, set, -1)
		if err != nil {
			return json.RawMessage("null")
		}
		return out
	}
	c.Data.Task = red(ev.Data.Task)
	c.Data.Log = red(ev.Data.Log)
	for name, p := range map[string]*string{
		"status_name":                &c.Data.StatusName,
		"previous_status_name":       &c.Data.PreviousStatusName,
		"assignee_username":          &c.Data.AssigneeUsername,
		"previous_assignee_username": &c.Data.PreviousAssignee,
		"comment":                    &c.Data.Comment,
	} {
		if set[name] {
			*p = MaskValue(*p)
		}
	}
	if ev.Data.Edit != nil {
		e := *ev.Data.Edit
		e.Changes = slices.Clone(e.Changes)
		for i := range e.Changes {
			if ch := &e.Changes[i]; set[ch.Field] {
				ch.From, ch.To = chatMaskJSON(ch.From), chatMaskJSON(ch.To)
			}
		}
		c.Data.Edit = &e
	}
	if len(ev.Body) > 0 {
		out, _, err := chatRedact(ev.Body, set, 0)
		if err != nil {
			b, merr := json.Marshal(&c)
			if merr != nil {
				out = nil
			} else {
				out = b
			}
		}
		c.Body = out
	}
	return &c
}

func chatFieldSet(fields []string) map[string]bool {
	set := make(map[string]bool, len(fields))
	for _, f := range fields {
		set[f] = true
	}
	return set
}

// chatRedact masks the named members of raw. depth 0 is an event body:
// there only the "data" member is looked into. depth 1 is an event's
// data: as -1, and the "from" and "to" of a change in its "changes" are
// masked when the change's "field" is named. depth -1 looks everywhere.
// It reports whether anything changed; unchanged input is returned as is.
func chatRedact(raw json.RawMessage, set map[string]bool, depth int) (json.RawMessage, bool, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 {
		return raw, false, fmt.Errorf("redact: empty JSON value")
	}
	switch trimmed[0] {
	case '{':
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.UseNumber()
		if _, err := dec.Token(); err != nil {
			return raw, false, fmt.Errorf("redact: %w", err)
		}
		var buf bytes.Buffer
		buf.WriteByte('{')
		changed := false
		for i := 0; dec.More(); i++ {
			kt, err := dec.Token()
			if err != nil {
				return raw, false, fmt.Errorf("redact: %w", err)
			}
			k, _ := kt.(string)
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				return raw, false, fmt.Errorf("redact: %w", err)
			}
			switch {
			case depth != 0 && set[k]:
				m := chatMaskJSON(v)
				changed = changed || !bytes.Equal(m, v)
				v = m
			case depth == 0 && k == "data", depth != 0:
				var (
					nv  json.RawMessage
					ch  bool
					err error
				)
				switch {
				case depth == 0:
					nv, ch, err = chatRedact(v, set, 1)
				case depth == 1 && k == "changes":
					nv, ch, err = redactChanges(v, set)
				default:
					nv, ch, err = chatRedact(v, set, -1)
				}
				if err != nil {
					return raw, false, err
				}
				changed = changed || ch
				v = nv
			}
			if i > 0 {
				buf.WriteByte(',')
			}
			kb, _ := json.Marshal(k)
			buf.Write(kb)
			buf.WriteByte(':')
			buf.Write(v)
		}
		if _, err := dec.Token(); err != nil {
			return raw, false, fmt.Errorf("redact: %w", err)
		}
		if !changed {
			return raw, false, nil
		}
		buf.WriteByte('}')
		return buf.Bytes(), true, nil
	case '[':
		if depth == 0 {
			return raw, false, nil
		}
		return redactElems(raw, func(json.RawMessage) map[string]bool { return set })
	default:
		if !json.Valid(trimmed) {
			return raw, false, fmt.Errorf("redact: invalid JSON value")
		}
		return raw, false, nil
	}
}

// redactChanges masks the named members of the changes of an event's
// data, and the "from" and "to" of a change whose "field" is named.
func redactChanges(raw json.RawMessage, set map[string]bool) (json.RawMessage, bool, error) {
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '[' {
		return chatRedact(raw, set, -1) // not a list of changes: as any value
	}
	return redactElems(raw, func(e json.RawMessage) map[string]bool {
		var c struct{ Field any }
		_ = json.Unmarshal(e, &c)
		if f, ok := c.Field.(string); !ok || !set[f] {
			return set
		}
		with := maps.Clone(set)
		with["from"], with["to"] = true, true
		return with
	})
}

// redactElems masks, at any depth, the members of each element of the
// JSON array raw that setOf names for it. It reports whether anything
// changed; unchanged input is returned as is.
func redactElems(raw json.RawMessage, setOf func(elem json.RawMessage) map[string]bool) (json.RawMessage, bool, error) {
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return raw, false, fmt.Errorf("redact: %w", err)
	}
	changed := false
	for i, e := range elems {
		ne, ch, err := chatRedact(e, setOf(e), -1)
		if err != nil {
			return raw, false, err
		}
		elems[i], changed = ne, changed || ch
	}
	if !changed {
		return raw, false, nil
	}
	b, err := json.Marshal(elems)
	return b, true, err
}

// chatMaskJSON masks one JSON value.
func chatMaskJSON(v json.RawMessage) json.RawMessage {
	t := bytes.TrimSpace(v)
	if len(t) == 0 {
		return v
	}
	var s string
	switch t[0] {
	case 'n', 't', 'f':
		return v
	case '"':
		if err := json.Unmarshal(t, &s); err != nil || s == "" {
			return v
		}
		s = MaskValue(s)
	case '{', '[':
		s = "****"
	default: // number
		s = MaskValue(string(t))
	}
	b, _ := json.Marshal(s)
	return b
}

// Redacting returns s with ev masked by Redact(ev, fields) before every
// delivery. When s is an AsyncSink, so is the result: a redacting NATS sink
// keeps JetStream's pipelined publishes. With no fields it returns s.
func Redacting(s Sink, fields []string) Sink {
	if len(fields) == 0 {
		return s
	}
	r := redacting{Sink: s, fields: slices.Clone(fields)}
	if as, ok := s.(AsyncSink); ok {
		return &redactingAsync{redacting: r, async: as}
	}
	return &r
}

// redacting masks fields before its Sink delivers.
type redacting struct {
	Sink
	fields []string
}

// Deliver delivers ev with its fields masked.
func (r *redacting) Deliver(ctx context.Context, ev *diff.Event) error {
	return r.Sink.Deliver(ctx, Redact(ev, r.fields))
}

// redactingAsync is redacting over an AsyncSink.
type redactingAsync struct {
	redacting
	async AsyncSink
}

// DeliverAsync starts the delivery of ev with its fields masked.
func (r *redactingAsync) DeliverAsync(ctx context.Context, ev *diff.Event, done func(error)) {
	r.async.DeliverAsync(ctx, Redact(ev, r.fields), done)
}
