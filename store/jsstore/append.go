package jsstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store"
)

// Headers of the atomic batch publish and of the server's expectations.
// nats.go has no batch API yet; the protocol is these headers on plain
// publishes (the commit message is a request and gets the PubAck).
const (
	hdrBatchID       = "Nats-Batch-Id"
	hdrBatchSeq      = "Nats-Batch-Sequence"
	hdrBatchCommit   = "Nats-Batch-Commit"
	hdrExpSubjSeq    = "Nats-Expected-Last-Subject-Sequence"
	hdrExpSubjSeqFor = "Nats-Expected-Last-Subject-Sequence-Subject"
	hdrRollup        = "Nats-Rollup"
)

// commitWait bounds the wait for a batch's PubAck, and then for the tail
// to read the batch: half a lease, so a commit lost with a dying node
// fails, and is sent again, well within the lease (before: a fixed 10s,
// longer than a 2s lease, so storing paused 9-10s when a node died under
// a commit). A lost connection fails the commit at once (publishBatch).
func (s *Store) commitWait() time.Duration { return s.o.Lease / 2 }

// commitAttempts bounds how often flush sends one batch again after a
// commit failed without an answer (timeout, lost connection); every
// attempt also needs the lease still held.
const commitAttempts = 5

// dropAck, when set (tests), discards the PubAck of a commit the server
// stored, as a connection lost at that moment would.
var dropAck func() bool

// leadership is what a replica holding the lease appends with.
type leadership struct {
	epoch    uint64
	epochSeq uint64    // stream sequence of this leader's epoch record: every append expects it
	leaseRev uint64    // revision of the lease key as last written
	until    time.Time // the lease is surely held until then (local clock)
}

// outMsg is one message of a batch.
type outMsg struct {
	subj string
	hdr  nats.Header
	data []byte
	seen bool  // a seen record, of task: an Ingest under way stages it (Store.staged)
	task int64 // the task of a rolled-up message
}

// pubAck is the server's answer to a batch's commit.
type pubAck struct {
	Error  *jetstream.APIError `json:"error,omitempty"`
	Stream string              `json:"stream"`
	Seq    uint64              `json:"seq"`
	Batch  string              `json:"batch,omitempty"`
	Count  int                 `json:"count,omitempty"`
}

// leading returns this replica's leadership, nil if it does not surely
// hold the lease now.
func (s *Store) leading() *leadership {
	s.leadMu.Lock()
	defer s.leadMu.Unlock()
	if s.lead == nil || !s.o.Now().Before(s.lead.until) {
		return nil
	}
	l := *s.lead
	return &l
}

// IsLeader reports whether this replica holds the lease now: only then do
// appends succeed.
func (s *Store) IsLeader() bool { return s.leading() != nil }

// publishBatch stores msgs as one atomic batch, each message expecting
// lead's epoch record as the last on the epoch subject, and returns the
// commit's stream sequence. The last message is the commit.
func (s *Store) publishBatch(ctx context.Context, lead *leadership, msgs []outMsg) (uint64, error) {
	if len(msgs) == 0 || len(msgs) > MaxBatch {
		return 0, fmt.Errorf("batch of %d messages", len(msgs))
	}
	id := nuid.Next()
	if err := s.sendBody(lead, id, msgs[:len(msgs)-1]); err != nil {
		return 0, err
	}
	return s.sendCommit(ctx, lead, id, len(msgs), msgs[len(msgs)-1])
}

// batchMsg is m as message i (from 0) of batch id.
func (s *Store) batchMsg(lead *leadership, id string, i int, m outMsg) *nats.Msg {
	nm := &nats.Msg{Subject: m.subj, Header: m.hdr, Data: m.data}
	if nm.Header == nil {
		nm.Header = nats.Header{}
	}
	nm.Header[hdrBatchID] = []string{id}
	nm.Header[hdrBatchSeq] = []string{strconv.Itoa(i + 1)}
	if _, ok := nm.Header[hdrExpSubjSeq]; !ok {
		nm.Header[hdrExpSubjSeq] = []string{strconv.FormatUint(lead.epochSeq, 10)}
		nm.Header[hdrExpSubjSeqFor] = []string{s.subj + "epoch"}
	}
	return nm
}

