package store

// The outbox: the value layout of a stored event, reading events by
// offset, filtering them, and finding offsets by time.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"

	bolt "go.etcd.io/bbolt"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/diff/jsonscan"
)

// An outbox value is a small header followed by the event's JSON body,
// exactly as json.Marshal encodes the diff.Event with its offset:
//
//	version   byte (valueVersion)
//	storedAt  8 bytes BE, unix nanoseconds of the commit
//	taskID    8 bytes BE
//	typeLen   byte, then the event type
//	body      the JSON
//
// The header lets Events filter and OffsetSince search without decoding JSON.
const (
	valueVersion = 1
	headerLen    = 1 + 8 + 8 + 1
)

// DefaultLimit is the number of events Read and Events return when limit
// is zero or negative.
const DefaultLimit = 1000

type header struct {
	storedAt int64
	taskID   int64
	typ      string
}

var errBadValue = errors.New("bad event value")

func appendHeader(dst []byte, h header) []byte {
	dst = append(dst, valueVersion)
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.storedAt))
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.taskID))
	dst = append(dst, byte(len(h.typ)))
	return append(dst, h.typ...)
}

// setStoredAt sets the commit time in the header of value v.
func setStoredAt(v []byte, storedAt int64) {
	binary.BigEndian.PutUint64(v[1:9], uint64(storedAt))
}

// rawHeader is a decoded outbox value; typ and body alias it.
type rawHeader struct {
	storedAt int64
	taskID   int64
	typ      []byte
	body     []byte
}

// decodeHeader splits an outbox value into its header fields and body.
func decodeHeader(v []byte) (rawHeader, error) {
	if len(v) < headerLen || v[0] != valueVersion {
		return rawHeader{}, errBadValue
	}
	n := int(v[headerLen-1])
	if len(v) < headerLen+n {
		return rawHeader{}, errBadValue
	}
	return rawHeader{
		storedAt: int64(binary.BigEndian.Uint64(v[1:9])),
		taskID:   int64(binary.BigEndian.Uint64(v[9:17])),
		typ:      v[headerLen : headerLen+n],
		body:     v[headerLen+n:],
	}, nil
}

// decodeEvent decodes the outbox value stored under offset off. The event
// owns its memory.
func decodeEvent(off uint64, v []byte) (diff.Event, error) {
	var ev diff.Event
	err := decodeEventInto(&ev, off, v)
	return ev, err
}

// decodeEventInto decodes the stored event v at offset off into *ev (in
// place: a slice's element takes no copy through the heap).
func decodeEventInto(ev *diff.Event, off uint64, v []byte) error {
	h, err := decodeHeader(v)
	if err != nil {
		return fmt.Errorf("event %d: %w", off, err)
	}
	body := bytes.Clone(h.body)
	if !decodeEventFast(ev, body) {
		*ev = diff.Event{}
		if err := json.Unmarshal(body, ev); err != nil {
			return fmt.Errorf("event %d: %w", off, err)
		}
	}
	ev.Offset = off
	ev.Body = body
	ev.StoredAt = time.Unix(0, h.storedAt)
	return nil
}

// decodeEventFast decodes a stored body without encoding/json: the store
// wrote it (encodeEvent), so it has a known member order, and reading
// events back for delivery is on every sink's hot path. The task and log
// are kept as slices of body. Strings with escapes are unquoted by
// encoding/json. ok is false when body does not have exactly that shape;
// the caller then decodes it whole, so any body still decodes. The
// event's strings share body's memory (no allocation per member): body
// must never be modified afterwards, as no stored body is.
func decodeEventFast(ev *diff.Event, body []byte) (ok bool) {
	r := bodyReader{b: body, s: unsafe.String(unsafe.SliceData(body), len(body))}
	d := &ev.Data
	ok = r.lit(`{"specversion":`) && r.str(&ev.SpecVersion) &&
		r.lit(`,"id":`) && r.str(&ev.ID) &&
		r.lit(`,"source":`) && r.str(&ev.Source) &&
		r.lit(`,"type":`) && r.str(&ev.Type) &&
		r.lit(`,"subject":`) && r.str(&ev.Subject) &&
		r.lit(`,"time":`) && r.time(&ev.Time) &&
		r.lit(`,"datacontenttype":`) && r.str(&ev.DataContentType) &&
		r.lit(`,"offset":`) && r.uint(&ev.Offset) &&
		r.lit(`,"data":{"task_id":`) && r.int(&d.TaskID) &&
		r.lit(`,"task":`) && r.raw(&d.Task) &&
		r.lit(`,"log":`) && r.raw(&d.Log) &&
		r.lit(`,"status":`) && r.intInt(&d.Status) &&
		r.lit(`,"status_name":`) && r.str(&d.StatusName) &&
		r.lit(`,"previous_status":`) && r.intInt(&d.PreviousStatus) &&
		r.lit(`,"previous_status_name":`) && r.str(&d.PreviousStatusName) &&
		r.lit(`,"assignee_username":`) && r.str(&d.AssigneeUsername) &&
		(!r.lit(`,"previous_assignee_username":`) || r.str(&d.PreviousAssignee)) &&
		r.lit(`,"comment":`) && r.str(&d.Comment) &&
		r.lit(`}}`) && r.i == len(body)
	return ok
}

