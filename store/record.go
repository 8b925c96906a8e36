package store

import (
	"encoding/binary"
	"errors"
	"slices"
)

// seenRecord is the seen-set entry of one task: the log IDs already turned
// into events (or marked seen by a snapshot), plus what Prune and the fast
// path need to know about the task, and (version 2) what the relay last
// saw of it, for the changes that leave no log (diff.Before).
//
// Encoding (recordVersion 1, which version 2 begins with):
//
//	version    byte
//	createdAt  varint   unix seconds of the task's created_at; 0 if unknown
//	updatedAt  uvarint length + bytes, the task's updated_at as sent
//	newest     varint   highest seen log id; 0 if IDs is empty
//	count      uvarint  number of IDs
//	ids        varint first id, then uvarint deltas (each >= 1)
//
// Version 2 goes on with:
//
//	logsAt     uvarint length + bytes, the newest updated_at among the
//	           task's logs as sent (the fast path compares it)
//	flags      uvarint: 1 hot (read within seconds of its last change,
//	           so compared in full on its next read); 2 apart (rest is
//	           left out and kept elsewhere: a jetstream replica's
//	           in-memory copy, see RecordApart)
//	rest       uvarint length + bytes: the values (diff.Before), decoded
//	           only for a task that changed (decodeBefore)
type seenRecord struct {
	CreatedAt int64
	UpdatedAt string
	IDs       []int64 // strictly increasing
	// Version 2; V2 false for a record of version 1 (no values yet).
	V2     bool
	LogsAt string // newest log updated_at
	Hot    bool   // read within seconds of its last change: compare the next read in full
	Apart  bool   // Rest left out (RecordApart): the full record is needed to diff
	Rest   []byte // the encoded diff.Before (appendBefore); aliases the input
}

const (
	recordVersion1 = 1
	recordVersion  = 2
)

var errBadRecord = errors.New("bad seen record")

// newest returns the highest seen log id, or 0.
func (r *seenRecord) newest() int64 {
	if len(r.IDs) == 0 {
		return 0
	}
	return r.IDs[len(r.IDs)-1]
}

// has reports whether id is in the record.
func (r *seenRecord) has(id int64) bool {
	_, ok := slices.BinarySearch(r.IDs, id)
	return ok
}

// appendRecord appends the encoding of r to dst: version 2, or version 1
// when r is not V2 (tests of old stores).
func appendRecord(dst []byte, r *seenRecord) []byte {
	v := byte(recordVersion1)
	if r.V2 {
		v = recordVersion
	}
	dst = append(dst, v)
	dst = binary.AppendVarint(dst, r.CreatedAt)
	dst = binary.AppendUvarint(dst, uint64(len(r.UpdatedAt)))
	dst = append(dst, r.UpdatedAt...)
	dst = binary.AppendVarint(dst, r.newest())
	dst = binary.AppendUvarint(dst, uint64(len(r.IDs)))
	for i, id := range r.IDs {
		if i == 0 {
			dst = binary.AppendVarint(dst, id)
			continue
		}
		dst = binary.AppendUvarint(dst, uint64(id)-uint64(r.IDs[i-1]))
	}
	if !r.V2 {
		return dst
	}
	dst = binary.AppendUvarint(dst, uint64(len(r.LogsAt)))
	dst = append(dst, r.LogsAt...)
	dst = binary.AppendUvarint(dst, bit(r.Hot)|bit(r.Apart)<<1)
	dst = binary.AppendUvarint(dst, uint64(len(r.Rest)))
	return append(dst, r.Rest...)
}

// decodeRecord decodes b into r, reusing r.IDs' storage. It rejects
// anything appendRecord would not produce, except non-minimal varints.
func decodeRecord(b []byte, r *seenRecord) error {
	if len(b) == 0 || (b[0] != recordVersion && b[0] != recordVersion1) {
		return errBadRecord
	}
	r.V2, r.LogsAt, r.Rest, r.Hot, r.Apart = b[0] == recordVersion, "", nil, false, false
	b = b[1:]
	var n int
	if r.CreatedAt, n = binary.Varint(b); n <= 0 {
		return errBadRecord
	}
	b = b[n:]
	l, n := binary.Uvarint(b)
	if n <= 0 || l > uint64(len(b)-n) {
		return errBadRecord
	}
	r.UpdatedAt = string(b[n : n+int(l)])
	b = b[n+int(l):]
	newest, n := binary.Varint(b)
	if n <= 0 {
		return errBadRecord
	}
	b = b[n:]
	count, n := binary.Uvarint(b)
	if n <= 0 || count > uint64(len(b)-n) {
		return errBadRecord
	}
	b = b[n:]
	ids := r.IDs[:0]
	if count > 0 {
		ids = slices.Grow(ids, int(count))
	}
	var prev int64
	for i := uint64(0); i < count; i++ {
		if i == 0 {
			if prev, n = binary.Varint(b); n <= 0 {
				return errBadRecord
			}
		} else {
			d, m := binary.Uvarint(b)
			if m <= 0 || d == 0 {
				return errBadRecord
			}
			next := int64(uint64(prev) + d)
			if next <= prev {
				return errBadRecord
			}
			prev, n = next, m
		}
		b = b[n:]
		ids = append(ids, prev)
	}
	r.IDs = ids
	if newest != r.newest() {
		return errBadRecord
	}
	if r.V2 {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return errBadRecord
		}
		r.LogsAt = string(b[n : n+int(l)])
		b = b[n+int(l):]
		flags, n := binary.Uvarint(b)
		if n <= 0 || flags > 3 {
			return errBadRecord
		}
		r.Hot, r.Apart = flags&1 != 0, flags&2 != 0
		b = b[n:]
		l, n = binary.Uvarint(b)
		if n <= 0 || l != uint64(len(b)-n) {
			return errBadRecord
		}
		r.Rest = b[n:]
		b = b[len(b):]
	}
	if len(b) != 0 {
		return errBadRecord
	}
	return nil
}

// mergeIDs returns the sorted union of two strictly increasing slices as a
// new slice.
func mergeIDs(a, b []int64) []int64 {
	out := make([]int64, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] < b[j]:
			out = append(out, a[i])
			i++
		case a[i] > b[j]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

// RecordApart returns seen record rec without its values (diff.Before),
// marked apart, for a copy that must stay small (a jetstream replica's
// in-memory view, which the values would make grow with every comment):
// the copy still says whether a task changed, and PrepareIngest and
// PrepareDelete refuse it for a task they must diff: the caller fetches
// the whole record (PrepareIngest's whole). A record without values is
// returned as it is, and apart is false.
func RecordApart(rec []byte) (compact []byte, apart bool, err error) {
	var r seenRecord
	if err := decodeRecord(rec, &r); err != nil {
		return nil, false, err
	}
	if !r.V2 || r.Apart || len(r.Rest) == 0 {
		return rec, r.Apart, nil
	}
	size := len(rec) - len(r.Rest)
	r.Rest, r.Apart = nil, true
	return appendRecord(make([]byte, 0, size), &r), true, nil
}

// errApart is a record without its values where they are needed.
var errApart = errors.New("seen record without its values (RecordApart): the full record was not fetched")
