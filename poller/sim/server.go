package sim

// Serving the world over HTTP: parsing a request's query, listing the
// matching tasks in the chosen Order, one page at a time, and the error
// answers. Faults are faults.go.

import (
	"cmp"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller"
)

// defaultPageSize is the page size the API serves when a request names
// none; the largest it serves is poller.MaxPageSize.
const defaultPageSize = 20

// Order is the order in which the API lists tasks.
type Order int

// Orders. The vendor page does not say; IDDesc is the default.
const (
	IDDesc      Order = iota // newest task first
	IDAsc                    // oldest task first
	UpdatedDesc              // most recently updated first, then newest id
)

// query is a parsed request.
type query struct {
	taskID, creationID *int64
	typ, status        *int
	name               string
	startAt, endAt     int64 // wall-clock seconds, see wallSeconds; valid if has*
	hasStart, hasEnd   bool
	page, size         int
}

func (q *query) match(t *task) bool {
	switch {
	case q.taskID != nil && t.w.ID != *q.taskID,
		q.creationID != nil && t.w.CreationID != *q.creationID,
		q.typ != nil && t.w.Type != *q.typ,
		q.status != nil && t.w.Status != *q.status,
		q.hasStart && t.wall < q.startAt,
		q.hasEnd && t.wall > q.endAt,
		q.name != "" && !strings.Contains(t.w.Name, q.name):
		return false
	}
	return true
}

// parseQuery reads the request's parameters; the error names the bad one.
func (s *Sim) parseQuery(r *http.Request) (query, error) {
	v := r.URL.Query()
	q := query{page: 1, size: defaultPageSize, name: v.Get("name")}
	var taskID, creationID, typ, status, page, size int64
	for _, p := range []struct {
		key string
		dst *int64
		set func()
	}{
		{"task_id", &taskID, func() { q.taskID = &taskID }},
		{"creation_id", &creationID, func() { q.creationID = &creationID }},
		{"type", &typ, func() { t := int(typ); q.typ = &t }},
		{"status", &status, func() { st := int(status); q.status = &st }},
		{"page", &page, func() { q.page = max(int(page), 1) }},
		{"page_size", &size, func() {
			if size > 0 {
				q.size = min(int(size), poller.MaxPageSize)
			}
		}},
	} {
		raw := v.Get(p.key)
		if raw == "" {
			continue
		}
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || n > 1<<31 || n < -1<<31 {
			return q, fmt.Errorf("%s must be an integer", p.key)
		}
		*p.dst = n
		p.set()
	}
	for _, p := range []struct {
		key string
		dst *int64
		has *bool
	}{{"start_at", &q.startAt, &q.hasStart}, {"end_at", &q.endAt, &q.hasEnd}} {
		raw := v.Get(p.key)
		if raw == "" {
			continue
		}
		t, err := time.Parse(diff.TimeLayout, raw) // wall-clock seconds: see wallSeconds
		if err != nil {
			return q, fmt.Errorf("%s must look like 2026-04-07 17:00:00", p.key)
		}
		*p.dst, *p.has = t.Unix(), true
	}
	return q, nil
}

// ordered returns the tasks in list order. Call with s.mu held.
func (s *Sim) ordered(yield func(*task) bool) {
	switch s.o.Order {
	case IDAsc:
		for _, t := range s.tasks {
			if !yield(t) {
				return
			}
		}
	case UpdatedDesc:
		if s.byUpdated == nil || s.byUpdatedAt != s.version {
			s.byUpdated = append(s.byUpdated[:0], s.tasks...)
			clear(s.byUpdated[len(s.byUpdated):cap(s.byUpdated)]) // deleted tasks
			slices.SortFunc(s.byUpdated, func(a, b *task) int {
				return cmp.Or(cmp.Compare(b.updated, a.updated), cmp.Compare(b.w.ID, a.w.ID))
			})
			s.byUpdatedAt = s.version
		}
		for _, t := range s.byUpdated {
			if !yield(t) {
				return
			}
		}
	default:
		for i := len(s.tasks) - 1; i >= 0; i-- {
			if !yield(s.tasks[i]) {
				return
			}
		}
	}
}

const (
	pagePrefix = `{"status":"success","code":200,"message":"","data":{"total":`
	pageMiddle = `,"data":[`
	pageSuffix = `]},"error":{}}`
)

var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 128<<10); return &b }}

