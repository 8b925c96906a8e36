package poller

// Task heads (TaskHead), the brief of a task that tells whether it
// changed, and the fast page decoder that reads them without decoding the
// tasks a Skipper finds unchanged (pageScanner).

import (
	"bytes"
	"net/http"

	jsonv1 "github.com/go-json-experiment/json/v1"

	"github.com/incs-relay/incs-relay/diff"
)

// TaskHead is what a page says about one task in brief: enough to place it
// in a tier and to tell whether it changed, read without decoding the task.
type TaskHead struct {
	ID      int64
	Status  int
	Created WallTime // created_at; 0 if it does not parse
	Updated WallTime // updated_at; 0 if it does not parse
	LastLog int64    // the highest log id; 0 without logs
	Logs    int      // number of logs
	// Skipped is set when a Skipper found the task unchanged: it was not
	// decoded and is not in Page.Tasks.
	Skipped bool
}

// Unchanged reports whether h and old describe the same version of a task:
// same status, updated_at, newest log and log count. A head whose
// updated_at did not parse is never unchanged.
func (h *TaskHead) Unchanged(old *TaskHead) bool {
	return h.Updated != 0 && h.ID == old.ID && h.Status == old.Status && h.Updated == old.Updated &&
		h.LastLog == old.LastLog && h.Logs == old.Logs
}

// headOf returns the head of a decoded task.
func headOf(t *diff.Task) TaskHead {
	h := TaskHead{ID: t.ID, Status: t.Status, Logs: len(t.Logs)}
	h.Created, _ = parseWall([]byte(t.CreatedAt))
	h.Updated, _ = parseWall([]byte(t.UpdatedAt))
	for i := range t.Logs {
		h.LastLog = max(h.LastLog, t.Logs[i].ID)
	}
	return h
}

// Skipper tells a sweep which tasks it need not decode: those whose current
// version the relay has handled before. Unchanged is called from the
// sweep's fetching goroutine, concurrently with the page handler; it must
// be safe for that and must not block.
type Skipper interface {
	Unchanged(h *TaskHead) bool
}

// decodePageSkip decodes a 2xx body like decodePage, but leaves out of
// Page.Tasks the tasks skip finds unchanged, without decoding them. Every
// task is in Page.Heads. With a nil skip it is decodePage.
//
// The fast path scans the body once, reading the envelope, each task's
// head and its span, then decodes only the spans of changed tasks. It
// checks the structure it walks (objects, arrays, strings, member syntax)
// but not every byte of a value it skips: a skipped task is, by its head,
// one already handled. Whatever it does not expect (an error envelope,
// escapes in keys, non-integer ids, a missing member) sends the body to the
// strict decodePage, which reports the error the same way as without skip.
func decodePageSkip(body []byte, number, size int, skip Skipper) (*Page, error) {
	if skip == nil {
		return decodePage(body, number, size)
	}
	sc := pageScanner{b: body}
	total, spans, heads, ok := sc.page()
	if !ok {
		return decodeStrictSkip(body, number, size, skip)
	}
	p := &Page{Total: total, Heads: heads, Number: number, Size: size}
	n, bytesChanged := 0, 0
	for i := range heads {
		if skip.Unchanged(&heads[i]) {
			heads[i].Skipped = true
			continue
		}
		n++
		bytesChanged += spans[i][1] - spans[i][0]
	}
	if n == 0 {
		return p, nil
	}
	// One copy holds every changed task's JSON; each task's Raw points into it.
	raw := make([]byte, 0, bytesChanged)
	p.Tasks = make([]diff.Task, 0, n)
	for i := range heads {
		if heads[i].Skipped {
			continue
		}
		start := len(raw)
		raw = append(raw, body[spans[i][0]:spans[i][1]]...)
		b := raw[start:len(raw):len(raw)]
		var t diff.Task
		if err := jsonv1.Unmarshal(b, (*wireTask)(&t)); err != nil {
			return nil, &APIError{Kind: KindDecode, Page: number, Err: err}
		}
		if t.ID != heads[i].ID {
			// The scan and the decoder disagree (a key in other case, say):
			// the strict decoder decides.
			return decodeStrictSkip(body, number, size, skip)
		}
		t.AttachRaw(b)
		p.Tasks = append(p.Tasks, t)
	}
	return p, nil
}

