// The batcher: gathers whole units (a task's events and seen record, a
// rule write) into atomic batches of at most MaxBatch messages, assigns
// offsets, packs events per partition, adds the head message, commits,
// and puts what committed into this replica's view.

package jsstore

import (
	"bytes"
	"context"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
)

// batcher gathers whole units (a task's events and seen record, a rule
// write) into atomic batches of at most MaxBatch messages, assigning
// offsets on from the head. A batch holds the units' rolled-up messages,
// then their events packed per partition, then the new head.
type batcher struct {
	s    *Store
	lead *leadership
	at   int64 // commit time of every event of this call

	head      uint64 // offsets assigned so far
	committed uint64 // the head as last committed
	headSeq   uint64 // stream sequence of the last head message
	msgs      []outMsg
	evs       []evOut
	count     int             // messages the batch may take: each event counted as one
	subjs     map[string]bool // rolled-up subjects in msgs: one each per batch
	pending   []func()        // result updates once msgs commit
	prev      *pipeBatch      // the batch being committed that this one follows; nil if none
}

func (s *Store) newBatcher(lead *leadership) *batcher {
	s.v.mu.RLock()
	head, headSeq := s.v.head, s.v.headSeq
	var last int64
	if n := len(s.v.events); n > 0 {
		last = s.v.events[n-1].at
	}
	s.v.mu.RUnlock()
	b := &batcher{s: s, lead: lead, head: head, committed: head, headSeq: headSeq, subjs: map[string]bool{}}
	if p := s.inflight; p != nil && !p.finished() {
		// Build on the batch still being committed: its offsets, its
		// head; the head message's sequence is known once it commits.
		b.prev, b.head, b.committed, b.headSeq = p, p.head, p.head, 0
		last = max(last, p.at)
	}
	// Keep commit times in offset order even if the clock steps back.
	b.at = max(s.o.Now().UnixNano(), last)
	return b
}

// next returns the next offset.
func (b *batcher) next() uint64 {
	b.head++
	return b.head
}

// event is one event to append, in its task's partition.
func (b *batcher) event(taskID int64, off uint64, typ string, body []byte, at int64) evOut {
	return evOut{part: b.s.partition(taskID), off: off, task: taskID, at: at, typ: typ, body: body}
}

// packEvents returns evs as event messages: one per partition (more if
// large), each in offset order.
func (b *batcher) packEvents(evs []evOut) []outMsg {
	var out []outMsg
	cur := map[int]int{}  // partition -> index in out of its open message
	size := map[int]int{} // partition -> bytes of its events not yet in a message
	for i := range evs {
		size[evs[i].part] += frameLen(&evs[i])
	}
	for i := range evs {
		e := &evs[i]
		n := frameLen(e)
		j, ok := cur[e.part]
		if !ok || len(out[j].data)+n > maxEventMsg {
			j = len(out)
			// Room for the partition's remaining events, at most a message.
			out = append(out, outMsg{subj: b.s.subj + "ev." + strconv.Itoa(e.part), hdr: nats.Header{}, data: make([]byte, 0, min(size[e.part], maxEventMsg))})
			cur[e.part] = j
		}
		size[e.part] -= n
		out[j].data = appendFrame(out[j].data, e)
	}
	return out
}

// rollupMsg is a message replacing every earlier one of its subject; an
// empty data deletes the value.
func (b *batcher) rollupMsg(kind string, taskID int64, data []byte) outMsg {
	h := nats.Header{}
	h.Set(hdrRollup, "sub")
	// A copy: the view keeps it once committed (applyOwn).
	return outMsg{subj: b.s.subj + kind + "." + strconv.FormatInt(taskID, 10), hdr: h, data: bytes.Clone(data),
		seen: kind == "seen", task: taskID}
}

// add appends a unit's events and rolled-up messages, flushing first if
// they do not fit; done runs once they committed.
func (b *batcher) add(ctx context.Context, evs []evOut, msgs []outMsg, done func()) error {
	n := len(evs) + len(msgs)
	if n+1 > MaxBatch {
		return fmt.Errorf("jsstore: append: %d messages of one task do not fit a batch of %d", n, MaxBatch)
	}
	fits := b.count+n+1 <= MaxBatch
	for _, m := range msgs {
		fits = fits && !b.subjs[m.subj]
	}
	if !fits {
		if err := b.flush(ctx); err != nil {
			return err
		}
	}
	b.evs = append(b.evs, evs...)
	b.msgs = append(b.msgs, msgs...)
	b.count += n
	for _, m := range msgs {
		b.subjs[m.subj] = true
	}
	if done != nil {
		b.pending = append(b.pending, done)
	}
	return nil
}

// flush commits the gathered units with the head as one atomic batch and
// waits until this replica's view holds it.
func (b *batcher) flush(ctx context.Context) error {
	if len(b.msgs)+len(b.evs) == 0 {
		return nil
	}
	if err := b.awaitPrev(ctx); err != nil {
		return err
	}
	msgs, head, pending := b.take()
	_, err := b.commitApply(ctx, msgs, head, "", pending)
	return err
}

// take returns the gathered units with the head message as a batch, the
// head and the result updates, and empties the batcher. The head message
// is the commit; its expected head sequence is set when it is sent.
func (b *batcher) take() (msgs []outMsg, head uint64, pending []func()) {
	head = b.committed
	for _, e := range b.evs {
		head = max(head, e.off)
	}
	msgs = append(b.msgs, b.packEvents(b.evs)...)
	h := nats.Header{hdrRollup: []string{"sub"}}
	msgs = append(msgs, outMsg{subj: b.s.subj + "head", hdr: h, data: []byte(strconv.FormatUint(head, 10))})
	pending = b.pending
	b.msgs, b.evs, b.count, b.subjs, b.pending = nil, nil, 0, map[string]bool{}, nil
	return msgs, head, pending
}

// commitApply commits msgs (sent already as batch sent, but for the
// commit, when sent is not "") expecting b.headSeq as the last head, puts
// them into the view and runs pending. It returns the sequence of the
// head message.
func (b *batcher) commitApply(ctx context.Context, msgs []outMsg, head uint64, sent string, pending []func()) (uint64, error) {
	// The head message expects the last head this leader wrote: a commit
	// it did not see (one whose reply was lost) makes the next one fail
	// rather than reuse offsets.
	msgs[len(msgs)-1].hdr[hdrExpSubjSeq] = []string{strconv.FormatUint(b.headSeq, 10)}
	seq, err := b.commit(ctx, msgs, head, sent)
	if err != nil {
		return 0, err
	}
	b.headSeq, b.committed = seq, head
	// An atomic batch is stored at consecutive sequences ending at the
	// commit's.
	if !b.s.v.applyOwn(b.s.subj, msgs, seq-uint64(len(msgs))+1) {
		wctx, cancel := context.WithTimeout(ctx, b.s.commitWait())
		defer cancel()
		if err := b.s.v.waitApplied(wctx, seq); err != nil {
			return 0, err
		}
	}
	for _, fn := range pending {
		fn()
	}
	return seq, nil
}

// countTypes adds evs to the per-type counts of a result, making the map
// when the first event comes.
func countTypes(types map[string]int, evs []evOut) map[string]int {
	for _, e := range evs {
		if types == nil {
			types = make(map[string]int, 4)
		}
		types[e.typ]++
	}
	return types
}
