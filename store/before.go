package store

// The rest of a version-2 seen record: what the relay last saw of a task
// (diff.Before) for the changes that leave no log, encoded compactly.

import (
	"encoding/binary"
	"time"

	"github.com/incs-relay/incs-relay/diff"
)

// appendBefore appends the encoding of b (Known is implied):
//
//	values     for each of diff.Fields: uvarint len<<1 | cut, bytes
//	upd        varint At, uvarint N (the last task.updated id)
//	logs       uvarint count, then per log by id:
//	           varint id (the first; then uvarint delta >= 1),
//	           uvarint len(comment)<<3 | cut<<2 | hasUpd<<1 | atRaw,
//	           updated_at: atRaw ? uvarint len + bytes
//	                       : varint seconds (as UTC wall time) minus the
//	                         previous log's,
//	           comment bytes, and with hasUpd varint At, uvarint N.
func appendBefore(dst []byte, b *diff.Before) []byte {
	for i := range diff.NumFields {
		dst = binary.AppendUvarint(dst, uint64(len(b.Values[i]))<<1|bit(b.Cut[i]))
		dst = append(dst, b.Values[i]...)
	}
	dst = binary.AppendVarint(dst, b.Upd.At)
	dst = binary.AppendUvarint(dst, uint64(b.Upd.N))
	dst = binary.AppendUvarint(dst, uint64(len(b.Logs)))
	var prevID, prevAt int64
	for i, l := range b.Logs {
		if i == 0 {
			dst = binary.AppendVarint(dst, l.ID)
		} else {
			dst = binary.AppendUvarint(dst, uint64(l.ID)-uint64(prevID))
		}
		prevID = l.ID
		at, ok := wallSeconds(l.UpdatedAt)
		hdr := uint64(len(l.Comment))<<3 | bit(l.Cut)<<2 | bit(l.Upd != (diff.IDCounter{}))<<1 | bit(!ok)
		dst = binary.AppendUvarint(dst, hdr)
		if ok {
			dst = binary.AppendVarint(dst, at-prevAt)
			prevAt = at
		} else {
			dst = binary.AppendUvarint(dst, uint64(len(l.UpdatedAt)))
			dst = append(dst, l.UpdatedAt...)
		}
		dst = append(dst, l.Comment...)
		if l.Upd != (diff.IDCounter{}) {
			dst = binary.AppendVarint(dst, l.Upd.At)
			dst = binary.AppendUvarint(dst, uint64(l.Upd.N))
		}
	}
	return dst
}

// decodeBefore decodes what appendBefore wrote. The task's updated_at is
// in the record's first part: the caller sets it.
func decodeBefore(b []byte) (diff.Before, error) {
	out := diff.Before{Known: true}
	r := byteReader{b: b}
	for i := range diff.NumFields {
		h := r.uvarint()
		out.Values[i], out.Cut[i] = r.str(h>>1), h&1 == 1
	}
	out.Upd.At, out.Upd.N = r.varint(), int(r.uvarint())
	n := r.uvarint()
	if r.bad || n > uint64(len(r.b)) {
		return diff.Before{}, errBadRecord
	}
	out.Logs = make([]diff.LogBefore, 0, n)
	var prevID, prevAt int64
	for i := range n {
		var l diff.LogBefore
		if i == 0 {
			l.ID = r.varint()
		} else {
			d := r.uvarint()
			if d == 0 {
				r.bad = true
			}
			l.ID = int64(uint64(prevID) + d)
		}
		prevID = l.ID
		h := r.uvarint()
		if h&1 == 1 {
			l.UpdatedAt = r.str(r.uvarint())
		} else {
			prevAt += r.varint()
			l.UpdatedAt = time.Unix(prevAt, 0).UTC().Format(diff.TimeLayout)
		}
		l.Comment, l.Cut = r.str(h>>3), h&4 != 0
		if h&2 != 0 {
			l.Upd.At, l.Upd.N = r.varint(), int(r.uvarint())
		}
		if r.bad {
			return diff.Before{}, errBadRecord
		}
		out.Logs = append(out.Logs, l)
	}
	if r.bad || len(r.b) != 0 {
		return diff.Before{}, errBadRecord
	}
	return out, nil
}

// wallSeconds returns an API time's wall clock as Unix seconds read in
// UTC, when formatting them back gives s exactly.
func wallSeconds(s string) (int64, bool) {
	t, err := time.Parse(diff.TimeLayout, s)
	if err != nil || t.Format(diff.TimeLayout) != s {
		return 0, false
	}
	return t.Unix(), true
}

func bit(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// byteReader reads varints and strings, setting bad on the first short
// or malformed read (every later read then returns zero values).
type byteReader struct {
	b   []byte
	bad bool
}

func (r *byteReader) uvarint() uint64 {
	if r.bad {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *byteReader) varint() int64 {
	if r.bad {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *byteReader) str(n uint64) string {
	if r.bad || n > uint64(len(r.b)) {
		r.bad = true
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}
