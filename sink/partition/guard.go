package partition

// The fenced outbox of one claimed partition: cursor reads and writes
// through the Assignment's record, compare-and-set on the owner's
// generation, and what a fenced owner answers from then on.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/sink"
)

// errFenced is what a fenced partition's outbox answers from then on.
var errFenced = errors.New("partition taken by another replica: this dispatcher delivers nothing more")

// fencedOutbox is a partition's outbox for the one dispatcher that
// claimed it at an owner generation: it reads and writes the cursor
// through the Assignment's record, compare-and-set on that generation.
// A refused write means either an operator's rewind (the record still
// names this replica, at a later generation): the write is dropped, the
// dispatcher told to reread, and writes wait until it has; or the
// partition was taken (fenced): the dispatcher is stopped at once, reads
// and dead letters fail, and no cursor is written any more.
//
// With the cursor it keeps the offsets above it that are done: delivered
// or dead-lettered (it is the dispatcher's Observer) while an earlier
// event of another task was not. They are written with every cursor, and
// the dispatcher's Filter skips those it read with the cursor, so the
// next owner does not deliver again what the last one did past its
// cursor.
type fencedOutbox struct {
	sink.Outbox      // reads, dead letters, notices
	sink.NopObserver // but Delivered and DeadLettered
	store            Assignment
	self             string
	part             int
	rewound          func()
	fence            func()

	mu     sync.Mutex
	gen    uint64
	last   uint64          // the cursor last read or written
	read   bool            // the cursor was read
	done   map[uint64]bool // offsets done above the cursor
	stale  bool            // a rewind moved the record on: writes wait for a reread
	fenced bool
}

func newFencedOutbox(out sink.Outbox, store Assignment, self string, part int, gen uint64, rewound, fence func()) *fencedOutbox {
	return &fencedOutbox{Outbox: out, store: store, self: self, part: part, gen: gen, rewound: rewound, fence: fence, done: map[uint64]bool{}}
}

// state returns the generation held and whether the outbox was fenced.
func (f *fencedOutbox) state() (gen uint64, fenced bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gen, f.fenced
}

// Read reads the partition's events, unless fenced.
func (f *fencedOutbox) Read(ctx context.Context, from uint64, limit int) ([]diff.Event, error) {
	if _, fenced := f.state(); fenced {
		return nil, errFenced
	}
	return f.Outbox.Read(ctx, from, limit)
}

// DeadLetter records a dead letter, unless fenced.
func (f *fencedOutbox) DeadLetter(name string, offset uint64, attempts int, lastErr string) error {
	if _, fenced := f.state(); fenced {
		return errFenced
	}
	return f.Outbox.DeadLetter(name, offset, attempts, lastErr)
}

// Cursor reads the partition's cursor and the offsets done above it; when
// the record still names this replica at the generation held or a later
// one (a rewind's), that generation is held from now on.
func (f *fencedOutbox) Cursor(name string) (uint64, error) {
	off, done, owner, gen, err := f.store.CursorOf(name, f.part)
	if err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if owner == f.self && gen >= f.gen && !f.fenced {
		f.gen, f.stale = gen, false
	}
	f.last, f.read = off, true
	clear(f.done)
	for _, o := range done {
		f.done[o] = true
	}
	return off, nil
}

// SetCursor writes the cursor, with the offsets done above it, while the
// partition is this replica's at the generation held.
func (f *fencedOutbox) SetCursor(name string, offset uint64) error {
	f.mu.Lock()
	gen, stale, fenced := f.gen, f.stale, f.fenced
	var done []uint64
	for o := range f.done {
		if o <= offset {
			delete(f.done, o)
		} else {
			done = append(done, o)
		}
	}
	f.mu.Unlock()
	switch {
	case fenced:
		return errFenced
	case stale:
		return nil
	}
	slices.Sort(done)
	ok, owner, now, err := f.store.SetCursorAs(name, f.part, gen, offset, done)
	if err != nil {
		return err
	}
	f.mu.Lock()
	if ok {
		f.last = offset
		f.mu.Unlock()
		return nil
	}
	if owner == f.self && now > gen {
		f.stale = true
		f.mu.Unlock()
		f.rewound()
		return nil
	}
	f.fenced = true
	f.mu.Unlock()
	f.fence()
	return fmt.Errorf("partition %d: cursor %d not written: held by %q at generation %d, not this replica at %d: %w",
		f.part, offset, owner, now, gen, errFenced)
}

// flushLast writes the partition's last cursor, once its dispatcher
// stopped: watermark (the dispatcher's last, which its own final write may
// have failed to store) or the cursor last written if higher, with the
// offsets done above it now (the dispatcher writes only when its cursor
// moves, so its last write may lack events done since, those ahead of one
// still under way). It writes nothing when the cursor was never read (the
// dispatcher did not start), and when fenced.
func (f *fencedOutbox) flushLast(name string, watermark uint64) error {
	f.mu.Lock()
	last, read := f.last, f.read
	f.mu.Unlock()
	if !read {
		return nil
	}
	return f.SetCursor(name, max(last, watermark))
}

// filter returns the dispatcher's Filter: next's, and none of the offsets
// the last owner did above the cursor read.
func (f *fencedOutbox) filter(next sink.Filter) sink.Filter {
	return func(ev *diff.Event) bool {
		f.mu.Lock()
		done := f.done[ev.Offset]
		f.mu.Unlock()
		return !done && (next == nil || next(ev))
	}
}

func (f *fencedOutbox) markDone(off uint64) {
	f.mu.Lock()
	f.done[off] = true
	f.mu.Unlock()
}

// Delivered implements sink.Observer: ev is done.
func (f *fencedOutbox) Delivered(_ string, ev *diff.Event, _ time.Duration) { f.markDone(ev.Offset) }

// DeadLettered implements sink.Observer: ev is done.
func (f *fencedOutbox) DeadLettered(_ string, ev *diff.Event, _ error) { f.markDone(ev.Offset) }
