package poller

// pageScanner, the single pass over a page's JSON that decodePageSkip's
// fast path takes: the envelope, each task's head and its byte span,
// with the few JSON primitives it needs.

import (
	"bytes"
	"net/http"
)

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
				h.Logs, h.LastLog, h.LogUpdated = 0, 0, 0
				return true
			}
			h.Logs, h.LastLog, h.LogUpdated = 0, 0, 0
			var top []byte // the newest updated_at of the logs
			ok := s.array(func() bool {
				var id int64
				ok := s.object(func(key []byte) bool {
					switch string(key) {
					case "id":
						v, ok := s.int()
						id = v
						return ok
					case "updated_at":
						// The layout sorts as it reads: only the newest is
						// parsed, after the array.
						start, end, esc, ok := s.str()
						if u := s.b[start:end]; ok && !esc && len(u) == wallLen && bytes.Compare(u, top) > 0 {
							top = u
						}
						return ok
					}
					return !folds(key, "id", "updated_at") && s.skip()
				})
				if !ok || id <= 0 {
					return false
				}
				h.Logs++
				h.LastLog = max(h.LastLog, id)
				return true
			})
			h.LogUpdated, _ = parseWall(top)
			return ok
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
