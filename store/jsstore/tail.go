// The tail: every replica reads the stream into its in-memory view
// (events, seen records, rule states, head, epoch, prune notes), which the
// reads and the leader's diffs use; applyOwn puts the leader's own
// committed batch in at once.

package jsstore

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// entry is one event of the outbox as the tail read it.
type entry struct {
	off  uint64
	seq  uint64 // stream sequence of its event message
	task int64
	at   int64 // commit time, unix nanoseconds
	part int
	typ  string
	body []byte
}

// maxCachedBodies bounds the event bodies a view keeps in memory: the
// newest ones, which delivery reads. Older bodies are read from the stream
// when asked for (a replay, a sink far behind). About 1 KiB each.
var maxCachedBodies = 100_000

// epochRec is the body of an epoch record.
type epochRec struct {
	Epoch  uint64    `json:"epoch"`
	Leader string    `json:"leader"`
	At     time.Time `json:"at"`
}

// pruneNote is the body of a "$INCS.<Name>.pruned" message: offsets
// deleted from the stream, as inclusive ranges, so every replica drops
// them.
type pruneNote struct {
	Ranges [][2]uint64 `json:"ranges"`
}

// view is a replica's in-memory copy of the stream, kept by the tail: the
// events in offset order, the seen-set, the rule states, the head and the
// current epoch. The leader diffs against its seen-set: after each commit
// it waits for the tail to read the commit, so the view is exact there.
type view struct {
	mu        sync.RWMutex
	events    []entry
	pending   []entry    // events of a batch being read, added at its end
	byPart    [][]uint64 // offsets per partition, ascending
	seen      map[int64][]byte
	rules     map[int64][]byte
	ruleTasks map[int64][]byte
	head      uint64
	headSeq   uint64 // stream sequence of the last head message
	epoch     epochRec
	epochSeq  uint64 // stream sequence of the current epoch record
	applied   uint64 // stream sequence of the last message read
	caughtUp  bool   // read the whole stream once
	maxBodies int    // bodies kept: maxCachedBodies when the view was made
	cached    int    // events with their body in memory
	evictAt   int    // events before this index have no body
	signal    chan struct{}
	wake      func() // wakes Notify subscribers
	errs      TailStatus
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

func newView(parts int, wake func()) *view {
	return &view{
		byPart:    make([][]uint64, parts),
		seen:      map[int64][]byte{},
		rules:     map[int64][]byte{},
		ruleTasks: map[int64][]byte{},
		signal:    make(chan struct{}),
		wake:      wake,
		maxBodies: maxCachedBodies,
	}
}

// startTail starts the ordered consumer that reads the whole stream into
// the view, and waits until it read what the stream held at the start.
func (s *Store) startTail(ctx context.Context) error {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("jsstore: stream %s: %w", s.name, err)
	}
	cons, err := s.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{s.subj + ">"},
	})
	if err != nil {
		return fmt.Errorf("jsstore: tail %s: %w", s.name, err)
	}
	prefix := s.subj
	// The ordered consumer notices a dead server by missed heartbeats,
	// two in a row, and then recreates itself elsewhere. Its default
	// heartbeat (5s) left the tail, and a leader whose commit's ack was
	// lost with the node, stalled for 10s; a quarter lease notices within
	// half a lease. Recreating the consumer may take longer: the client
	// retries 1s, 2s, 4s … 10s apart while the cluster cannot place it
	// (docs/ha.md, one NATS node dies).
	hb := max(s.o.Lease/4, 500*time.Millisecond)
	cc, err := cons.Consume(func(m jetstream.Msg) {
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
	})
	if info.State.Msgs == 0 {
		s.v.mu.Lock()
		s.v.caughtUp = true
		s.v.mu.Unlock()
		return nil
	}
	return s.v.wait(ctx, func(v *view) bool { return v.caughtUp || v.applied >= info.State.LastSeq })
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
	v.mu.Lock()
	notify, err := v.applyLocked(prefix, subject, seq, m.Data(), md.NumPending == 0)
	v.mu.Unlock()
	if notify && v.wake != nil {
		v.wake()
	}
	return subject, seq, err
}

// applyOwn reads a batch this replica committed, msgs at stream
// sequences first onwards, into the view without waiting for the tail to
// read it back, when the view holds every message before first (else it
// reports false: wait for the tail). The tail skips these messages when it
// reads them. This keeps a leader going when its tail stalls, e.g. while
// its ordered consumer is recreated after a node died.
func (v *view) applyOwn(prefix string, msgs []outMsg, first uint64) bool {
	last := first + uint64(len(msgs)) - 1
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
		n, _ := v.applyLocked(prefix, m.subj, first+uint64(i), m.data, false) // counted; its own batch
		notify = n || notify
	}
	v.flushPending()
	v.mu.Unlock()
	if notify && v.wake != nil {
		v.wake()
	}
	return true
}

