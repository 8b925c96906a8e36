// Reading the outbox from the stream, not from memory: event messages
// are fetched by sequence and subject (the server's per-subject index)
// and found by offset with a binary search over sequences, narrowed by a
// few remembered (offset, sequence) pairs; a cache bounded in bytes keeps
// the newest messages, among them this replica's own batches, so that
// dispatchers rarely fetch what their leader just stored.

package jsstore

import (
	"cmp"
	"container/list"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultCacheBytes is the default Options.CacheBytes: 8 MiB holds about
// 5,000 of the simulator's events, what dispatchers that keep up read
// back of the leader's latest batches. 16 MiB delivered 84,334 events no
// faster in bench and held 11-22 MB more RssAnon at 1,000,000 stored
// events (bench --scale 1000000 --store jetstream, three runs each,
// 2026-12-07: 128-132 MB against 109-118 MB), where delivery, far
// behind the leader, reads from the stream either way.
const DefaultCacheBytes = 8 << 20

// evMsg is an event message as read: its stream sequence, its partition
// and its events, in offset order.
type evMsg struct {
	seq  uint64
	part int
	evs  []entry
	size int
	// The cache's bookkeeping: the sequence after which it is its
	// partition's next event message, and its element in the eviction
	// order.
	after uint64
	elem  *list.Element
}

func (m *evMsg) first() uint64 { return m.evs[0].off }
func (m *evMsg) last() uint64  { return m.evs[len(m.evs)-1].off }
func (m *evMsg) lastAt() int64 { return m.evs[len(m.evs)-1].at }

// parseEvMsg reads an event message; it has at least one event.
func parseEvMsg(prefix, subject string, seq uint64, data []byte) (*evMsg, error) {
	part, err := strconv.Atoi(strings.TrimPrefix(subject, prefix+"ev."))
	if err != nil || !strings.HasPrefix(subject, prefix+"ev.") {
		return nil, fmt.Errorf("jsstore: message %d: %s is not an event message", seq, subject)
	}
	data, err = eventFrames(data)
	if err != nil {
		return nil, fmt.Errorf("jsstore: event message %d: %w", seq, err)
	}
	m := &evMsg{seq: seq, part: part, size: len(data) + 64}
	if err := parseFrames(data, func(off uint64, task, at int64, typ string, body []byte) {
		m.evs = append(m.evs, entry{off: off, task: task, at: at, typ: typ, body: body})
	}); err != nil {
		return nil, fmt.Errorf("jsstore: event message %d: %w", seq, err)
	}
	if len(m.evs) == 0 {
		return nil, fmt.Errorf("jsstore: event message %d: %w", seq, errBadFrame)
	}
	m.size += len(m.evs) * 64
	return m, nil
}

// ownEvMsg is the event message om of this replica's own batch, at
// sequence seq: from the events packEvents packed into it, else parsed.
func ownEvMsg(prefix string, om outMsg, seq uint64) (*evMsg, error) {
	if len(om.evs) == 0 {
		return parseEvMsg(prefix, om.subj, seq, om.data)
	}
	part, err := strconv.Atoi(strings.TrimPrefix(om.subj, prefix+"ev."))
	if err != nil {
		return nil, fmt.Errorf("jsstore: message %d: %s is not an event message", seq, om.subj)
	}
	return &evMsg{seq: seq, part: part, evs: om.evs, size: len(om.data) + 64 + len(om.evs)*64}, nil
}

// hint is an event message's first offset and its sequence.
type hint struct{ off, seq uint64 }

// maxHints bounds the hints kept per subject.
const maxHints = 512

// msgCache keeps the newest event messages read or committed by this
// replica, at most max bytes, linked per partition: next[p][s] is
// partition p's first event message after stream sequence s. It also
// keeps, per partition and for all partitions together (index
// len(next)), up to maxHints (first offset, sequence) pairs that narrow
// the search for an offset.
type msgCache struct {
	mu    sync.Mutex
	max   int
	size  int
	next  []map[uint64]*evMsg
	bySeq map[uint64]*evMsg
	order *list.List // oldest first
	hints [][]hint   // ascending by offset (and so by sequence)
	// ownEnd is the sequence of the last message of this replica's last
	// own batch, ownLast[p] that batch's last event message of p: a next
	// batch right after it links on from them.
	ownEnd  uint64
	ownLast []uint64
}

func newMsgCache(parts, max int) *msgCache {
	c := &msgCache{max: max, next: make([]map[uint64]*evMsg, parts), bySeq: map[uint64]*evMsg{}, order: list.New(),
		hints: make([][]hint, parts+1), ownLast: make([]uint64, parts)}
	for p := range c.next {
		c.next[p] = map[uint64]*evMsg{}
	}
	return c
}

// get returns partition p's (any partition's with p < 0) first event
// message after sequence after, if cached: linked from after, or at
// after+1.
func (c *msgCache) get(p int, after uint64) *evMsg {
	c.mu.Lock()
	defer c.mu.Unlock()
	var m *evMsg
	if p >= 0 && p < len(c.next) {
		m = c.next[p][after]
	}
	if m == nil {
		if n := c.bySeq[after+1]; n != nil && (p < 0 || n.part == p) {
			m = n
		}
	}
	if m != nil {
		c.order.MoveToBack(m.elem)
	}
	return m
}

// noneAfter reports whether partition p surely has no event message
// after sequence after up to sequence upto: after is p's last message of
// this replica's own batches, which reach upto without a gap.
func (c *msgCache) noneAfter(p int, after, upto uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return after != 0 && p >= 0 && p < len(c.ownLast) && c.ownLast[p] == after && c.ownEnd >= upto
}

// lastBelow reports whether partition p's last event message ends below
// off (below), when that message is known (known): this replica's own
// batches reach sequence upto (the last head) without a gap and the
// cache still holds the partition's last one.
func (c *msgCache) lastBelow(p int, off, upto uint64) (below, known bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p < 0 || p >= len(c.ownLast) || c.ownLast[p] == 0 || c.ownEnd < upto {
		return false, false
	}
	m := c.bySeq[c.ownLast[p]]
	if m == nil {
		return false, false
	}
	return m.last() < off, true
}

// walk returns the sequence of partition p's last event message starting
// at or below off, following the cached links from the message at
// sequence from (which starts at or below off), and whether the message
// after it is known to start above off (else the walk ran out of links).
func (c *msgCache) walk(p int, from, off uint64) (seq uint64, sure bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.bySeq[from]
	if m == nil || m.part != p {
		return from, false
	}
	for range 4096 {
		n := c.next[p][m.seq]
		if n == nil {
			return m.seq, false
		}
		if n.first() > off {
			return m.seq, true
		}
		m = n
	}
	return m.seq, false
}

// holdingIn returns a cached event message of partition p holding the
// event at off: from the last remembered message of p starting at or
// below off that is still cached (up to a few back), following the cached
// links on.
func (c *msgCache) holdingIn(p int, off uint64) *evMsg {
	if p < 0 || p >= len(c.next) {
		return nil
	}
	c.mu.Lock()
	h := c.hints[p]
	j, _ := slices.BinarySearchFunc(h, off+1, func(a hint, off uint64) int { return cmp.Compare(a.off, off) })
	var from uint64
	for k := j - 1; k >= 0 && k >= j-8; k-- {
		if m := c.bySeq[h[k].seq]; m != nil && m.part == p {
			from = m.seq
			break
		}
	}
	c.mu.Unlock()
	if from == 0 {
		return nil
	}
	seq, _ := c.walk(p, from, off)
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.bySeq[seq]
	if m == nil || m.part != p || m.first() > off || m.last() < off {
		return nil
	}
	if _, found := slices.BinarySearchFunc(m.evs, off, func(e entry, off uint64) int { return cmp.Compare(e.off, off) }); !found {
		return nil
	}
	return m
}

// holding returns a cached event message holding the event at off, found
// by the remembered first offsets at or below it: the few messages of one
// batch, across partitions.
func (c *msgCache) holding(off uint64) *evMsg {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.hints[len(c.next)]
	j, _ := slices.BinarySearchFunc(h, off+1, func(a hint, off uint64) int {
		if a.off < off {
			return -1
		}
		return 1
	})
	for k := j - 1; k >= 0 && k >= j-len(c.next)-1; k-- {
		m := c.bySeq[h[k].seq]
		if m == nil || m.last() < off {
			continue
		}
		if _, found := slices.BinarySearchFunc(m.evs, off, func(e entry, off uint64) int { return cmp.Compare(e.off, off) }); found {
			return m
		}
	}
	return nil
}

// hint remembers m's first offset for later searches, without caching m.
func (c *msgCache) hint(m *evMsg) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hintLocked(m.part, m)
	c.hintLocked(len(c.next), m)
}

