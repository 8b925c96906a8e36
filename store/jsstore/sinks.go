// Per-sink state in the state bucket (cursors per partition, dead
// letters, sink states, Rewind), small values (Meta, Initialized), and
// PartitionOutbox, a partition's view of the outbox for its dispatcher.

package jsstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store"
)

func checkSink(sink string) error {
	if sink == "" {
		return errors.New("empty sink name")
	}
	return nil
}

func cursorKey(sink string, p int) string {
	return keyCursor + keyToken(sink) + "." + strconv.Itoa(p)
}

// partCursor returns a sink's cursor in partition p: every event of p at
// or below it is done.
func (s *Store) partCursor(sink string, p int) uint64 {
	rec, _, _ := s.cursorRecord(cursorKey(sink, p))
	return rec.Off
}

// Cursor returns the highest offset through which every partition of the
// sink is done: what status and retention use. 0 means none.
func (s *Store) Cursor(sink string) (uint64, error) {
	if err := s.checkOpen("cursor"); err != nil {
		return 0, err
	}
	ctx, cancel := s.opCtx()
	defer cancel()
	return s.cursor(ctx, sink, nil)
}

// LiveCursor is a partition's cursor as the dispatcher delivering it
// here holds it, ahead of the stored one by up to a cursor flush.
type LiveCursor struct {
	Cursor uint64
	// Pending is set while the dispatcher holds events of the partition
	// it read and has not finished: the lowest of them is at Cursor+1.
	Pending bool
}

// CursorWith is Cursor with live partition cursors: live[p], where above
// the stored one, stands for partition p's.
func (s *Store) CursorWith(sink string, live map[int]LiveCursor) (uint64, error) {
	if err := s.checkOpen("cursor"); err != nil {
		return 0, err
	}
	ctx, cancel := s.opCtx()
	defer cancel()
	return s.cursor(ctx, sink, live)
}

// CachedStoredAt returns when the event at off was stored, if this
// replica's memory holds it (ok): the cache, or the event after a
// partition's cursor that Cursor last found. It reads nothing from the
// stream. A sink's status asks it for the event after the sink's cursor.
func (s *Store) CachedStoredAt(off uint64) (at time.Time, ok bool) {
	if ns, ok := s.rememberedAt(off); ok {
		return time.Unix(0, ns), true
	}
	m := s.cache.holding(off)
	if m == nil {
		return at, false
	}
	for _, e := range m.evs {
		if e.off == off {
			return time.Unix(0, e.at), true
		}
	}
	return at, false
}

