package store

// Encoding events exactly as json.Marshal would, without encoding/json,
// on the ingest path.

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/incs-relay/incs-relay/diff"
)

// The outbox stores each event as json.Marshal encodes it. Encoding with
// encoding/json costs several microseconds an event, mostly re-compacting
// the task JSON for every event of a task, so the store has its own encoder
// that produces the same bytes: encodeEvent. It is used only while
// diff.Event and diff.Data have exactly the fields it knows (fastEncoding);
// otherwise, and for any value it is not sure about, the store falls back
// to json.Marshal. TestEncodeEvent pins the equivalence. diff.Data encodes
// itself (MarshalJSON) only to drop the log members of a derived event and
// of a change that leaves no log; a log event's data is the plain struct
// encoding, which encodeEvent writes.

// fastEncoding reports whether diff.Event and diff.Data have the layout
// encodeEvent was written for.
var fastEncoding = !customMarshaler[diff.Event]() && eventLayoutIs(reflect.TypeFor[diff.Event](), []string{
	"SpecVersion string json:\"specversion\"",
	"ID string json:\"id\"",
	"Source string json:\"source\"",
	"Type string json:\"type\"",
	"Subject string json:\"subject\"",
	"Time time.Time json:\"time\"",
	"DataContentType string json:\"datacontenttype\"",
	"Offset uint64 json:\"offset\"",
	"Data diff.Data json:\"data\"",
	"Body json.RawMessage json:\"-\"",
	"StoredAt time.Time json:\"-\"",
}) && eventLayoutIs(reflect.TypeFor[diff.Data](), []string{
	"TaskID int64 json:\"task_id\"",
	"Task json.RawMessage json:\"task\"",
	"Log json.RawMessage json:\"log\"",
	"Status int json:\"status\"",
	"StatusName string json:\"status_name\"",
	"PreviousStatus int json:\"previous_status\"",
	"PreviousStatusName string json:\"previous_status_name\"",
	"AssigneeUsername string json:\"assignee_username\"",
	"PreviousAssignee string json:\"previous_assignee_username,omitempty\"",
	"Comment string json:\"comment\"",
	"Derived *diff.Derived ",
	"Edit *diff.Edit ",
})

// customMarshaler reports whether T or *T encodes itself.
func customMarshaler[T any]() bool {
	var v T
	_, m1 := any(v).(json.Marshaler)
	_, m2 := any(&v).(json.Marshaler)
	_, t1 := any(v).(encoding.TextMarshaler)
	_, t2 := any(&v).(encoding.TextMarshaler)
	return m1 || m2 || t1 || t2
}

func eventLayoutIs(t reflect.Type, want []string) bool {
	if t.NumField() != len(want) {
		return false
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Name+" "+f.Type.String()+" "+string(f.Tag) != want[i] {
			return false
		}
		if _, ok := reflect.New(f.Type).Interface().(json.Marshaler); ok && f.Type.String() != "time.Time" && f.Type.String() != "json.RawMessage" && f.Type.String() != "diff.Data" {
			return false
		}
	}
	return true
}

// offsetSlack is the room encode leaves for the offset's digits, which are
// only known at commit: the most a uint64 needs.
const offsetSlack = 20

// offsetField is what json.Marshal writes for a diff.Event with Offset 0;
// the preceding fields are strings, which cannot contain an unescaped quote,
// so the first match is the envelope's field.
var offsetField = []byte(`,"offset":0,"data":`)

// eventEncoder encodes the events of one task, compacting the shared task
// JSON once.
type eventEncoder struct {
	task    []byte // the last Data.Task seen
	taskOut []byte // its encoding
}