// applyLocked reads one message into the view (v.mu held) and reports
// whether Notify subscribers should wake. last says the stream holds
// nothing after it. A record that does not parse is skipped (the sequence
// still counts as read), counted in v.errs and returned.
func (v *view) applyLocked(prefix, subject string, seq uint64, data []byte, last bool) (notify bool, bad error) {
	subj := strings.TrimPrefix(subject, prefix)
	kind, arg, _ := strings.Cut(subj, ".")
	if seq <= v.applied {
		return false, nil
	}
	switch kind {
	case "ev", "seen", "rule", "rtask":
		// A batch's event messages (one per partition) are added
		// together, in offset order, when its head comes: seen and rule
		// records between them touch no event.
	default:
		v.flushPending()
	}
	switch kind {
	case "ev":
		part, err := strconv.Atoi(arg)
		if err != nil || part < 0 || part >= len(v.byPart) {
			bad = fmt.Errorf("partition %q: not one of 0..%d", arg, len(v.byPart)-1)
			break
		}
		if err := parseFrames(data, func(off uint64, task, at int64, typ string, body []byte) {
			if off > 0 {
				v.pending = append(v.pending, entry{off: off, seq: seq, task: task, at: at, part: part, typ: typ, body: body})
			}
		}); err != nil {
			bad = fmt.Errorf("events: %w", err)
		}
	case "seen", "rule", "rtask":
		id, err := strconv.ParseInt(arg, 10, 64)
		if err != nil {
			bad = fmt.Errorf("%s record: task id %q: %w", kind, arg, err)
			break
		}
		mp := v.seen
		switch kind {
		case "rule":
			mp = v.rules
		case "rtask":
			mp = v.ruleTasks
		}
		if len(data) == 0 {
			delete(mp, id)
		} else {
			mp[id] = data
		}
	case "head":
		if h, err := strconv.ParseUint(string(data), 10, 64); err != nil {
			bad = fmt.Errorf("head: %w", err)
		} else if h > v.head {
			v.head = h
		}
		v.headSeq = seq
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
		} else {
			v.drop(n.Ranges)
		}
	}
	v.applied = seq
	if last {
		v.flushPending()
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

// flushPending adds the events read since the last other message: a
// batch's event messages (one per partition) come together, before its
// head, and are added in offset order.
func (v *view) flushPending() {
	if len(v.pending) == 0 {
		return
	}
	slices.SortStableFunc(v.pending, func(a, b entry) int { return cmp.Compare(a.off, b.off) })
	for _, e := range v.pending {
		v.addEvent(e)
	}
	v.pending = nil
}

// addEvent adds e, keeping offset order.
func (v *view) addEvent(e entry) {
	if e.off > v.head {
		v.head = e.off
	}
	v.cached++
	defer v.evict()
	n := len(v.events)
	if n == 0 || v.events[n-1].off < e.off {
		v.events = append(v.events, e)
		v.byPart[e.part] = append(v.byPart[e.part], e.off)
		return
	}
	// Not expected (the leader appends in offset order); keep order anyway.
	i, found := slices.BinarySearchFunc(v.events, e.off, func(a entry, off uint64) int { return cmp.Compare(a.off, off) })
	if found {
		v.cached--
		return
	}
	if i < v.evictAt {
		// Behind the eviction mark: evict scans again from here, so
		// this body counts against the bound like any other.
		v.evictAt = i
	}
	v.events = slices.Insert(v.events, i, e)
	p := v.byPart[e.part]
	j, _ := slices.BinarySearch(p, e.off)
	v.byPart[e.part] = slices.Insert(p, j, e.off)
}

// drop removes the events with offsets in ranges.
func (v *view) drop(ranges [][2]uint64) {
	in := func(off uint64) bool {
		for _, r := range ranges {
			if off >= r[0] && off <= r[1] {
				return true
			}
		}
		return false
	}
	v.events = slices.DeleteFunc(v.events, func(e entry) bool {
		if !in(e.off) {
			return false
		}
		if e.body != nil {
			v.cached--
		}
		return true
	})
	for p := range v.byPart {
		v.byPart[p] = slices.DeleteFunc(v.byPart[p], in)
	}
	v.evictAt = 0
	for v.evictAt < len(v.events) && v.events[v.evictAt].body == nil {
		v.evictAt++
	}
}

// evict drops the oldest bodies beyond maxBodies.
func (v *view) evict() {
	for v.cached > v.maxBodies && v.evictAt < len(v.events) {
		if v.events[v.evictAt].body != nil {
			v.events[v.evictAt].body = nil
			v.cached--
		}
		v.evictAt++
	}
}

// find returns the index of the first event with offset >= off.
func (v *view) find(off uint64) int {
	i, _ := slices.BinarySearchFunc(v.events, off, func(a entry, off uint64) int { return cmp.Compare(a.off, off) })
	return i
}

// get returns the event at off.
func (v *view) get(off uint64) (entry, bool) {
	i := v.find(off)
	if i < len(v.events) && v.events[i].off == off {
		return v.events[i], true
	}
	return entry{}, false
}
