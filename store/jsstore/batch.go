// The batcher: gathers whole units (a task's events and seen record, a
// rule write) into atomic batches of at most MaxBatch messages, closing a
// batch only between units, assigns offsets, packs events per partition
// into messages of at most maxEventMsg bytes, adds the head message,
// commits, and puts what committed into this replica's view.

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
// then their events packed per partition, then the new head. It counts
// the messages a unit's events take as packEvents will pack them, not
// one per event, and closes a batch only between units: a unit is stored
// whole or not at all, however many events it has (see add for the
// bound).
type batcher struct {
	s    *Store
	lead *leadership
	at   int64 // commit time of every event of this call

	head      uint64 // offsets assigned so far
	committed uint64 // the head as last committed
	headSeq   uint64 // stream sequence of the last head message
	msgs      []outMsg
	evs       []evOut
	count     int             // messages of the batch: msgs and evs as packEvents packs them
	bytes     int             // the events' frames and the records in the batch (frameLen, an upper bound)
	fill      map[int]msgFill // partition -> its last event message in the batch
	pfill     [2]msgFill      // the batch's last pack of each family (packFamily)
	subjs     map[string]bool // rolled-up subjects in msgs: one each per batch
	pending   []func()        // result updates once msgs commit
	prev      *pipeBatch      // the batch being committed that this one follows; nil if none
}