// sendBody publishes the messages of batch id before its commit: the
// server keeps them apart until the commit arrives, and drops them if it
// never does.
func (s *Store) sendBody(lead *leadership, id string, msgs []outMsg) error {
	for i, m := range msgs {
		if err := s.nc.PublishMsg(s.batchMsg(lead, id, i, m)); err != nil {
			return fmt.Errorf("%w: %w", errNoAck, err) // nothing committed: safe to send again
		}
	}
	return nil
}

// sendCommit sends last as message n, the commit, of batch id and
// returns the commit's stream sequence. It waits for the answer at most
// commitWait, and not at all once the connection drops: a batch sent to
// a node that died gets no answer.
func (s *Store) sendCommit(ctx context.Context, lead *leadership, id string, n int, last outMsg) (uint64, error) {
	cctx, cancel := context.WithTimeout(ctx, s.commitWait())
	defer cancel()
	status := s.nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	defer s.nc.RemoveStatusListener(status)
	go func() {
		select {
		case <-status:
			cancel()
		case <-cctx.Done():
		}
	}()
	nm := s.batchMsg(lead, id, n-1, last)
	nm.Header[hdrBatchCommit] = []string{"1"}
	resp, err := s.nc.RequestMsgWithContext(cctx, nm)
	if err == nil && dropAck != nil && dropAck() {
		err = errNoAck
	}
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, errNoAck) {
			// Timed out, cut by a lost connection, or refused by the
			// client: the batch may be stored or not.
			err = fmt.Errorf("%w: %w", errNoAck, err)
		}
		return 0, fmt.Errorf("batch commit: %w", err)
	}
	var ack pubAck
	if err := json.Unmarshal(resp.Data, &ack); err != nil {
		return 0, fmt.Errorf("batch commit: bad reply %q: %w", resp.Data, err)
	}
	if ack.Error != nil {
		return 0, ack.Error
	}
	return ack.Seq, nil
}

// errNoAck is a commit that got no answer: the server may have stored it
// or not.
var errNoAck = errors.New("the batch got no answer (timeout or connection lost)")

// isWrongLastSeq reports whether err is the server refusing an expected
// last sequence: 10071, or 10164 on replicated streams.
func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

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

// pipeBatch is an Ingest's batch whose commit is under way while the
// next Ingest prepares its own (Store.inflight): that one takes its
// offsets on from head, diffs against its seen records (Store.staged),
// sends its messages, and sends its commit once this one committed,
// expecting seq, the sequence of this one's head message.
type pipeBatch struct {
	done chan struct{} // closed when committed or failed
	head uint64        // the head once committed
	at   int64         // its events' commit time
	seq  uint64        // stream sequence of its head message (after done)
	err  error         // why it failed (after done)
}

func (p *pipeBatch) finished() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stagedSeen is a seen record in a batch not yet committed.
type stagedSeen struct {
	rec []byte
	by  *pipeBatch
}

// seenFor returns a task's seen record as the next batch must see it:
// from a batch under way, else from the view.
func (s *Store) seenFor(taskID int64) []byte {
	s.stagedMu.Lock()
	st, ok := s.staged[taskID]
	s.stagedMu.Unlock()
	if ok {
		return st.rec
	}
	return s.v.seenRecord(taskID)
}

// awaitPrev waits until the batch this one follows committed, and takes
// the sequence of its head message as the head to expect. If it failed,
// this batch, built on its offsets and seen records, fails too.
func (b *batcher) awaitPrev(ctx context.Context) error {
	p := b.prev
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return fmt.Errorf("jsstore: append: %w", ctx.Err())
	}
	if p.err != nil {
		return fmt.Errorf("jsstore: append: the batch before this one failed, so this one is not sent: %w", p.err)
	}
	b.prev, b.headSeq = nil, p.seq
	return nil
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