// put caches m as partition m.part's first event message after sequence
// after, and remembers its first offset.
func (c *msgCache) put(after uint64, m *evMsg) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(after, m)
}

func (c *msgCache) putLocked(after uint64, m *evMsg) {
	c.hintLocked(m.part, m)
	c.hintLocked(len(c.next), m)
	if c.max <= 0 || m.part < 0 || m.part >= len(c.next) {
		return
	}
	if old := c.next[m.part][after]; old != nil {
		c.dropLocked(old)
	}
	if old := c.bySeq[m.seq]; old != nil {
		c.dropLocked(old)
	}
	m.after = after
	c.bySeq[m.seq] = m
	m.elem = c.order.PushBack(m)
	c.next[m.part][after] = m
	c.size += m.size
	for c.size > c.max && c.order.Len() > 1 {
		c.dropLocked(c.order.Front().Value.(*evMsg))
	}
}

func (c *msgCache) dropLocked(m *evMsg) {
	if c.next[m.part][m.after] == m {
		delete(c.next[m.part], m.after)
	}
	if c.bySeq[m.seq] == m {
		delete(c.bySeq, m.seq)
	}
	c.order.Remove(m.elem)
	c.size -= m.size
}

// hintLocked remembers m's first offset for the searches in partition i
// (or, with i == partitions, in all of them).
func (c *msgCache) hintLocked(i int, m *evMsg) {
	if i < 0 || i >= len(c.hints) {
		return
	}
	h := c.hints[i]
	at, found := slices.BinarySearchFunc(h, m.first(), func(a hint, off uint64) int { return cmp.Compare(a.off, off) })
	if found {
		h[at].seq = max(h[at].seq, m.seq)
		return
	}
	h = slices.Insert(h, at, hint{m.first(), m.seq})
	if len(h) > maxHints {
		// Thin out: every other one, keeping the newest.
		k := 0
		for j := (len(h) - 1) % 2; j < len(h); j += 2 {
			h[k] = h[j]
			k++
		}
		h = h[:k]
	}
	c.hints[i] = h
}