// encode appends ev's JSON encoding to dst, as json.Marshal would encode
// it, except that the offset's value is offsetSlack bytes of room starting
// at the returned index; patchOffset fills it in.
func (e *eventEncoder) encode(dst []byte, ev *diff.Event) ([]byte, int, error) {
	if !fastEncoding || len(ev.Data.Task) == 0 || len(ev.Data.Log) == 0 || ev.Data.Derived != nil || ev.Data.Edit != nil {
		return encodeSlow(dst, ev)
	}
	if !sameSlice(ev.Data.Task, e.task) {
		out, ok := appendRaw(nil, ev.Data.Task)
		if !ok {
			return encodeSlow(dst, ev)
		}
		e.task, e.taskOut = ev.Data.Task, out
	}
	tm, err := ev.Time.MarshalJSON()
	if err != nil {
		return encodeSlow(dst, ev) // reports the error as json.Marshal does
	}
	d := &ev.Data
	// Room for the keys, numbers and strings (escapes aside): one allocation.
	need := 400 + len(tm) + len(e.taskOut) + len(d.Log) + len(ev.SpecVersion) + len(ev.ID) +
		len(ev.Source) + len(ev.Type) + len(ev.Subject) + len(ev.DataContentType) + len(d.StatusName) +
		len(d.PreviousStatusName) + len(d.AssigneeUsername) + len(d.PreviousAssignee) + len(d.Comment)
	b := slices.Grow(dst, need)
	b = append(b, `{"specversion":`...)
	b = appendString(b, ev.SpecVersion)
	b = append(b, `,"id":`...)
	b = appendString(b, ev.ID)
	b = append(b, `,"source":`...)
	b = appendString(b, ev.Source)
	b = append(b, `,"type":`...)
	b = appendString(b, ev.Type)
	b = append(b, `,"subject":`...)
	b = appendString(b, ev.Subject)
	b = append(b, `,"time":`...)
	b = append(b, tm...)
	b = append(b, `,"datacontenttype":`...)
	b = appendString(b, ev.DataContentType)
	b = append(b, `,"offset":`...)
	at := len(b)
	b = append(b, make([]byte, offsetSlack)...)
	b = append(b, `,"data":{"task_id":`...)
	b = strconv.AppendInt(b, d.TaskID, 10)
	b = append(b, `,"task":`...)
	b = append(b, e.taskOut...)
	b = append(b, `,"log":`...)
	var ok bool
	if b, ok = appendRaw(b, d.Log); !ok {
		return encodeSlow(dst, ev)
	}
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(d.Status), 10)
	b = append(b, `,"status_name":`...)
	b = appendString(b, d.StatusName)
	b = append(b, `,"previous_status":`...)
	b = strconv.AppendInt(b, int64(d.PreviousStatus), 10)
	b = append(b, `,"previous_status_name":`...)
	b = appendString(b, d.PreviousStatusName)
	b = append(b, `,"assignee_username":`...)
	b = appendString(b, d.AssigneeUsername)
	if d.PreviousAssignee != "" {
		b = append(b, `,"previous_assignee_username":`...)
		b = appendString(b, d.PreviousAssignee)
	}
	b = append(b, `,"comment":`...)
	b = appendString(b, d.Comment)
	b = append(b, "}}"...)
	return b, at, nil
}

// encodeSlow is encode by way of json.Marshal.
func encodeSlow(dst []byte, ev *diff.Event) ([]byte, int, error) {
	c := *ev
	c.Offset = 0
	body, err := json.Marshal(&c)
	if err != nil {
		return dst, 0, err
	}
	i := bytes.Index(body, offsetField)
	if i < 0 {
		return dst, 0, errors.New("no offset field in the encoded event")
	}
	i += len(`,"offset":`)
	b := slices.Grow(dst, len(body)+offsetSlack)
	b = append(b, body[:i]...)
	at := len(b)
	b = append(b, make([]byte, offsetSlack)...)
	return append(b, body[i+1:]...), at, nil
}

// patchOffset writes off into the room encode left at index at of b,
// closes the rest of the room and returns the shortened b. It modifies b
// in place, so it must be called once per encoding.
func patchOffset(b []byte, at int, off uint64) []byte {
	var digits [offsetSlack]byte
	n := copy(b[at:], strconv.AppendUint(digits[:0], off, 10))
	m := copy(b[at+n:], b[at+offsetSlack:])
	return b[:at+n+m]
}

func sameSlice(a, b []byte) bool {
	return len(a) == len(b) && len(a) > 0 && &a[0] == &b[0]
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string exactly as encoding/json does
// with HTML escaping: <, >, & and U+2028/U+2029 escaped, invalid UTF-8
// replaced by \ufffd.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '\\', '"':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendRaw appends a JSON value as json.Marshal encodes a RawMessage:
// compacted, with <, >, & and U+2028/U+2029 escaped. raw must be valid JSON,
// as diff guarantees. Already compact and safe values (the usual case) are
// copied after one quick scan. It reports false if raw is not valid JSON.
func appendRaw(dst, raw []byte) ([]byte, bool) {
	if rawIsCompactAndSafe(raw) {
		return append(dst, raw...), true
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return dst, false
	}
	out := bytes.NewBuffer(dst)
	json.HTMLEscape(out, buf.Bytes())
	return out.Bytes(), true
}

// rawIsCompactAndSafe reports whether raw has no whitespace outside
// strings and nothing json.Marshal would escape, so it can be copied as is.
func rawIsCompactAndSafe(raw []byte) bool {
	inString := false
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; c {
		case '<', '>', '&':
			return false
		case 0xE2:
			if i+2 < len(raw) && raw[i+1] == 0x80 && raw[i+2]&^1 == 0xA8 {
				return false
			}
		case '"':
			inString = !inString
		case '\\':
			if inString {
				i++ // skip the escaped byte; escapes are ASCII
			}
		case ' ', '\t', '\n', '\r':
			if !inString {
				return false
			}
		}
	}
	return !inString
}
