package poller

// Task heads (TaskHead), the brief of a task that tells whether it
// changed, and decoding a page without decoding the tasks a Skipper finds
// unchanged (decodePageSkip; its scanner is pagescan.go).

import (
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
	// LogUpdated is the newest updated_at of the task's logs (0 without
	// logs, or if none parses): a comment edit moves its log's updated_at,
	// and whether the task's own updated_at moves with it is undocumented.
	LogUpdated WallTime
	// Skipped is set when a Skipper found the task unchanged: it was not
	// decoded and is not in Page.Tasks.
	Skipped bool
}

// Unchanged reports whether h and old describe the same version of a task:
// same status, updated_at, newest log, log count and newest log
// updated_at. A head whose
// updated_at did not parse is never unchanged.
func (h *TaskHead) Unchanged(old *TaskHead) bool {
	return h.Updated != 0 && h.ID == old.ID && h.Status == old.Status && h.Updated == old.Updated &&
		h.LastLog == old.LastLog && h.Logs == old.Logs && h.LogUpdated == old.LogUpdated
}

// headOf returns the head of a decoded task.
func headOf(t *diff.Task) TaskHead {
	h := TaskHead{ID: t.ID, Status: t.Status, Logs: len(t.Logs)}
	h.Created, _ = parseWall([]byte(t.CreatedAt))
	h.Updated, _ = parseWall([]byte(t.UpdatedAt))
	var top string // the newest log updated_at: the layout sorts as it reads
	for i := range t.Logs {
		h.LastLog = max(h.LastLog, t.Logs[i].ID)
		if u := t.Logs[i].UpdatedAt; len(u) == wallLen && u > top {
			top = u
		}
	}
	h.LogUpdated, _ = parseWall([]byte(top))
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
//
// With mayKeep the caller gives body up if the page keeps it (kept): when
// changed tasks are most of a body without much spare room, each task's
// Raw points into body itself rather than into a copy of their JSON, which
// saves copying a page of long histories (3.6 MB for 100 tasks of 100
// logs) and keeping a buffer of that size besides.
func decodePageSkip(body []byte, number, size int, skip Skipper, mayKeep bool) (p *Page, kept bool, err error) {
	if skip == nil {
		p, err := decodePage(body, number, size)
		return p, false, err
	}
	sc := pageScanner{b: body}
	total, spans, heads, ok := sc.page()
	if !ok {
		p, err := decodeStrictSkip(body, number, size, skip)
		return p, false, err
	}
	p = &Page{Total: total, Heads: heads, Number: number, Size: size}
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
		return p, false, nil
	}
	// One copy holds every changed task's JSON; each task's Raw points
	// into it, or into body where the page keeps it.
	kept = mayKeep && 4*bytesChanged >= 3*len(body) && 4*cap(body) <= 5*len(body)
	var raw []byte
	if !kept {
		raw = make([]byte, 0, bytesChanged)
	}
	p.Tasks = make([]diff.Task, 0, n)
	for i := range heads {
		if heads[i].Skipped {
			continue
		}
		var b []byte
		if kept {
			b = body[spans[i][0]:spans[i][1]:spans[i][1]]
		} else {
			start := len(raw)
			raw = append(raw, body[spans[i][0]:spans[i][1]]...)
			b = raw[start:len(raw):len(raw)]
		}
		// Logs sized from the head: the decoder appends into it, and a
		// long history no longer leaves up to twice its room unused.
		t := diff.Task{Logs: make([]diff.Log, 0, heads[i].Logs)}
		if err := jsonv1.Unmarshal(b, (*wireTask)(&t)); err != nil {
			return nil, false, &APIError{Kind: KindDecode, Page: number, Err: err}
		}
		if t.ID != heads[i].ID {
			// The scan and the decoder disagree (a key in other case, say):
			// the strict decoder decides.
			p, err := decodeStrictSkip(body, number, size, skip)
			return p, false, err
		}
		t.AttachRaw(b)
		p.Tasks = append(p.Tasks, t)
	}
	return p, kept, nil
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