// bounds returns the sequences of the remembered messages around off in
// search i: the last one starting at or below off (0 if none) and the
// first one starting above it (0 if none).
func (c *msgCache) bounds(i int, off uint64) (below, above uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.hints[i]
	j, _ := slices.BinarySearchFunc(h, off+1, func(a hint, off uint64) int {
		if a.off < off {
			return -1
		}
		return 1
	})
	if j > 0 {
		below = h[j-1].seq
	}
	if j < len(h) {
		above = h[j].seq
	}
	return below, above
}

// own caches the event messages of a batch this replica committed, msgs
// at sequences first onwards, linking each partition's first one to that
// partition's last one in the batch before when the two batches are
// adjacent in the stream (nothing else came between them).
func (c *msgCache) own(prefix string, msgs []outMsg, first uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ownEnd == 0 || c.ownEnd+1 != first {
		clear(c.ownLast)
	}
	for i, om := range msgs {
		seq := first + uint64(i)
		if !strings.HasPrefix(om.subj, prefix+"ev.") {
			continue
		}
		m, err := ownEvMsg(prefix, om, seq)
		if err != nil {
			continue
		}
		after := c.ownLast[m.part]
		if after == 0 {
			after = seq - 1 // not a link (none of p may be just before): found by its sequence
		}
		c.putLocked(after, m)
		c.ownLast[m.part] = seq
	}
	c.ownEnd = first + uint64(len(msgs)) - 1
}

