// The tail: every replica reads the stream's small records into its
// in-memory view (seen records, rule states, head, epoch, prune floor),
// which the leader diffs against and Notify follows; applyOwn puts the
// leader's own committed batch in at once. Event messages are not tailed:
// reads fetch them from the stream (outbox.go), so memory and start-up do
// not grow with the outbox.

package jsstore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/incs-relay/incs-relay/store"
)

// entry is one event of the outbox as an event message holds it.
type entry struct {
	off  uint64
	task int64
	at   int64 // commit time, unix nanoseconds
	typ  string
	body []byte
}

// epochRec is the body of an epoch record.
type epochRec struct {
	Epoch  uint64    `json:"epoch"`
	Leader string    `json:"leader"`
	At     time.Time `json:"at"`
}

// pruneNote is the body of a "$INCS.<Name>.pruned" message (rolled up):
// every event at or below Floor is pruned, whether or not its message was
// purged yet. Ranges is what versions before the floor wrote: offsets
// deleted one message at a time; a view takes their highest end as the
// floor.
type pruneNote struct {
	Floor  uint64      `json:"floor,omitempty"`
	Ranges [][2]uint64 `json:"ranges,omitempty"`
}

// hdrAt is the head message's header with the batch's commit time (unix
// nanoseconds): a new leader keeps commit times in offset order from it.
const hdrAt = "Incs-At"

// tailSubjects are the stream's subjects every replica tails (after the
// prefix): everything but the events ("ev.<p>") and the dead letters'
// copies ("dl.<off>").
var tailSubjects = []string{"seen.>", "rule.>", "rtask.>", "head", "epoch", "pruned"}

// view is what a replica keeps of the stream, kept by the tail: the
// seen-set, the rule states, the head, the prune floor and the current
// epoch. Its size follows the tasks in poll.lookback, not the outbox. The
// leader diffs against its seen-set: after each commit it waits for the
// tail to read the commit (or applies it itself), so the view is exact
// there.
type view struct {
	mu        sync.RWMutex
	seen      map[int64]seenEnt
	recs      map[uint64]*msgLive // record message's sequence -> the records it holds
	sparse    map[uint64]struct{} // packs holding fewer than half their records
	small     map[uint64]struct{} // record messages written with fewer than smallPack bytes of records
	dead      []uint64            // record messages holding none, for the leader to delete
	rules     map[int64][]byte
	ruleTasks map[int64][]byte
	ruleAt    map[int64]uint64 // sequence of the message holding each rule record
	rtaskAt   map[int64]uint64 // the same of each rule task
	head      uint64
	headSeq   uint64 // stream sequence of the last head message
	lastAt    int64  // commit time of the last batch (its head's Incs-At); 0 if unknown
	floor     uint64 // every event at or below it is pruned
	epoch     epochRec
	epochSeq  uint64 // stream sequence of the current epoch record
	applied   uint64 // stream sequence of the last message read
	caughtUp  bool   // read the whole stream once
	signal    chan struct{}
	wake      func() // wakes Notify subscribers
	errs      TailStatus
	// cache, when set, receives the event messages of this replica's own
	// batches (applyOwn), so its dispatchers need not fetch them.
	cache *msgCache
}

// seenEnt is a task's seen record as the view keeps it: without its
// values (store.RecordApart), which grow with every comment and field the
// task has, so a replica's memory follows the tasks and their log ids
// only; the leader fetches the full record, the message at seq, for a
// task it must diff (fullRecords).
type seenEnt struct {
	seq   uint64 // stream sequence of the record's message
	rec   []byte
	apart bool // rec is without its values: fetch the message to diff
}

// keptSeen returns what the view keeps of a seen record's message data:
// a copy without its values. A record that does not decode is kept whole
// (the leader's diff reports it).
func keptSeen(data []byte) (rec []byte, apart bool) {
	rec, apart, err := store.RecordApart(data)
	if err != nil || !apart {
		// A copy: data shares its buffer with the message's headers.
		return bytes.Clone(data), apart
	}
	return rec, true
}