// bodyReader reads a stored event body member by member; every method
// reports whether the next bytes were what it reads.
type bodyReader struct {
	b []byte
	s string // b's memory as a string: members without escapes are slices of it
	i int
}

func (r *bodyReader) lit(s string) bool {
	if len(r.b)-r.i < len(s) || string(r.b[r.i:r.i+len(s)]) != s {
		return false
	}
	r.i += len(s)
	return true
}

// token returns the next scalar: a string with its quotes, or a number.
func (r *bodyReader) token() []byte {
	end := r.i
	if end < len(r.b) && r.b[end] == '"' {
		end = jsonscan.ValueEnd(r.b, r.i)
	} else {
		for end < len(r.b) && (r.b[end] >= '0' && r.b[end] <= '9' || r.b[end] == '-') {
			end++
		}
	}
	if end <= r.i {
		return nil
	}
	t := r.b[r.i:end]
	r.i = end
	return t
}

func (r *bodyReader) str(dst *string) bool {
	t := r.token()
	if len(t) < 2 || t[0] != '"' {
		return false
	}
	in := t[1 : len(t)-1]
	if bytes.IndexByte(in, '\\') < 0 && utf8.Valid(in) {
		start := r.i - len(t) + 1
		*dst = r.s[start : start+len(in)]
		return true
	}
	return json.Unmarshal(t, dst) == nil
}

func (r *bodyReader) time(dst *time.Time) bool {
	t := r.token()
	return len(t) > 0 && t[0] == '"' && dst.UnmarshalJSON(t) == nil
}

func (r *bodyReader) int(dst *int64) bool {
	n, err := strconv.ParseInt(string(r.token()), 10, 64)
	*dst = n
	return err == nil
}

func (r *bodyReader) intInt(dst *int) bool {
	n, err := strconv.ParseInt(string(r.token()), 10, strconv.IntSize)
	*dst = int(n)
	return err == nil
}

func (r *bodyReader) uint(dst *uint64) bool {
	n, err := strconv.ParseUint(string(r.token()), 10, 64)
	*dst = n
	return err == nil
}

func (r *bodyReader) raw(dst *json.RawMessage) bool {
	end := jsonscan.ValueEnd(r.b, r.i)
	if end <= r.i {
		return false
	}
	*dst = r.b[r.i:end:end]
	r.i = end
	return true
}

// Head returns the highest offset ever assigned, 0 if none. Offsets are
// never reused, so Head does not go down when events are pruned.
func (db *DB) Head() (uint64, error) {
	var head uint64
	err := db.view(func(tx *bolt.Tx) error {
		head = tx.Bucket(bucketEvents).Sequence()
		return nil
	})
	return head, db.wrap("head", err)
}