func (s *Store) newBatcher(lead *leadership) *batcher {
	s.v.mu.RLock()
	head, headSeq, last := s.v.head, s.v.headSeq, s.v.lastAt
	s.v.mu.RUnlock()
	b := &batcher{s: s, lead: lead, head: head, committed: head, headSeq: headSeq, fill: map[int]msgFill{}, subjs: map[string]bool{}}
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

// msgFill is the partition's event message being packed: the sum of its
// events' frameLen (an upper bound of its size) and, in packEvents, its
// index. packEvents packs by it and add counts by it, so the two agree.
type msgFill struct {
	bytes int
	open  bool // a message is open
	i     int  // packEvents: its index in the messages
}

// put adds an event whose frame takes at most n bytes and reports whether
// it starts a message: when none is open or it would pass maxEventMsg.
// An event larger than maxEventMsg gets a message of its own.
func (f *msgFill) put(n int) (started bool) {
	if f.open && f.bytes+n <= maxEventMsg {
		f.bytes += n
		return false
	}
	f.bytes, f.open = n, true
	return true
}

// eventMsgs returns how many event messages evs start when packed after
// fill (partition -> its last message; nil for an empty batch), and the
// partitions' fills after them.
func eventMsgs(fill map[int]msgFill, evs []evOut) (n int, after map[int]msgFill) {
	if len(evs) == 0 {
		return 0, nil
	}
	after = make(map[int]msgFill, 1)
	for i := range evs {
		p := evs[i].part
		f, ok := after[p]
		if !ok {
			f = fill[p]
		}
		if f.put(frameLen(&evs[i])) {
			n++
		}
		after[p] = f
	}
	return n, after
}

// recordMsgs returns how many messages msgs add when records are packed
// after fill (the batch's last pack of each family; packMsgs packs by the
// same rule), and the last packs' fills after them.
func recordMsgs(fill [2]msgFill, msgs []outMsg) (n int, after [2]msgFill) {
	for i := range msgs {
		fam, ok := msgs[i].packFamily()
		if !ok || fill[fam].put(packRecLen(msgs[i].data)) {
			n++
		}
	}
	return n, fill
}

// packEvents returns evs as event messages: one per partition, more where
// its events pass maxEventMsg, each in offset order. The messages'
// entries (which the cache keeps once committed) share their bodies with
// the messages' data, so evs' bodies are free to go once packed: a batch
// in flight holds its events once, not twice.
func (b *batcher) packEvents(evs []evOut) []outMsg {
	var out []outMsg
	fill := map[int]msgFill{} // partition -> its open message
	size := map[int]int{}     // partition -> bytes of its events not yet in a message
	for i := range evs {
		size[evs[i].part] += frameLen(&evs[i])
	}
	type bodyAt struct{ msg, ev, end, n int } // where an entry's body is in its message's data
	at := make([]bodyAt, 0, len(evs))
	for i := range evs {
		e := &evs[i]
		n := frameLen(e)
		f := fill[e.part]
		if f.put(n) {
			f.i = len(out)
			// Room for the partition's remaining events, at most a message.
			out = append(out, outMsg{subj: b.s.subj + "ev." + strconv.Itoa(e.part), hdr: nats.Header{}, data: make([]byte, 0, min(size[e.part], maxEventMsg))})
		}
		fill[e.part] = f
		size[e.part] -= n
		m := &out[f.i]
		m.data = appendFrame(m.data, e)
		m.evs = append(m.evs, entry{off: e.off, task: e.task, at: e.at, typ: e.typ})
		// The frame ends with the body and a newline.
		at = append(at, bodyAt{f.i, len(m.evs) - 1, len(m.data) - 1, len(e.body)})
	}
	// Once every frame is in (data may have grown), the bodies in place.
	for _, a := range at {
		d := out[a.msg].data
		out[a.msg].evs[a.ev].body = d[a.end-a.n : a.end : a.end]
	}
	for i := range out {
		out[i].wire = compressFrames(out[i].data)
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
		kind: kind, task: taskID}
}

// add appends a unit, one task's events and rolled-up messages (its seen
// record, its rule state), flushing the batch first if they do not fit:
// a unit is never split across batches. done runs once it committed.
//
// A unit that does not fit even an empty batch is refused, naming its
// task, rather than stored in parts. Its events are packed in messages of
// at most maxEventMsg (256 KiB) and a batch holds MaxBatch (1,000)
// messages, the head and the unit's records among them, so one task can
// add about 997 x 256 KiB, some 250 MB of events, in one Ingest: about
// 260,000 new logs of a task like the vendor's example, whose events are
// 0.86 KB (TestWholeTaskBatch: 5,000 logs take 19 messages).
func (b *batcher) add(ctx context.Context, evs []evOut, msgs []outMsg, done func()) error {
	ne, fill := eventMsgs(b.fill, evs)
	nm, pfill := recordMsgs(b.pfill, msgs)
	size := unitBytes(evs, msgs)
	fits := b.count+nm+ne+1 <= MaxBatch && (b.bytes == 0 || b.bytes+size <= maxBatchBytes)
	for _, m := range msgs {
		fits = fits && !b.subjs[m.subj]
	}
	if !fits {
		ne, fill = eventMsgs(nil, evs)
		nm, pfill = recordMsgs([2]msgFill{}, msgs)
		if n := nm + ne + 1; n > MaxBatch {
			return fmt.Errorf("jsstore: append: task %d: its %d events and %d records need %d messages with the head, more than the %d of an atomic batch; refused rather than stored in parts",
				unitTask(evs, msgs), len(evs), len(msgs), n, MaxBatch)
		}
		if err := b.flush(ctx); err != nil {
			return err
		}
	}
	b.evs = append(b.evs, evs...)
	b.msgs = append(b.msgs, msgs...)
	b.count += nm + ne
	b.bytes += size
	b.pfill = pfill
	for p, f := range fill {
		b.fill[p] = f
	}
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
	packs, msgs := b.packMsgs(b.msgs)
	msgs = append(append(msgs, packs...), b.packEvents(b.evs)...)
	h := nats.Header{hdrRollup: []string{"sub"}, hdrAt: []string{strconv.FormatInt(b.at, 10)}}
	msgs = append(msgs, outMsg{subj: b.s.subj + "head", hdr: h, data: []byte(strconv.FormatUint(head, 10))})
	pending = b.pending
	b.msgs, b.evs, b.count, b.bytes, b.fill, b.pfill, b.subjs, b.pending = nil, nil, 0, 0, map[int]msgFill{}, [2]msgFill{}, map[string]bool{}, nil
	return msgs, head, pending
}

// maxBatchBytes bounds a batch's bytes, but for a single unit larger than
// it: a page of tasks with long histories (100 tasks × 100 new logs, 20 MB
// of events) commits in several batches, each task whole, so a leader
// holds a few batches' events at a time rather than whole pages. A
// variable for tests.
var maxBatchBytes = 4 << 20

// unitBytes is what a unit adds to a batch's bytes.
func unitBytes(evs []evOut, msgs []outMsg) int {
	n := 0
	for i := range evs {
		n += frameLen(&evs[i])
	}
	for _, m := range msgs {
		n += len(m.data)
	}
	return n
}

// unitTask returns the task of a unit's events and records.
func unitTask(evs []evOut, msgs []outMsg) int64 {
	if len(evs) > 0 {
		return evs[0].task
	}
	if len(msgs) > 0 {
		return msgs[0].task
	}
	return 0
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
	b.s.sweepDead()
	for _, fn := range pending {
		fn()
	}
	if afterBatch != nil {
		afterBatch()
	}
	return seq, nil
}

// afterBatch, when set (tests), runs after each batch committed and was
// put into the view: a crash test cuts the connection there, between an
// Ingest's batches.
var afterBatch func()

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