// TailStatus is what the tail reports of the stream messages it could not
// read (no metadata, or a record that does not parse): it skips each one,
// counts it and logs it at warn with its subject and sequence.
type TailStatus struct {
	// Errors counts the messages skipped since the store opened.
	Errors uint64
	// LastError says which message and why: "<subject> seq <n>: <err>".
	LastError   string
	LastErrorAt time.Time
	// Consecutive counts the errors since the tail last read a message
	// without one: a single bad message sets it to 1, a tail that can
	// read nothing keeps raising it.
	Consecutive int
}

// TailBrokenAfter is how many consecutive errors make the tail broken
// (TailStatus.Broken): one skipped bad message is not.
const TailBrokenAfter = 3

// Broken reports whether the tail has stopped reading: its last
// TailBrokenAfter messages or more all failed.
func (t TailStatus) Broken() bool { return t.Consecutive >= TailBrokenAfter }

// TailErrors returns what the tail could not read.
func (s *Store) TailErrors() TailStatus {
	s.v.mu.RLock()
	defer s.v.mu.RUnlock()
	return s.v.errs
}

// noteErr records a message the tail skipped (v.mu held).
func (v *view) noteErr(subject string, seq uint64, err error) {
	v.errs.Errors++
	v.errs.Consecutive++
	v.errs.LastError = fmt.Sprintf("%s seq %d: %v", subject, seq, err)
	v.errs.LastErrorAt = time.Now()
}

func newView(wake func(), cache *msgCache) *view {
	return &view{
		seen:      map[int64]seenEnt{},
		recs:      map[uint64]*msgLive{},
		sparse:    map[uint64]struct{}{},
		small:     map[uint64]struct{}{},
		rules:     map[int64][]byte{},
		ruleTasks: map[int64][]byte{},
		ruleAt:    map[int64]uint64{},
		rtaskAt:   map[int64]uint64{},
		signal:    make(chan struct{}),
		wake:      wake,
		cache:     cache,
	}
}

// tailConfig is the ordered consumer reading tailSubjects from start (1
// for the whole stream).
func (s *Store) tailConfig(start uint64) jetstream.OrderedConsumerConfig {
	filter := make([]string, 0, len(tailSubjects))
	for _, t := range tailSubjects {
		if t == "seen.>" && s.o.Reader {
			continue
		}
		filter = append(filter, s.subj+t)
	}
	// From the start, the last message of each subject: every record the
	// view keeps is its subject's last (seen, rule and prune records roll
	// up; of the heads and epoch records the view keeps the last). The
	// server then reads them by sequence from its per-subject index,
	// where reading the stream through the filter made it search each
	// block's subjects once per record read: at 1,000,000 events (10,000
	// seen records among the events' messages) the open took 0.6-1.2 s once
	// the events were compressed (more records to a block), 0.45 s before.
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: filter, DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy}
	if start > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
	}
	return cfg
}

// startTail starts the ordered consumer that reads the stream's records
// (not its events) into the view, and waits until it read what the
// stream held at the start.
func (s *Store) startTail(ctx context.Context) error {
	cons, err := s.stream.OrderedConsumer(ctx, s.tailConfig(1))
	if err != nil {
		return fmt.Errorf("jsstore: tail %s: %w", s.name, err)
	}
	pending := cons.CachedInfo().NumPending
	prefix := s.subj
	// The ordered consumer notices a dead server by missed heartbeats,
	// two in a row, and then recreates itself elsewhere. Its default
	// heartbeat (5s) left the tail, and a leader whose commit's ack was
	// lost with the node, stalled for 10s; a quarter lease notices within
	// half a lease. Recreating the consumer may take longer: the client
	// retries 1s, 2s, 4s … 10s apart while the cluster cannot place it
	// (docs/ha.md, one NATS node dies); a leader that needs the view
	// meanwhile reads what it lacks itself (catchUp).
	hb := max(s.o.Lease/4, 500*time.Millisecond)
	// tailMu orders each callback before Close returns: the consumer's
	// Closed does not wait for a callback still running (logging what it
	// skipped, say), so Close takes tailMu once the consumer stopped, and
	// a callback after that does nothing.
	var (
		tailMu   sync.Mutex
		tailDone bool
	)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		tailMu.Lock()
		defer tailMu.Unlock()
		if tailDone || s.stallTail.Load() {
			return
		}
		if subject, seq, err := s.v.apply(prefix, m); err != nil {
			s.log.Warn().Err(err).Str("subject", subject).Uint64("seq", seq).Msg("jsstore: tail skipped a message it cannot read")
		}
	},
		jetstream.PullHeartbeat(hb), jetstream.PullExpiry(max(4*hb, time.Second)),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			s.log.Debug().Err(err).Msg("jsstore: tail")
		}))
	if err != nil {
		return fmt.Errorf("jsstore: tail %s: %w", s.name, err)
	}
	s.wg.Go(func() {
		<-s.ctx.Done()
		cc.Stop()
		<-cc.Closed()
		tailMu.Lock()
		tailDone = true
		tailMu.Unlock()
	})
	if pending == 0 {
		s.v.mu.Lock()
		s.v.caughtUp = true
		s.v.mu.Unlock()
		return nil
	}
	return s.v.wait(ctx, func(v *view) bool { return v.caughtUp })
}