// evSubject is the subject of partition p's events, or of every
// partition's with p < 0.
func (s *Store) evSubject(p int) string {
	if p < 0 {
		return s.subj + "ev.>"
	}
	return s.subj + "ev." + strconv.Itoa(p)
}

// fetch returns the first event message of partition p (every partition
// with p < 0) at or after sequence from; nil if there is none.
func (s *Store) fetch(ctx context.Context, p int, from uint64) (*evMsg, error) {
	m, cached, err := s.probe(ctx, p, from)
	if m != nil && !cached {
		// The first of m's partition after from-1, also when read across
		// partitions: no event message of any partition came between.
		s.cache.put(from-1, m)
	}
	return m, err
}

// probe is fetch without caching what it reads from the stream (only its
// first offset is remembered for later searches); cached reports that m
// came from the cache.
func (s *Store) probe(ctx context.Context, p int, from uint64) (m *evMsg, cached bool, err error) {
	if m := s.cache.get(p, from-1); m != nil {
		return m, true, nil
	}
	raw, err := s.getNext(ctx, max(from, 1), s.evSubject(p))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("jsstore: reading the events after %d: %w", from, err)
	}
	m, err = parseEvMsg(s.subj, raw.Subject, raw.Sequence, raw.Data)
	if err != nil {
		return nil, false, err
	}
	s.cache.hint(m)
	return m, false, nil
}

// locate returns the sequence to read partition p's events (every
// partition's with p < 0) from to meet offset off: that of the last event
// message starting at or below off, or 1 if none does. Event messages
// start in offset order within a partition and across the stream (a
// batch packs its events in offset order; packEvents opens a partition's
// message at its first event), so a binary search over sequences finds
// it, in about log2(messages) reads, fewer near a remembered message.
func (s *Store) locate(ctx context.Context, p int, off uint64) (uint64, error) {
	hi := s.lastHeadSeq()
	i := p
	if p < 0 {
		i = len(s.cache.next)
	}
	lo, cand := uint64(1), uint64(0)
	if below, above := s.cache.bounds(i, off); below > 0 || above > 0 {
		if below > 0 && p >= 0 {
			seq, sure := s.cache.walk(p, below, off)
			if sure {
				return seq, nil
			}
			below = seq
		}
		if below > 0 {
			lo, cand = below+1, below
		}
		if above > 0 && above-1 < hi {
			hi = above - 1
		}
	}
	// The messages a search reads on its way are not cached (only their
	// first offsets are remembered): a restart's searches, one per
	// partition and sink, filled the cache with them, up to
	// store.cache_mb of messages nobody reads. The one found is, as the
	// read that asked will start there.
	var found *evMsg
	var foundAfter uint64
	for lo <= hi {
		mid := lo + (hi-lo)/2
		m, cached, err := s.probe(ctx, p, mid)
		if err != nil {
			return 0, err
		}
		if m == nil || m.seq > hi {
			hi = mid - 1
			continue
		}
		if m.first() <= off {
			cand, lo = m.seq, m.seq+1
			found, foundAfter = nil, 0
			if !cached {
				found, foundAfter = m, mid-1
			}
		} else {
			hi = mid - 1
		}
	}
	if found != nil {
		s.cache.put(foundAfter, found)
	}
	return max(cand, 1), nil
}

// batchStart returns the sequence of the first event message of the
// batch holding the event message at seq: event messages from other
// partitions before it in its batch may hold lower offsets than its
// first, and higher ones too.
func (s *Store) batchStart(ctx context.Context, seq uint64) (uint64, error) {
	for n := 0; seq > 1 && n < MaxBatch; n++ {
		raw, err := s.getMsg(ctx, msgReq{Seq: seq - 1})
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("jsstore: reading message %d: %w", seq-1, err)
		}
		if !strings.HasPrefix(raw.Subject, s.subj+"ev.") {
			break
		}
		seq--
	}
	return seq, nil
}

// lastHeadSeq returns the stream sequence of the last head message this
// replica read: every event message committed before it is at a lower
// sequence.
func (s *Store) lastHeadSeq() uint64 {
	s.v.mu.RLock()
	defer s.v.mu.RUnlock()
	return s.v.headSeq
}