// First returns the lowest offset still stored, 0 if the outbox is empty.
func (db *DB) First() (uint64, error) {
	var first uint64
	err := db.view(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketEvents).Cursor().First(); k != nil {
			first = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return first, db.wrap("first", err)
}

// Read returns the stored events with offset >= from, in offset order, at
// most limit of them (DefaultLimit if limit <= 0). Pruned offsets are
// skipped. Events have Offset, Body (the exact stored JSON) and StoredAt set.
// It holds a read transaction and does not block writers.
func (db *DB) Read(ctx context.Context, from uint64, limit int) ([]diff.Event, error) {
	return db.Events(ctx, EventQuery{From: from, Limit: limit})
}

// EventQuery selects events for Events. Zero fields do not filter.
type EventQuery struct {
	From   uint64 // lowest offset
	Limit  int    // most events returned; DefaultLimit if <= 0
	Type   string // event type, e.g. diff.TypeTaskAssigned
	TaskID int64
}

// Events returns the stored events matching q, in offset order. Filtering
// reads only the value headers, so a narrow filter over a large outbox stays
// cheap. It returns ctx.Err() if ctx ends during the scan.
func (db *DB) Events(ctx context.Context, q EventQuery) ([]diff.Event, error) {
	if q.Limit <= 0 {
		q.Limit = DefaultLimit
	}
	var out []diff.Event
	read := 0
	defer func() { db.touch(read) }()
	err := db.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		// Room for every event up to the head (or the limit): one
		// allocation for a sink's read.
		if head := b.Sequence(); head >= q.From && q.Type == "" && q.TaskID == 0 {
			out = make([]diff.Event, 0, min(uint64(q.Limit), head-max(q.From, 1)+1))
		}
		c := b.Cursor()
		n := 0
		for k, v := c.Seek(u64(q.From)); k != nil && len(out) < q.Limit; k, v = c.Next() {
			if n++; n%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			off := binary.BigEndian.Uint64(k)
			read += len(v)
			if q.Type != "" || q.TaskID != 0 {
				h, err := decodeHeader(v)
				if err != nil {
					return corrupt(db.path, fmt.Errorf("event %d: %w", off, err))
				}
				if q.Type != "" && string(h.typ) != q.Type || q.TaskID != 0 && h.taskID != q.TaskID {
					continue
				}
			}
			out = append(out, diff.Event{})
			if err := decodeEventInto(&out[len(out)-1], off, v); err != nil {
				return corrupt(db.path, err)
			}
		}
		return ctx.Err()
	})
	return out, db.wrap("events", err)
}

// Event returns the event at offset off, or an error wrapping ErrNotFound.
func (db *DB) Event(off uint64) (diff.Event, error) {
	var ev diff.Event
	err := db.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketEvents).Get(u64(off))
		if v == nil {
			return fmt.Errorf("event %d: %w", off, ErrNotFound)
		}
		var err error
		if ev, err = decodeEvent(off, v); err != nil {
			return corrupt(db.path, err)
		}
		return nil
	})
	return ev, db.wrap("event", err)
}

// OffsetSince returns the lowest stored offset committed at or after t, or
// Head+1 if there is none. It binary-searches the commit times, which
// follow offset order.
func (db *DB) OffsetSince(t time.Time) (uint64, error) {
	var off uint64
	want := t.UnixNano()
	err := db.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		head := b.Sequence()
		c := b.Cursor()
		k, _ := c.First()
		if k == nil {
			off = head + 1
			return nil
		}
		// Invariant: every stored offset < lo was committed before t, and
		// the first stored offset >= hi (if any) at or after it.
		lo, hi := binary.BigEndian.Uint64(k), head+1
		for lo < hi {
			mid := lo + (hi-lo)/2
			k, v := c.Seek(u64(mid))
			if k == nil {
				hi = mid
				continue
			}
			h, err := decodeHeader(v)
			if err != nil {
				return corrupt(db.path, fmt.Errorf("event %d: %w", binary.BigEndian.Uint64(k), err))
			}
			if h.storedAt >= want {
				hi = mid
			} else {
				lo = binary.BigEndian.Uint64(k) + 1
			}
		}
		off = head + 1
		if k, _ := c.Seek(u64(lo)); k != nil {
			off = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return off, db.wrap("offset since", err)
}

// addEventCount adds d to the stored number of events.
func addEventCount(tx *bolt.Tx, d int64) error {
	meta := tx.Bucket(bucketMeta)
	var n int64
	if v := meta.Get(keyEventCount); len(v) == 8 {
		n = int64(binary.BigEndian.Uint64(v))
	}
	return meta.Put(keyEventCount, u64(uint64(max(n+d, 0))))
}

// wrap prefixes err with the operation. Corruption errors, which already
// name the file and the way out, pass unchanged; sentinels stay matchable.
func (db *DB) wrap(op string, err error) error {
	var ce *corruptError
	if err == nil || errors.As(err, &ce) {
		return err
	}
	return fmt.Errorf("store: %s: %w", op, err)
}