// decodeStrictSkip decodes with decodePage, then leaves out of Page.Tasks
// the tasks skip finds unchanged.
func decodeStrictSkip(body []byte, number, size int, skip Skipper) (*Page, error) {
	p, err := decodePage(body, number, size)
	if err != nil {
		return nil, err
	}
	kept := p.Tasks[:0]
	for i := range p.Heads {
		if skip.Unchanged(&p.Heads[i]) {
			p.Heads[i].Skipped = true
			continue
		}
		kept = append(kept, p.Tasks[i])
	}
	clear(p.Tasks[len(kept):])
	p.Tasks = kept
	return p, nil
}

// pageScanner walks an API page without decoding it.
type pageScanner struct {
	b []byte
	i int
}

// page reads the whole body: a success envelope with data.total and
// data.data. It returns the total, each task's span and head, and false
// for anything else.
func (s *pageScanner) page() (total int, spans [][2]int, heads []TaskHead, ok bool) {
	var (
		status           []byte
		code             int64
		gotCode, gotData bool
		gotTotal         bool
	)
	ok = s.object(func(key []byte) bool {
		switch string(key) {
		case "status":
			start, end, esc, ok := s.str()
			status = s.b[start:end]
			return ok && !esc
		case "code":
			if s.peek() == '"' {
				start, end, _, ok := s.str()
				if !ok {
					return false
				}
				v, ok := atoi(s.b[start:end])
				code, gotCode = v, ok
				return ok
			}
			v, ok := s.int()
			code, gotCode = v, ok
			return ok
		case "data":
			gotData = true
			return s.object(func(key []byte) bool {
				switch string(key) {
				case "total":
					v, ok := s.int()
					total, gotTotal = int(v), ok && v >= 0 && v <= 1<<31
					return gotTotal
				case "data":
					if s.literal("null") {
						spans, heads = nil, nil
						return true
					}
					spans, heads = make([][2]int, 0, 100), make([]TaskHead, 0, 100)
					return s.array(func() bool {
						start := s.i
						h, ok := s.task()
						if !ok {
							return false
						}
						spans = append(spans, [2]int{start, s.i})
						heads = append(heads, h)
						return true
					})
				}
				return !folds(key, "total", "data") && s.skip()
			})
		}
		return !folds(key, "status", "code", "data") && s.skip()
	})
	s.ws()
	if !ok || s.i != len(s.b) || string(status) != "success" || !gotCode || code != http.StatusOK ||
		!gotData || !gotTotal {
		return 0, nil, nil, false
	}
	if heads == nil && total > 0 {
		return 0, nil, nil, false // the strict decoder decides whether that is an error
	}
	return total, spans, heads, true
}

// task reads one task object into its head.
func (s *pageScanner) task() (TaskHead, bool) {
	var h TaskHead
	ok := s.object(func(key []byte) bool {
		switch string(key) {
		case "id":
			v, ok := s.int()
			h.ID = v
			return ok
		case "status":
			v, ok := s.int()
			h.Status = int(v)
			return ok && v >= -1<<31 && v < 1<<31
		case "created_at", "updated_at":
			start, end, esc, ok := s.str()
			if !ok {
				return false
			}
			var w WallTime
			if !esc {
				w, _ = parseWall(s.b[start:end])
			}
			if key[0] == 'c' {
				h.Created = w
			} else {
				h.Updated = w
			}
			return true
		case "logs":
			if s.literal("null") {
				h.Logs, h.LastLog = 0, 0
				return true
			}
			h.Logs, h.LastLog = 0, 0
			return s.array(func() bool {
				var id int64
				ok := s.object(func(key []byte) bool {
					if string(key) == "id" {
						v, ok := s.int()
						id = v
						return ok
					}
					return !folds(key, "id") && s.skip()
				})
				if !ok || id <= 0 {
					return false
				}
				h.Logs++
				h.LastLog = max(h.LastLog, id)
				return true
			})
		}
		return !folds(key, "id", "status", "created_at", "updated_at", "logs") && s.skip()
	})
	return h, ok && h.ID > 0
}

