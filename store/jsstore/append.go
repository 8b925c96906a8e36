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
// commit's stream sequence. The last message is the commit. It waits for
// the commit's answer at most commitWait, and not at all once the
// connection drops: a batch sent to a node that died gets no answer.
func (s *Store) publishBatch(ctx context.Context, lead *leadership, msgs []outMsg) (uint64, error) {
	if len(msgs) == 0 || len(msgs) > MaxBatch {
		return 0, fmt.Errorf("batch of %d messages", len(msgs))
	}
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
	id := nuid.Next()
	epochSeq := strconv.FormatUint(lead.epochSeq, 10)
	for i, m := range msgs {
		nm := &nats.Msg{Subject: m.subj, Header: m.hdr, Data: m.data}
		if nm.Header == nil {
			nm.Header = nats.Header{}
		}
		nm.Header.Set(hdrBatchID, id)
		nm.Header.Set(hdrBatchSeq, strconv.Itoa(i+1))
		if nm.Header.Get(hdrExpSubjSeq) == "" {
			nm.Header.Set(hdrExpSubjSeq, epochSeq)
			nm.Header.Set(hdrExpSubjSeqFor, s.subj+"epoch")
		}
		if i < len(msgs)-1 {
			if err := s.nc.PublishMsg(nm); err != nil {
				return 0, fmt.Errorf("%w: %w", errNoAck, err) // nothing committed: safe to send again
			}
			continue
		}
		nm.Header.Set(hdrBatchCommit, "1")
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
	panic("unreachable")
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
}

func (s *Store) newBatcher(lead *leadership) *batcher {
	s.v.mu.RLock()
	head, headSeq := s.v.head, s.v.headSeq
	var last int64
	if n := len(s.v.events); n > 0 {
		last = s.v.events[n-1].at
	}
	s.v.mu.RUnlock()
	// Keep commit times in offset order even if the clock steps back.
	return &batcher{s: s, lead: lead, at: max(s.o.Now().UnixNano(), last), head: head, committed: head, headSeq: headSeq, subjs: map[string]bool{}}
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
	cur := map[int]int{} // partition -> index in out of its open message
	for i := range evs {
		e := &evs[i]
		j, ok := cur[e.part]
		if !ok || len(out[j].data)+frameLen(e) > maxEventMsg {
			j = len(out)
			out = append(out, outMsg{subj: b.s.subj + "ev." + strconv.Itoa(e.part), hdr: nats.Header{}})
			cur[e.part] = j
		}
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
	return outMsg{subj: b.s.subj + kind + "." + strconv.FormatInt(taskID, 10), hdr: h, data: bytes.Clone(data)}
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
// waits until the tail read it.
func (b *batcher) flush(ctx context.Context) error {
	if len(b.msgs)+len(b.evs) == 0 {
		return nil
	}
	h := nats.Header{}
	h.Set(hdrRollup, "sub")
	// The head message expects the last head this leader read: a commit it
	// did not see (one whose reply was lost) makes the next one fail
	// rather than reuse offsets.
	h.Set(hdrExpSubjSeq, strconv.FormatUint(b.headSeq, 10))
	head := b.committed
	for _, e := range b.evs {
		head = max(head, e.off)
	}
	msgs := append(b.msgs, b.packEvents(b.evs)...)
	msgs = append(msgs, outMsg{subj: b.s.subj + "head", hdr: h, data: []byte(strconv.FormatUint(head, 10))})
	b.msgs, b.evs, b.count, b.subjs = nil, nil, 0, map[string]bool{}
	pending := b.pending
	b.pending = nil
	seq, err := b.commit(ctx, msgs, head)
	if err != nil {
		return err
	}
	b.headSeq, b.committed = seq, head
	// An atomic batch is stored at consecutive sequences ending at the
	// commit's.
	if !b.s.v.applyOwn(b.s.subj, msgs, seq-uint64(len(msgs))+1) {
		wctx, cancel := context.WithTimeout(ctx, b.s.commitWait())
		defer cancel()
		if err := b.s.v.waitApplied(wctx, seq); err != nil {
			return err
		}
	}
	for _, fn := range pending {
		fn()
	}
	return nil
}

// commit publishes msgs, a batch ending with the head message for head,
// and returns the stream sequence of its commit. A commit that got no
// answer (its node died, the connection dropped) is sent again while this
// replica leads, at most commitAttempts times. Sending it again is safe:
// every attempt expects the same last head message, so the server stores
// at most one of them; when a later attempt is refused because the head
// moved, and the head the tail then reads is this batch's (only this
// leader writes heads under its epoch), an earlier attempt was stored and
// its answer lost: that is a success, not a duplicate.
func (b *batcher) commit(ctx context.Context, msgs []outMsg, head uint64) (uint64, error) {
	for attempt := 1; ; attempt++ {
		seq, err := b.s.publishBatch(ctx, b.lead, msgs)
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

// waitConnected waits until the connection is up again, at most d.
func (s *Store) waitConnected(ctx context.Context, d time.Duration) {
	deadline := time.Now().Add(d)
	for !s.nc.IsConnected() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
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

// beginAppend takes the append lock if this replica leads; unlock
// releases it.
func (s *Store) beginAppend(ctx context.Context, op string) (lead *leadership, unlock func(), err error) {
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
	lead, unlock, err := s.beginAppend(ctx, "ingest")
	if err != nil {
		return res, err
	}
	defer unlock()
	prepared, res, perr := store.PrepareIngest(tasks, loc, emit, boundary, s.v.seenRecord)
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
	if err := b.flush(ctx); err != nil {
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