// floorHead returns the prune floor and the head.
func (s *Store) floorHead() (floor, head uint64) {
	s.v.mu.RLock()
	defer s.v.mu.RUnlock()
	return s.v.floor, s.v.head
}

// scan calls fn with partition p's events (every partition's with p <
// 0) from sequence from on, message by message, until fn returns false
// or the stream ends.
func (s *Store) scan(ctx context.Context, p int, from uint64, fn func(m *evMsg) bool) error {
	for {
		m, err := s.fetch(ctx, p, from)
		if err != nil || m == nil {
			return err
		}
		if !fn(m) {
			return nil
		}
		from = m.seq + 1
	}
}

// collect returns up to limit events with offset >= from that keep
// selects, in offset order: from partition p's messages, or with p < 0
// from every partition's, merged.
func (s *Store) collect(ctx context.Context, p int, from uint64, limit int, keep func(e *entry) bool) ([]entry, error) {
	floor, _ := s.floorHead()
	from = max(from, floor+1)
	seq, err := s.locate(ctx, p, from)
	if err != nil {
		return nil, err
	}
	if p < 0 {
		if seq, err = s.batchStart(ctx, seq); err != nil {
			return nil, err
		}
	}
	var out []entry
	err = s.scan(ctx, p, seq, func(m *evMsg) bool {
		// Every later message starts at or above m's first offset: once
		// limit events below it are picked, none can come before them.
		if len(out) >= limit {
			slices.SortFunc(out, func(a, b entry) int { return cmp.Compare(a.off, b.off) })
			out = out[:limit]
			if out[limit-1].off < m.first() {
				return false
			}
		}
		if err := ctx.Err(); err != nil {
			return false
		}
		for i := range m.evs {
			if e := &m.evs[i]; e.off >= from && (keep == nil || keep(e)) {
				out = append(out, *e)
			}
		}
		return true
	})
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b entry) int { return cmp.Compare(a.off, b.off) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// find returns the event at off from the stream, or ok false.
func (s *Store) find(ctx context.Context, off uint64) (e entry, ok bool, err error) {
	floor, head := s.floorHead()
	if off == 0 || off > head {
		return e, false, nil
	}
	if off > floor {
		if m := s.cache.holding(off); m != nil {
			for _, e := range m.evs {
				if e.off == off {
					return e, true, nil
				}
			}
		}
		evs, err := s.collect(ctx, -1, off, 1, nil)
		if err != nil {
			return e, false, err
		}
		if len(evs) == 1 && evs[0].off == off {
			return evs[0], true, nil
		}
	}
	return s.deadCopy(ctx, off)
}

// nextIn returns the lowest offset at or above from in partition p, or 0
// if there is none. A partition whose last message ends below from (one
// a sink is done with) costs one read, not a search.
func (s *Store) nextIn(ctx context.Context, p int, from uint64) (uint64, error) {
	if next, ok := s.rememberedNext(p, from); ok {
		return next, nil
	}
	next, at, err := s.findNextIn(ctx, p, from)
	if err == nil && next > 0 && p >= 0 && p < len(s.nexts) {
		s.nextMu.Lock()
		ms := &s.nexts[p]
		copy(ms[1:], ms[:len(ms)-1]) // the newest first, the oldest dropped
		ms[0] = nextMemo{from: from, next: next, at: at}
		s.nextMu.Unlock()
	}
	return next, err
}

// cachedNextIn is nextIn(p, c+1) from the cache alone, for c an offset
// of partition p's: ok is false when the cache cannot tell.
func (s *Store) cachedNextIn(p int, c uint64) (next uint64, ok bool) {
	m := s.cache.holdingIn(p, c)
	if m == nil {
		return 0, false
	}
	for _, e := range m.evs {
		if e.off > c {
			return e.off, true
		}
	}
	if n := s.cache.get(p, m.seq); n != nil && n.part == p {
		return n.first(), true
	}
	if s.cache.noneAfter(p, m.seq, s.lastHeadSeq()) {
		return 0, true
	}
	return 0, false
}

// nextMemo is nextIn's answer next for from, and when that event was
// stored (unix nanoseconds).
type nextMemo struct {
	from, next uint64
	at         int64
}

// nextMemos is how many of nextIn's answers are remembered per partition.
const nextMemos = 4

// rememberedAt returns when the event at off was stored, if it is one of
// nextIn's remembered answers: the event after a sink's cursor, whose
// time the status's lag in seconds wants right after Cursor found it.
func (s *Store) rememberedAt(off uint64) (int64, bool) {
	s.nextMu.Lock()
	defer s.nextMu.Unlock()
	for i := range s.nexts {
		for _, m := range s.nexts[i] {
			if m.next == off && m.at != 0 {
				return m.at, true
			}
		}
	}
	return 0, false
}

// rememberedNext returns nextIn's remembered answer for p and from, if it
// still holds: the event it names is above the pruned floor. A sink's
// status asks every partition for the event after its cursor (Cursor),
// several times a second while /v1/sinks or the metrics are read; while
// the cursor stands still this answers without reading the stream.
func (s *Store) rememberedNext(p int, from uint64) (uint64, bool) {
	if p < 0 || p >= len(s.nexts) {
		return 0, false
	}
	s.nextMu.Lock()
	var m nextMemo
	for _, r := range s.nexts[p] {
		if r.next != 0 && r.from == from {
			m = r
			break
		}
	}
	s.nextMu.Unlock()
	if m.next == 0 {
		return 0, false
	}
	if floor, _ := s.floorHead(); m.next <= floor {
		return 0, false
	}
	return m.next, true
}

// findNextIn is nextIn without the memo.
func (s *Store) findNextIn(ctx context.Context, p int, from uint64) (next uint64, at int64, err error) {
	below, known := s.cache.lastBelow(p, from, s.lastHeadSeq())
	if below {
		return 0, 0, nil
	}
	if !known {
		// Asked of the stream's leader: a whole message, in base64 JSON.
		// A leader or a replica that keeps up knows its partitions' last
		// messages, so a sink's status while it delivers (the admin page,
		// /v1/sinks, the metrics) costs no such read.
		last, err := s.lastMsg(ctx, s.evSubject(p))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return 0, 0, nil
		case err != nil:
			return 0, 0, fmt.Errorf("jsstore: reading partition %d's last events: %w", p, err)
		}
		m, err := parseEvMsg(s.subj, last.Subject, last.Sequence, last.Data)
		if err != nil {
			return 0, 0, err
		}
		if m.last() < from {
			return 0, 0, nil
		}
	}
	evs, err := s.collect(ctx, p, from, 1, nil)
	if err != nil || len(evs) == 0 {
		return 0, 0, err
	}
	return evs[0].off, evs[0].at, nil
}