// flushPipelined is an Ingest's last flush. Under the append lock it
// sends the batch's messages but its commit, stages its seen records and
// makes it the batch under way; then it releases the lock (unlock), so
// the next Ingest prepares and sends its batch meanwhile, and commits
// once the batch before it committed.
func (b *batcher) flushPipelined(ctx context.Context, unlock func()) error {
	if len(b.msgs)+len(b.evs) == 0 {
		unlock()
		return nil
	}
	s := b.s
	msgs, head, pending := b.take()
	p := &pipeBatch{done: make(chan struct{}), head: head, at: b.at}
	id := nuid.Next()
	if err := s.sendBody(b.lead, id, msgs[:len(msgs)-1]); err != nil {
		id = "" // commit sends the whole batch again
	}
	s.stagedMu.Lock()
	for _, m := range msgs {
		if m.seen {
			s.staged[m.task] = stagedSeen{rec: m.data, by: p}
		}
	}
	s.stagedMu.Unlock()
	s.inflight = p
	unlock()

	err := b.awaitPrev(ctx)
	if err == nil {
		p.seq, err = b.commitApply(ctx, msgs, head, id, pending)
	}
	p.err = err
	s.stagedMu.Lock()
	for id, st := range s.staged {
		if st.by == p {
			delete(s.staged, id)
		}
	}
	s.stagedMu.Unlock()
	close(p.done)
	return err
}

// drain waits (append lock held) until the batch under way, if any,
// committed or failed.
func (s *Store) drain() {
	if p := s.inflight; p != nil {
		<-p.done
		s.inflight = nil
	}
}

// commit publishes msgs, a batch ending with the head message for head
// (or, when sent is not "", only its commit: the rest went as batch
// sent), and returns the stream sequence of its commit. A commit that got no
// answer (its node died, the connection dropped) is sent again while this
// replica leads, at most commitAttempts times. Sending it again is safe:
// every attempt expects the same last head message, so the server stores
// at most one of them; when a later attempt is refused because the head
// moved, and the head the tail then reads is this batch's (only this
// leader writes heads under its epoch), an earlier attempt was stored and
// its answer lost: that is a success, not a duplicate.
func (b *batcher) commit(ctx context.Context, msgs []outMsg, head uint64, sent string) (uint64, error) {
	for attempt := 1; ; attempt++ {
		var seq uint64
		var err error
		if attempt == 1 && sent != "" {
			seq, err = b.s.sendCommit(ctx, b.lead, sent, len(msgs), msgs[len(msgs)-1])
		} else {
			seq, err = b.s.publishBatch(ctx, b.lead, msgs)
		}
		if err == nil {
			return seq, nil
		}
		if attempt > 1 && isWrongLastSeq(err) {
			if seq, ok := b.s.storedEarlier(ctx, b.lead, b.headSeq, head); ok {
				return seq, nil
			}
		}
		if !errors.Is(err, errNoAck) || attempt >= commitAttempts || ctx.Err() != nil || b.s.leading() == nil {
			return 0, b.s.appendFailed(ctx, b.lead, err)
		}
		if attempt == 1 {
			b.s.log.Warn().Err(err).Msg("jsstore: append: sending the batch again")
		}
		b.s.waitConnected(ctx, b.s.commitWait())
	}
}

// storedEarlier reports whether the stream's last head message is head
// written after headSeq while lead's epoch record is the last: the batch
// was stored by an earlier attempt whose answer was lost (only this
// leader writes heads under its epoch). It returns that message's
// sequence, the batch's commit.
func (s *Store) storedEarlier(ctx context.Context, lead *leadership, headSeq, head uint64) (uint64, bool) {
	ctx, cancel := context.WithTimeout(ctx, s.commitWait())
	defer cancel()
	m, err := s.stream.GetLastMsgForSubject(ctx, s.subj+"head")
	if err != nil || m.Sequence <= headSeq || string(m.Data) != strconv.FormatUint(head, 10) {
		return 0, false
	}
	e, err := s.stream.GetLastMsgForSubject(ctx, s.subj+"epoch")
	if err != nil || e.Sequence != lead.epochSeq {
		return 0, false
	}
	return m.Sequence, true
}