// page appends the body of a successful answer to q to dst.
func (s *Sim) page(dst []byte, q query) []byte {
	from := (q.page - 1) * q.size
	parts := make([][]byte, 0, q.size)
	total, size := 0, 0
	add := func(t *task) {
		b := s.encode(t)
		parts = append(parts, b)
		size += len(b) + 1
	}
	s.mu.Lock()
	if list, lo, hi, ok := s.indexedRange(q); ok {
		// Only status and creation time filter: the matching tasks are one
		// run of an id-ordered list, found by binary search.
		total = hi - lo
		for i := from; i < min(from+q.size, total); i++ {
			if s.o.Order == IDAsc {
				add(list[lo+i])
			} else {
				add(list[hi-1-i])
			}
		}
	} else if t, ok := s.byTaskID(q); ok {
		if t != nil {
			total = 1
			if from == 0 {
				add(t)
			}
		}
	} else {
		for t := range s.ordered {
			if !q.match(t) {
				continue
			}
			if total >= from && total < from+q.size {
				add(t)
			}
			total++
		}
	}
	s.mu.Unlock()

	dst = slices.Grow(dst, len(pagePrefix)+20+len(pageMiddle)+size+len(pageSuffix))
	dst = append(dst, pagePrefix...)
	dst = strconv.AppendInt(dst, int64(total), 10)
	dst = append(dst, pageMiddle...)
	for i, p := range parts {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, p...)
	}
	return append(dst, pageSuffix...)
}

// indexedRange returns the run list[lo:hi] that q matches when q filters by
// creation time and status only, the list is in id order and ids follow
// creation time: list is s.tasks, or the tasks of q's status. Call with
// s.mu held.
func (s *Sim) indexedRange(q query) (list []*task, lo, hi int, ok bool) {
	if q.taskID != nil || q.creationID != nil || q.typ != nil || q.name != "" ||
		s.o.Order == UpdatedDesc || !s.createdSorted {
		return nil, 0, 0, false
	}
	list = s.tasks
	if q.status != nil {
		if *q.status < 0 || *q.status >= len(s.byStatus) || !s.indexed {
			return nil, 0, 0, false
		}
		list = s.byStatus[*q.status]
	}
	lo, hi = 0, len(list)
	if q.hasStart {
		lo, _ = slices.BinarySearchFunc(list, q.startAt, func(t *task, at int64) int { return cmp.Compare(t.wall, at) })
	}
	if q.hasEnd {
		hi, _ = slices.BinarySearchFunc(list, q.endAt+1, func(t *task, at int64) int { return cmp.Compare(t.wall, at) })
	}
	return list, lo, max(hi, lo), true
}

// byTaskID answers a query by task_id without a scan: t is the task if it
// matches q, nil if none does. ok is false for other queries. Call with
// s.mu held.
func (s *Sim) byTaskID(q query) (t *task, ok bool) {
	if q.taskID == nil {
		return nil, false
	}
	if t = s.task(*q.taskID); t != nil && q.match(t) {
		return t, true
	}
	return nil, true
}

// ServeHTTP answers GET /external/tasks like the incsapp API, with the
// configured faults. It blocks for Faults.SlowDelay on a Slow fault, or
// until the client goes away.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if r.URL.Path != poller.TasksPath {
		writeError(w, http.StatusNotFound, 404, "not found")
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeError(w, http.StatusMethodNotAllowed, 405, "method not allowed")
		return
	}
	if s.o.Token != "" {
		want := "Bearer " + s.o.Token
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte(want)) != 1 {
			writeError(w, http.StatusUnauthorized, 401, "unauthorized: invalid token")
			return
		}
	}
	fault, slow, variant := s.rollFault(func() bool { return r.URL.Query().Get("task_id") != "" })
	switch fault {
	case Status401:
		writeError(w, http.StatusUnauthorized, 401, "unauthorized: token expired")
		return
	case Status429:
		writeError(w, http.StatusTooManyRequests, 429, "Too Many Attempts.")
		return
	case Status429RetryAfter:
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, 429, "Too Many Attempts.")
		return
	case Status500:
		writeError(w, http.StatusInternalServerError, 500, "Server Error")
		return
	case Status503:
		writeHTML(w, http.StatusServiceUnavailable, "503 Service Temporarily Unavailable")
		return
	case ErrorEnvelope:
		if variant == 0 {
			writeError(w, http.StatusOK, 500, "系统繁忙，请稍后再试")
		} else {
			writeJSON(w, http.StatusOK, []byte(`{"status":"success","code":10001,"message":"查询失败","data":{"total":0,"data":[]},"error":{"reason":"db timeout"}}`))
		}
		return
	case NotJSON:
		writeHTML(w, http.StatusOK, "502 Bad Gateway")
		return
	case Slow:
		t := time.NewTimer(slow)
		select {
		case <-r.Context().Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	q, err := s.parseQuery(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, 400, err.Error())
		return
	}
	buf := bodyPool.Get().(*[]byte)
	body := s.page((*buf)[:0], q)
	if fault == Truncated {
		body = body[:len(body)/2]
	}
	writeJSON(w, http.StatusOK, body)
	if cap(body) <= 1<<20 {
		*buf = body[:0]
		bodyPool.Put(buf)
	}
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeError(w http.ResponseWriter, status, code int, msg string) {
	m, _ := json.Marshal(msg)
	body := fmt.Appendf(nil, `{"status":"error","code":%d,"message":%s,"data":null,"error":{"message":%s}}`, code, m, m)
	writeJSON(w, status, body)
}

func writeHTML(w http.ResponseWriter, status int, title string) {
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<html>\r\n<head><title>%s</title></head>\r\n<body>\r\n<center><h1>%s</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n", title, title)
}