// deadCopy returns the copy of a dead-lettered event kept aside
// ("$INCS.<Name>.dl.<offset>") for when pruning takes its message.
func (s *Store) deadCopy(ctx context.Context, off uint64) (e entry, ok bool, err error) {
	raw, err := s.lastMsg(ctx, s.subj+"dl."+strconv.FormatUint(off, 10))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return e, false, nil
	}
	if err != nil {
		return e, false, fmt.Errorf("jsstore: event %d: %w", off, err)
	}
	err = parseFrames(raw.Data, func(o uint64, task, at int64, typ string, body []byte) {
		if o == off {
			e, ok = entry{off: o, task: task, at: at, typ: typ, body: body}, true
		}
	})
	return e, ok, err
}

// keepDeadCopy copies the event e aside for a dead letter: pruning purges
// whole event messages up to the lowest kept event, and a dead letter is
// not kept back by them.
func (s *Store) keepDeadCopy(ctx context.Context, e entry) error {
	if _, ok, err := s.deadCopy(ctx, e.off); err != nil || ok {
		return err
	}
	out := evOut{off: e.off, task: e.task, at: e.at, typ: e.typ, body: e.body}
	_, err := s.js.Publish(ctx, s.subj+"dl."+strconv.FormatUint(e.off, 10), appendFrame(nil, &out))
	return err
}