// waitConnected waits until the connection is up again (or closed), at
// most d.
func (s *Store) waitConnected(ctx context.Context, d time.Duration) {
	up := s.nc.StatusChanged(nats.CONNECTED, nats.CLOSED)
	defer s.nc.RemoveStatusListener(up)
	if s.nc.IsConnected() || s.nc.IsClosed() {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-up:
	case <-t.C:
	case <-ctx.Done():
	}
}

// appendFailed turns a refused batch into ErrFenced when a newer epoch
// record exists (and steps down), or into a retryable error when only the
// head moved.
func (s *Store) appendFailed(ctx context.Context, lead *leadership, err error) error {
	if !isWrongLastSeq(err) {
		return fmt.Errorf("jsstore: append: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.commitWait())
	defer cancel()
	m, gerr := s.stream.GetLastMsgForSubject(ctx, s.subj+"epoch")
	if gerr == nil && m.Sequence != lead.epochSeq {
		s.stepDown("fenced: a newer epoch record exists")
		return fmt.Errorf("jsstore: append: %w (%v)", ErrFenced, err)
	}
	if gerr != nil {
		return fmt.Errorf("jsstore: append: %w; reading the epoch: %v", err, gerr)
	}
	// The head moved under this leader: catch up and let the caller retry.
	if info, ierr := s.stream.Info(ctx); ierr == nil {
		_ = s.v.waitApplied(ctx, info.State.LastSeq)
	}
	return fmt.Errorf("jsstore: append: the outbox head moved, retry: %w", err)
}

// beginAppend takes the append lock if this replica leads, after the
// batch under way committed; unlock releases it.
func (s *Store) beginAppend(ctx context.Context, op string) (lead *leadership, unlock func(), err error) {
	lead, unlock, err = s.beginAppendPipelined(ctx, op)
	if err == nil {
		s.drain()
	}
	return lead, unlock, err
}

// beginAppendPipelined takes the append lock if this replica leads, while
// a batch may still be under way (Ingest).
func (s *Store) beginAppendPipelined(ctx context.Context, op string) (lead *leadership, unlock func(), err error) {
	if err := s.checkOpen(op); err != nil {
		return nil, nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	s.appendMu.Lock()
	if lead = s.leading(); lead == nil {
		s.appendMu.Unlock()
		return nil, nil, fmt.Errorf("jsstore: %s: %w", op, ErrNotLeader)
	}
	return lead, s.appendMu.Unlock, nil
}

// Ingest appends an event for every unseen log of tasks (none when emit is
// false) and marks them seen: each task's events and seen record in one
// atomic batch, fenced by the leader's epoch. Only the leader ingests;
// others get ErrNotLeader.
func (s *Store) Ingest(ctx context.Context, tasks []diff.Task, loc *time.Location, emit bool) (store.IngestResult, error) {
	return s.ingest(ctx, tasks, loc, emit, time.Time{})
}

// IngestAfter is Ingest with emit set, except that logs created before
// boundary are marked seen without an event.
func (s *Store) IngestAfter(ctx context.Context, tasks []diff.Task, loc *time.Location, boundary time.Time) (store.IngestResult, error) {
	return s.ingest(ctx, tasks, loc, true, boundary)
}

// seenRecord returns a task's seen record from the view.
func (v *view) seenRecord(taskID int64) []byte {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.seen[taskID]
}

func (s *Store) ingest(ctx context.Context, tasks []diff.Task, loc *time.Location, emit bool, boundary time.Time) (store.IngestResult, error) {
	res := store.IngestResult{Tasks: len(tasks)}
	lead, unlock, err := s.beginAppendPipelined(ctx, "ingest")
	if err != nil {
		return res, err
	}
	locked := true
	defer func() {
		if locked {
			unlock()
		}
	}()
	prepared, res, perr := store.PrepareIngest(tasks, loc, emit, boundary, s.seenFor)
	var de *store.DiffError
	if perr != nil && !errors.As(perr, &de) {
		return res, perr
	}
	b := s.newBatcher(lead)
	for _, p := range prepared {
		if err := b.addTask(ctx, p, &res); err != nil {
			return res, err
		}
	}
	locked = false
	if err := b.flushPipelined(ctx, unlock); err != nil {
		return res, err
	}
	return res, perr
}

// addTask adds one prepared task: its events and its seen record in one
// batch. A task with more new logs than a batch holds is split; only its
// last batch carries the seen record, so a crash between its batches
// could repeat the first batches' events under new offsets.
func (b *batcher) addTask(ctx context.Context, p store.Prepared, res *store.IngestResult) error {
	seenMsg := b.rollupMsg("seen", p.TaskID(), p.Record())
	var evs []evOut
	first, last := uint64(0), uint64(0)
	unit := func(evs []evOut, msgs []outMsg, first, last uint64, changed bool) error {
		n := len(evs)
		return b.add(ctx, evs, msgs, func() {
			res.Events += n
			res.Types = countTypes(res.Types, evs)
			if changed {
				res.Changed++
			}
			if first > 0 && res.FirstOffset == 0 {
				res.FirstOffset = first
			}
			if last > 0 {
				res.LastOffset = last
			}
		})
	}
	for i := range p.Len() {
		if len(evs)+2 > MaxBatch-1 {
			// A giant task: commit what fits without its seen record.
			if err := unit(evs, nil, first, last, false); err != nil {
				return err
			}
			if err := b.flush(ctx); err != nil {
				return err
			}
			evs, first = nil, 0
		}
		off := b.next()
		body, typ := p.Event(i, off)
		evs = append(evs, b.event(p.TaskID(), off, typ, body, b.at))
		if first == 0 {
			first = off
		}
		last = off
	}
	return unit(evs, []outMsg{seenMsg}, first, last, true)
}

// ApplyRules writes rule states and appends derived events, each write's
// in one atomic batch. Only the leader applies rules.
func (s *Store) ApplyRules(ctx context.Context, writes []store.RuleWrite) (store.RuleResult, error) {
	var res store.RuleResult
	if len(writes) == 0 {
		return res, nil
	}
	lead, unlock, err := s.beginAppend(ctx, "apply rules")
	if err != nil {
		return res, err
	}
	defer unlock()
	b := s.newBatcher(lead)
	for _, w := range writes {
		task := w.Task
		if len(task) == 0 {
			s.v.mu.RLock()
			task = bytes.Clone(s.v.ruleTasks[w.TaskID])
			s.v.mu.RUnlock()
		}
		if len(task) == 0 {
			task = json.RawMessage(fmt.Sprintf(`{"id":%d}`, w.TaskID))
		}
		var (
			evs         []evOut
			msgs        []outMsg
			first, last uint64
		)
		head := b.head
		for i := range w.Events {
			ev := w.Events[i]
			if len(ev.Type) > 255 {
				return res, fmt.Errorf("jsstore: apply rules: task %d: event %s: type too long", w.TaskID, ev.ID)
			}
			if len(ev.Data.Task) == 0 {
				ev.Data.Task = task
			}
			off := b.next()
			body, err := store.EncodeEvent(&ev, off)
			if err != nil {
				b.head = head
				return res, fmt.Errorf("jsstore: apply rules: task %d: encode %s: %w", w.TaskID, ev.ID, err)
			}
			evs = append(evs, b.event(w.TaskID, off, ev.Type, body, b.at))
			if first == 0 {
				first = off
			}
			last = off
		}
		msgs = append(msgs, b.rollupMsg("rule", w.TaskID, w.Record))
		if w.Record == nil {
			msgs = append(msgs, b.rollupMsg("rtask", w.TaskID, nil))
		} else if len(w.Task) > 0 {
			msgs = append(msgs, b.rollupMsg("rtask", w.TaskID, w.Task))
		}
		n := len(w.Events)
		if err := b.add(ctx, evs, msgs, func() {
			res.Events += n
			res.Types = countTypes(res.Types, evs)
			if first > 0 && res.FirstOffset == 0 {
				res.FirstOffset = first
			}
			if last > 0 {
				res.LastOffset = last
			}
		}); err != nil {
			return res, err
		}
	}
	if err := b.flush(ctx); err != nil {
		return res, err
	}
	return res, nil
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
