// The framing of events packed in one event message: appendFrame writes
// an event's offset, task, commit time, type and body; parseFrames reads
// them back.

package jsstore

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
)

// An event message ("$INCS.<Name>.ev.<partition>") packs events of one
// partition committed in one batch, in offset order, so a page costs a
// message per partition rather than one per event. Each event is a line
// "<offset> <task> <commit time, unix ns> <type, Go-quoted>" followed by
// its JSON body on one line: JSON as the outbox stores it has no raw
// newline.

// maxEventMsg bounds the body of an event message, well under the
// server's default max_payload of 1 MiB.
const maxEventMsg = 256 << 10

// evOut is one event to append.
type evOut struct {
	part int
	off  uint64
	task int64
	at   int64
	typ  string
	body []byte
}

var errBadFrame = errors.New("bad event message")

// appendFrame appends e's frame to dst.
func appendFrame(dst []byte, e *evOut) []byte {
	dst = strconv.AppendUint(dst, e.off, 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, e.task, 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, e.at, 10)
	dst = append(dst, ' ')
	dst = strconv.AppendQuote(dst, e.typ)
	dst = append(dst, '\n')
	dst = append(dst, e.body...)
	return append(dst, '\n')
}

// frameLen is the size of e's frame.
func frameLen(e *evOut) int { return 3*20 + len(e.typ)*2 + 6 + len(e.body) }

// parseFrames calls fn with every event of an event message. body is a
// slice of data with its capacity cut to its length.
func parseFrames(data []byte, fn func(off uint64, task, at int64, typ string, body []byte)) error {
	for len(data) > 0 {
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			return errBadFrame
		}
		line := string(data[:nl])
		data = data[nl+1:]
		offS, rest, ok1 := strings.Cut(line, " ")
		taskS, rest, ok2 := strings.Cut(rest, " ")
		atS, typQ, ok3 := strings.Cut(rest, " ")
		off, err1 := strconv.ParseUint(offS, 10, 64)
		task, err2 := strconv.ParseInt(taskS, 10, 64)
		at, err3 := strconv.ParseInt(atS, 10, 64)
		typ, err4 := strconv.Unquote(typQ)
		if !ok1 || !ok2 || !ok3 || err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			return errBadFrame
		}
		nl = bytes.IndexByte(data, '\n')
		if nl < 0 {
			return errBadFrame
		}
		fn(off, task, at, typ, data[:nl:nl])
		data = data[nl+1:]
	}
	return nil
}