// catchUp reads into the view, with a consumer of its own, the records
// the tail has not read yet up to the stream's last head message: a
// leader whose batch was refused because the head moved (an earlier
// attempt's answer was lost) needs them now, while the tail may be
// waiting to recreate its consumer on another node.
func (s *Store) catchUp(ctx context.Context) error {
	m, err := s.lastMsg(ctx, s.subj+"head")
	if err != nil {
		return fmt.Errorf("reading the head: %w", err)
	}
	return s.catchUpTo(ctx, m.Sequence)
}

// tailGrace is how long waitOrCatchUp leaves the tail to read a message
// before it reads it with a consumer of its own.
const tailGrace = 500 * time.Millisecond

// waitOrCatchUp waits until the view holds the message at stream sequence
// seq: read by the tail, or, when the tail has not within tailGrace (its
// consumer may be waiting to be recreated on another node, for up to 10 s
// after one died), by a catch-up of its own. A replica that won the lease
// and wrote its epoch record used to wait for its tail only, give up and
// release the lease, and win it again, round after round: no replica led
// while its tail was stuck (the chaos test's NATS node death).
func (s *Store) waitOrCatchUp(ctx context.Context, seq uint64) error {
	tctx, cancel := context.WithTimeout(ctx, tailGrace)
	err := s.v.waitApplied(tctx, seq)
	cancel()
	if err == nil || ctx.Err() != nil {
		return err
	}
	s.log.Debug().Uint64("seq", seq).Msg("jsstore: the tail lags; catching up with a consumer of its own")
	return s.catchUpTo(ctx, seq)
}

// catchUpTo reads into the view, with a consumer of its own, what the
// tail has not read yet up to stream sequence seq.
func (s *Store) catchUpTo(ctx context.Context, to uint64) error {
	s.v.mu.RLock()
	from := s.v.applied + 1
	s.v.mu.RUnlock()
	if from > to {
		return nil
	}
	cons, err := s.stream.OrderedConsumer(ctx, s.tailConfig(from))
	if err != nil {
		return fmt.Errorf("reading the stream from %d: %w", from, err)
	}
	for {
		s.v.mu.RLock()
		done := s.v.applied >= to
		s.v.mu.RUnlock()
		if done {
			return nil
		}
		msg, err := cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			return fmt.Errorf("reading the stream from %d: %w", from, err)
		}
		if subject, seq, err := s.v.apply(s.subj, msg); err != nil {
			s.log.Warn().Err(err).Str("subject", subject).Uint64("seq", seq).Msg("jsstore: catch-up skipped a message it cannot read")
		}
	}
}

// wait blocks until cond (called with v locked) holds or ctx ends.
func (v *view) wait(ctx context.Context, cond func(*view) bool) error {
	for {
		v.mu.RLock()
		ok, ch := cond(v), v.signal
		v.mu.RUnlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("jsstore: waiting for the stream: %w", ctx.Err())
		}
	}
}

// waitApplied blocks until the tail read the message at stream sequence
// seq (or a later one).
func (v *view) waitApplied(ctx context.Context, seq uint64) error {
	return v.wait(ctx, func(v *view) bool { return v.applied >= seq })
}