// cursor is Cursor: below the lowest event, in any partition, above that
// partition's cursor: the stored one, or live[p] when it is higher and
// what follows it is known without reading the stream (the dispatcher's
// pending events, else the cache: cachedNextIn). A live cursor moves with
// every delivery, so looking past it in the stream would cost a search
// per partition each time a status is asked for; past the stored one
// the answer is remembered (nextIn).
func (s *Store) cursor(ctx context.Context, sink string, live map[int]LiveCursor) (uint64, error) {
	_, out := s.floorHead()
	nexts := make([]uint64, s.o.Partitions)
	stored := make([]uint64, s.o.Partitions)
	var reads []int // partitions whose next event is looked up in the stream
	for p := range s.o.Partitions {
		stored[p] = s.partCursor(sink, p)
		if l := live[p]; l.Cursor > stored[p] {
			if l.Pending {
				nexts[p] = l.Cursor + 1
				continue
			}
			if next, ok := s.cachedNextIn(p, l.Cursor); ok {
				nexts[p] = next
				continue
			}
		}
		if next, ok := s.rememberedNext(p, stored[p]+1); ok {
			nexts[p] = next
			continue
		}
		reads = append(reads, p)
	}
	// The lookups that read the stream run side by side: one after the
	// other, a replica that does not hold the partitions' messages took
	// 0.2-0.5 s to answer a status on a busy two-node cluster (bench
	// --replicas 2), each lookup a binary search of direct gets.
	errs := make([]error, len(reads))
	var wg sync.WaitGroup
	for i, p := range reads {
		wg.Go(func() {
			nexts[p], errs[i] = s.nextIn(ctx, p, stored[p]+1)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	for _, next := range nexts {
		if next > 0 {
			out = min(out, next-1)
		}
	}
	return out, nil
}

// SetCursor sets the sink's cursor in every partition; a lower value is
// accepted, one beyond Head is an error. It is not atomic across
// partitions.
func (s *Store) SetCursor(sink string, offset uint64) error {
	if err := s.checkOpen("set cursor"); err != nil {
		return err
	}
	if err := checkSink(sink); err != nil {
		return fmt.Errorf("jsstore: set cursor: %w", err)
	}
	if head, _ := s.Head(); offset > head {
		return fmt.Errorf("jsstore: set cursor: sink %s: offset %d is beyond head %d", sink, offset, head)
	}
	for p := range s.o.Partitions {
		if err := s.setPartCursor(sink, p, offset); err != nil {
			return err
		}
	}
	return nil
}

// setPartCursor is an operator's write of the sink's cursor in partition
// p (SetCursor, Rewind, PartitionOutbox.SetCursor): it keeps the record's
// owner and bumps its generation, so the owner's next write (SetCursorAs)
// is refused and the owner, still named, rereads the cursor instead of
// writing its old position back over this one. The offsets done above
// the old cursor are dropped: everything above the new one is delivered.
func (s *Store) setPartCursor(sink string, p int, offset uint64) error {
	_, _, err := s.updateCursor(sink, p, func(cur cursorRec) (cursorRec, bool) {
		return cursorRec{Off: offset, Owner: cur.Owner, Gen: cur.Gen + 1}, true
	})
	if err != nil {
		return fmt.Errorf("jsstore: set cursor: sink %s: %w", sink, err)
	}
	return nil
}

func deadKey(sink string, off uint64) string {
	return keyDead + keyToken(sink) + "." + strconv.FormatUint(off, 10)
}

// DeadLetter records that the sink gave up on the event at offset. The
// event must still be stored, else the error wraps store.ErrNotFound.
func (s *Store) DeadLetter(sink string, offset uint64, attempts int, lastErr string) error {
	if err := s.checkOpen("dead letter"); err != nil {
		return err
	}
	if err := checkSink(sink); err != nil {
		return fmt.Errorf("jsstore: dead letter: %w", err)
	}
	ctx, cancel := s.opCtx()
	defer cancel()
	e, ok, err := s.find(ctx, offset)
	if err != nil {
		return fmt.Errorf("jsstore: dead letter: event %d: %w", offset, err)
	}
	if !ok {
		return fmt.Errorf("jsstore: dead letter: sink %s: event %d: %w", sink, offset, store.ErrNotFound)
	}
	ev, err := decode(e)
	if err != nil {
		return fmt.Errorf("jsstore: dead letter: %w", err)
	}
	if err := s.keepDeadCopy(ctx, e); err != nil {
		return fmt.Errorf("jsstore: dead letter: copying event %d aside: %w", offset, err)
	}
	b, err := json.Marshal(store.DeadLetter{
		Offset: offset, EventID: ev.ID, Type: e.typ, TaskID: e.task,
		Attempts: attempts, Error: lastErr, At: s.o.Now().UTC(),
	})
	if err != nil {
		return err
	}
	if err := s.kvPut(ctx, deadKey(sink, offset), b); err != nil {
		return fmt.Errorf("jsstore: dead letter: %w", err)
	}
	return nil
}

// DeadLetters returns the sink's dead letters (of every partition) in
// offset order.
func (s *Store) DeadLetters(sink string) ([]store.DeadLetter, error) {
	if err := s.checkOpen("dead letters"); err != nil {
		return nil, err
	}
	var out []store.DeadLetter
	var bad error
	s.state.prefixed(keyDead+keyToken(sink)+".", func(_ string, v []byte) {
		var dl store.DeadLetter
		if err := json.Unmarshal(v, &dl); err != nil {
			bad = fmt.Errorf("jsstore: dead letter of %s: %w", sink, err)
			return
		}
		out = append(out, dl)
	})
	if bad != nil {
		return nil, bad
	}
	slices.SortFunc(out, func(a, b store.DeadLetter) int { return cmp.Compare(a.Offset, b.Offset) })
	return out, nil
}

// SinkState returns the sink's persisted state.
func (s *Store) SinkState(sink string) (store.SinkState, error) {
	var st store.SinkState
	if err := s.checkOpen("sink state"); err != nil {
		return st, err
	}
	v, ok := s.state.get(keySink + keyToken(sink))
	if !ok {
		return st, nil
	}
	if err := json.Unmarshal(v, &st); err != nil {
		return st, fmt.Errorf("jsstore: state of sink %s: %w", sink, err)
	}
	return st, nil
}

// SetSinkState persists the sink's state.
func (s *Store) SetSinkState(sink string, st store.SinkState) error {
	if err := s.checkOpen("set sink state"); err != nil {
		return err
	}
	if err := checkSink(sink); err != nil {
		return fmt.Errorf("jsstore: set sink state: %w", err)
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	ctx, cancel := s.opCtx()
	defer cancel()
	if err := s.kvPut(ctx, keySink+keyToken(sink), b); err != nil {
		return fmt.Errorf("jsstore: set sink state: %w", err)
	}
	return nil
}

// Rewind sets the sink's cursor in every partition to from-1 (from clamped
// to [First, Head+1]), clears its dead letters at or above from and its
// pause, and tells every replica (Rewound). The steps are separate writes:
// a crash between them leaves a partial rewind that a second one
// completes.
func (s *Store) Rewind(sink string, from uint64) error {
	if err := s.checkOpen("rewind"); err != nil {
		return err
	}
	if err := checkSink(sink); err != nil {
		return fmt.Errorf("jsstore: rewind: %w", err)
	}
	ctx, cancel := s.opCtx()
	defer cancel()
	_, head := s.floorHead()
	first, err := s.first(ctx)
	if err != nil {
		return fmt.Errorf("jsstore: rewind: %w", err)
	}
	if first == 0 {
		first = head + 1
	}
	from = min(max(from, first), head+1)
	for p := range s.o.Partitions {
		if err := s.setPartCursor(sink, p, from-1); err != nil {
			return err
		}
	}
	var drop []string
	s.state.prefixed(keyDead+keyToken(sink)+".", func(key string, _ []byte) {
		if off, err := strconv.ParseUint(key[strings.LastIndexByte(key, '.')+1:], 10, 64); err == nil && off >= from {
			drop = append(drop, key)
		}
	})
	for _, key := range drop {
		if err := s.kvDelete(ctx, key); err != nil {
			return fmt.Errorf("jsstore: rewind: %w", err)
		}
	}
	st, err := s.SinkState(sink)
	if err != nil {
		return err
	}
	st.Paused, st.PauseReason = false, ""
	if err := s.SetSinkState(sink, st); err != nil {
		return err
	}
	if err := s.kvPut(ctx, keyRewind+keyToken(sink), []byte(s.o.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		return fmt.Errorf("jsstore: rewind: %w", err)
	}
	return nil
}

// Meta returns the value stored under key, or an error wrapping
// store.ErrNotFound.
func (s *Store) Meta(key string) ([]byte, error) {
	if err := s.checkOpen("meta"); err != nil {
		return nil, err
	}
	v, ok := s.state.get(keyMeta + keyToken(key))
	if !ok {
		return nil, fmt.Errorf("jsstore: meta %q: %w", key, store.ErrNotFound)
	}
	return slices.Clone(v), nil
}

// SetMeta stores value under key; a nil value deletes the key.
func (s *Store) SetMeta(key string, value []byte) error {
	if err := s.checkOpen("set meta"); err != nil {
		return err
	}
	if key == "" {
		return errors.New("jsstore: set meta: empty key")
	}
	ctx, cancel := s.opCtx()
	defer cancel()
	var err error
	if value == nil {
		err = s.kvDelete(ctx, keyMeta+keyToken(key))
	} else {
		err = s.kvPut(ctx, keyMeta+keyToken(key), slices.Clone(value))
	}
	if err != nil {
		return fmt.Errorf("jsstore: set meta: %w", err)
	}
	return nil
}

// Initialized reports whether SetInitialized was ever called.
func (s *Store) Initialized() (bool, error) {
	if err := s.checkOpen("initialized"); err != nil {
		return false, err
	}
	_, ok := s.state.get(keyInit)
	return ok, nil
}

// SetInitialized records that the first sweep finished; it keeps the time
// of the first call.
func (s *Store) SetInitialized() error {
	if err := s.checkOpen("set initialized"); err != nil {
		return err
	}
	if _, ok := s.state.get(keyInit); ok {
		return nil
	}
	ctx, cancel := s.opCtx()
	defer cancel()
	now := []byte(s.o.Now().UTC().Format(time.RFC3339Nano))
	rev, err := s.stateKV.Create(ctx, keyInit, now)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return nil
		}
		return fmt.Errorf("jsstore: set initialized: %w", err)
	}
	s.state.set(keyInit, now, rev, false)
	return nil
}

// PartitionOutbox is one delivery partition's view of the outbox: the
// method set of sink.Outbox, so a dispatcher per (sink, partition) runs on
// it. Offsets it reads ascend but are not dense. It reads the partition's
// event messages from the stream in order, remembering where the last
// Read ended, so a dispatcher reading on from there costs one message
// fetch per message (none for a message the cache holds).
type PartitionOutbox struct {
	s *Store
	p int

	mu    sync.Mutex
	next  uint64  // the offset a Read reading on starts at; 0: none yet
	after uint64  // stream sequence of the last message taken
	buf   []entry // that message's events not returned yet
	// A read that found nothing after the message at sequence
	// emptyAfter while the last head was at emptyHead: until the head
	// moves, reading again finds nothing either.
	emptyAfter, emptyHead uint64
}

// Partition returns partition p's outbox (0 <= p < Partitions()).
func (s *Store) Partition(p int) *PartitionOutbox {
	if p < 0 || p >= s.o.Partitions {
		panic(fmt.Sprintf("jsstore: partition %d out of range [0,%d)", p, s.o.Partitions))
	}
	return &PartitionOutbox{s: s, p: p}
}

// Read returns up to limit of the partition's events with offset >= from,
// in offset order.
func (o *PartitionOutbox) Read(ctx context.Context, from uint64, limit int) ([]diff.Event, error) {
	if err := o.s.checkOpen("read"); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = store.DefaultLimit
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	floor, _ := o.s.floorHead()
	from = max(from, floor+1)
	// Reading on (or a little further, within the message at hand) needs
	// no search.
	if o.next == 0 || from < o.next || from > o.next && (len(o.buf) == 0 || o.buf[len(o.buf)-1].off < from) {
		seq, err := o.s.locate(ctx, o.p, from)
		if err != nil {
			return nil, err
		}
		o.after, o.buf = seq-1, nil
	}
	headSeq := o.s.lastHeadSeq()
	var out []entry
	for len(out) < limit {
		if len(o.buf) == 0 {
			// At the end of what is committed, a read asks the server
			// only once per commit, and not at all for this replica's
			// own batches.
			if o.emptyAfter == o.after && o.emptyHead == headSeq || o.s.cache.noneAfter(o.p, o.after, headSeq) {
				break
			}
			m, err := o.s.fetch(ctx, o.p, o.after+1)
			if err != nil {
				o.next = 0
				return nil, err
			}
			if m == nil {
				o.emptyAfter, o.emptyHead = o.after, headSeq
				break
			}
			o.after, o.buf = m.seq, m.evs
		}
		e := o.buf[0]
		o.buf = o.buf[1:]
		if e.off >= from {
			out = append(out, e)
		}
	}
	o.next = from
	if len(out) > 0 {
		o.next = out[len(out)-1].off + 1
	}
	return decodeAll(ctx, out)
}

// Cursor returns the sink's cursor in this partition.
func (o *PartitionOutbox) Cursor(sink string) (uint64, error) {
	if err := o.s.checkOpen("cursor"); err != nil {
		return 0, err
	}
	return o.s.partCursor(sink, o.p), nil
}

// SetCursor persists the sink's cursor in this partition as an operator's
// write: unconditionally, bumping the record's generation (see
// setPartCursor). A dispatcher that owns the partition writes with
// Store.SetCursorAs instead.
func (o *PartitionOutbox) SetCursor(sink string, offset uint64) error {
	if err := o.s.checkOpen("set cursor"); err != nil {
		return err
	}
	if err := checkSink(sink); err != nil {
		return fmt.Errorf("jsstore: set cursor: %w", err)
	}
	return o.s.setPartCursor(sink, o.p, offset)
}

// DeadLetter records that the sink gave up on the event at offset.
func (o *PartitionOutbox) DeadLetter(sink string, offset uint64, attempts int, lastErr string) error {
	return o.s.DeadLetter(sink, offset, attempts, lastErr)
}

// Notify returns a new subscription woken after each commit that
// appended events (to any partition), until ctx ends.
func (o *PartitionOutbox) Notify(ctx context.Context) <-chan struct{} { return o.s.Notify(ctx) }
