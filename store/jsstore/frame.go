// The framing of events packed in one event message: appendFrame writes
// an event's offset, task, commit time, type and body; parseFrames reads
// them back.

package jsstore

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/s2"
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

// An event message's data is its frames, or, when it starts with
// s2Block, the frames as one S2 block (compressFrames): a frame starts
// with a digit, so the two cannot be mistaken. Events repeat their task's
// JSON and the envelope's keys: a message of them compresses 5 to 8 to
// 1, and the server stages, stores and serves that much less.
const s2Block = 0x01

// compressFrames returns frames as an event message's compressed data.
func compressFrames(frames []byte) []byte {
	scratch := s2Scratch.Get().(*[]byte)
	defer s2Scratch.Put(scratch)
	if n := s2.MaxEncodedLen(len(frames)); cap(*scratch) < n {
		*scratch = make([]byte, n)
	}
	enc := s2.Encode((*scratch)[:cap(*scratch)], frames)
	out := make([]byte, 1+len(enc))
	out[0] = s2Block
	copy(out[1:], enc)
	return out
}

// s2Scratch holds compressFrames' buffers, each of up to a message's
// worst case, so a compressed message takes only its own length.
var s2Scratch = sync.Pool{New: func() any { return new([]byte) }}

// eventFrames returns the frames of an event message's data, decompressed
// if need be.
func eventFrames(data []byte) ([]byte, error) {
	if len(data) == 0 || data[0] != s2Block {
		return data, nil
	}
	frames, err := s2.Decode(nil, data[1:])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadFrame, err)
	}
	return frames, nil
}

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