// apply reads one message of the stream into the view. A message it
// cannot read is skipped and counted (TailStatus); its subject, sequence
// (0 without metadata) and error are returned to log.
func (v *view) apply(prefix string, m jetstream.Msg) (subject string, seq uint64, err error) {
	subject = m.Subject()
	md, err := m.Metadata()
	if err != nil {
		err = fmt.Errorf("metadata: %w", err)
		v.mu.Lock()
		v.noteErr(subject, 0, err)
		v.mu.Unlock()
		return subject, 0, err
	}
	seq = md.Sequence.Stream
	var at int64
	if h := m.Headers(); h != nil {
		at, _ = strconv.ParseInt(h.Get(hdrAt), 10, 64)
	}
	v.mu.Lock()
	notify, err := v.applyLocked(prefix, subject, seq, m.Data(), nil, at, md.NumPending == 0)
	v.mu.Unlock()
	if notify && v.wake != nil {
		v.wake()
	}
	return subject, seq, err
}

// applyOwn reads a batch this replica committed, msgs at stream
// sequences first onwards, into the view without waiting for the tail to
// read it back, when the view holds every record before first (else it
// reports false: wait for the tail). The tail skips these messages when it
// reads them. This keeps a leader going when its tail stalls, e.g. while
// its ordered consumer is recreated after a node died. The batch's event
// messages go to the cache.
func (v *view) applyOwn(prefix string, msgs []outMsg, first uint64) bool {
	last := first + uint64(len(msgs)) - 1
	if v.cache != nil {
		v.cache.own(prefix, msgs, first)
	}
	v.mu.Lock()
	if v.applied >= last {
		v.mu.Unlock()
		return true
	}
	if v.applied+1 != first {
		v.mu.Unlock()
		return false
	}
	notify := false
	for i, m := range msgs {
		var at int64
		if m.hdr != nil {
			at, _ = strconv.ParseInt(m.hdr.Get(hdrAt), 10, 64)
		}
		n, _ := v.applyLocked(prefix, m.subj, first+uint64(i), m.data, m.recs, at, false) // counted; its own batch
		notify = n || notify
	}
	v.mu.Unlock()
	if notify && v.wake != nil {
		v.wake()
	}
	return true
}

// applyLocked reads one message into the view (v.mu held) and reports
// whether Notify subscribers should wake. at is a head message's commit
// time; last says the stream holds nothing after it. A record that does
// not parse is skipped (the sequence still counts as read), counted in
// v.errs and returned.
//
// own, when set, is a pack's records as this replica committed them
// (applyOwn), read instead of data.
func (v *view) applyLocked(prefix, subject string, seq uint64, data []byte, own []packRec, at int64, last bool) (notify bool, bad error) {
	subj := strings.TrimPrefix(subject, prefix)
	kind, arg, _ := strings.Cut(subj, ".")
	if seq <= v.applied {
		return false, nil
	}
	switch kind {
	case "seen", "rule", "rtask":
		if kind != "rtask" && isPack(arg) {
			if own != nil {
				for _, r := range own {
					v.setRec(r.kind, r.task, seq, r.rec)
				}
				break
			}
			bad = parsePack(data, func(k byte, task int64, rec []byte) { v.setRec(k, task, seq, rec) })
			if bad != nil {
				bad = fmt.Errorf("%s pack: %w", kind, bad)
			}
			break
		}
		id, err := strconv.ParseInt(arg, 10, 64)
		if err != nil {
			bad = fmt.Errorf("%s record: task id %q: %w", kind, arg, err)
			break
		}
		v.setRec(packKinds[kind], id, seq, data)
	case "head":
		if h, err := strconv.ParseUint(string(data), 10, 64); err != nil {
			bad = fmt.Errorf("head: %w", err)
		} else if h > v.head {
			v.head = h
		}
		v.headSeq = seq
		v.lastAt = max(v.lastAt, at)
		notify = true
	case "epoch":
		var e epochRec
		if err := json.Unmarshal(data, &e); err != nil {
			bad = fmt.Errorf("epoch record: %w", err)
		} else {
			v.epoch, v.epochSeq = e, seq
		}
	case "pruned":
		var n pruneNote
		if err := json.Unmarshal(data, &n); err != nil {
			bad = fmt.Errorf("prune note: %w", err)
			break
		}
		f := n.Floor
		for _, r := range n.Ranges {
			f = max(f, r[1])
		}
		v.floor = max(v.floor, f)
	}
	v.applied = seq
	if last {
		v.caughtUp = true
	}
	close(v.signal)
	v.signal = make(chan struct{})
	if bad != nil {
		v.noteErr(subject, seq, bad)
	} else {
		v.errs.Consecutive = 0
	}
	return notify, bad
}