// folds reports whether key matches one of names the way encoding/json
// matches keys, ignoring case (Unicode folding included), without being
// equal to it: encoding/json would read it as that member, so the scan must
// not pass it over. Keys rarely start like a name, so the check is cheap.
func folds(key []byte, names ...string) bool {
	if len(key) == 0 {
		return false
	}
	c := key[0]
	for _, n := range names {
		if (c >= 0x80 || c|0x20 == n[0]) && bytes.EqualFold(key, []byte(n)) && string(key) != n {
			return true
		}
	}
	return false
}

func (s *pageScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\n', '\t', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next byte after white space, or 0 at the end.
func (s *pageScanner) peek() byte {
	s.ws()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

// object reads an object, calling member with each key (escapes not
// decoded) positioned at the value, which member must consume.
func (s *pageScanner) object(member func(key []byte) bool) bool {
	if s.peek() != '{' {
		return false
	}
	s.i++
	if s.peek() == '}' {
		s.i++
		return true
	}
	for {
		s.ws()
		start, end, esc, ok := s.str()
		if !ok || esc || s.peek() != ':' {
			return false
		}
		s.i++
		s.ws()
		if !member(s.b[start:end]) {
			return false
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

// array reads an array, calling elem positioned at each element, which
// elem must consume.
func (s *pageScanner) array(elem func() bool) bool {
	if s.peek() != '[' {
		return false
	}
	s.i++
	if s.peek() == ']' {
		s.i++
		return true
	}
	for {
		s.ws()
		if !elem() {
			return false
		}
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return true
		default:
			return false
		}
	}
}

// str reads a string and returns the span of its contents and whether it
// holds a backslash escape.
func (s *pageScanner) str() (start, end int, esc, ok bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return 0, 0, false, false
	}
	start = s.i + 1
	i := start
	for {
		j := bytes.IndexByte(s.b[i:], '"')
		if j < 0 {
			return 0, 0, false, false
		}
		i += j
		k := i
		for k > start && s.b[k-1] == '\\' {
			k--
		}
		if (i-k)%2 == 0 {
			break // not escaped
		}
		i++
	}
	esc = bytes.IndexByte(s.b[start:i], '\\') >= 0
	s.i = i + 1
	return start, i, esc, true
}

// int reads an integer; a fraction or exponent is refused.
func (s *pageScanner) int() (int64, bool) {
	start := s.i
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	return atoi(s.b[start:s.i])
}

// atoi reads an optionally negative decimal integer of at most 18 digits.
func atoi(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 18 || (len(b) > 1 && b[0] == '0') {
		return 0, false
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	if neg {
		v = -v
	}
	return v, true
}

// literal consumes lit if it comes next.
func (s *pageScanner) literal(lit string) bool {
	if s.peek() == lit[0] && bytes.HasPrefix(s.b[s.i:], []byte(lit)) {
		s.i += len(lit)
		return true
	}
	return false
}

// skip consumes one value of any kind, checking that brackets and strings
// close but not the grammar inside nested values.
func (s *pageScanner) skip() bool {
	switch c := s.peek(); c {
	case 0:
		return false
	case '"':
		_, _, _, ok := s.str()
		return ok
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				if _, _, _, ok := s.str(); !ok {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return true
				}
			}
			s.i++
		}
		return false
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	default:
		start := s.i
		for s.i < len(s.b) {
			c := s.b[s.i]
			if (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
				s.i++
				continue
			}
			break
		}
		return s.i > start
	}
}
