package chat

// The Batcher: keeps a chat sink within its rate limit by grouping
// bursts of events into digests.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/incs-relay/incs-relay/diff"
)

// ErrClosed is returned by Batcher.Deliver after Close.
var ErrClosed = errors.New("chat sink closed")

// Clock is the time source of a Batcher: the rate limiter reads Now and
// every wait is an AfterFunc, which runs f after d and returns a function
// that stops it (reporting whether it did). sink.Clock has the same
// methods.
type Clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// SendFunc posts one message carrying evs (one event, or a digest of
// several) and classifies the platform's answer.
type SendFunc func(ctx context.Context, evs []*diff.Event) error

// Batcher keeps a sink within its rate limit without dropping events. A
// Deliver that gets a token at once sends its event alone. Otherwise the
// event joins the pending digest, which reserved the next token; when that
// token is due, the digest is sent as one message and every Deliver waiting
// on it returns that message's result.
//
// A Batcher does not retry: a failed message is the failure of each of its
// events, for the caller's retry policy (the dispatcher's). The one
// exception is a digest the platform refused as a whole (a final error):
// the fault may lie in one event's content, so each Deliver waiting on it
// sends its event alone, at once within the limit, and returns that
// result; one bad event cannot take the others to the dead letters.
type Batcher struct {
	lim   *rate.Limiter
	max   int
	clock Clock
	final func(error) bool

	ctx    context.Context // ends on close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	pending *digest
}

type digest struct {
	evs     []*diff.Event
	send    SendFunc
	sending bool
	done    chan struct{}
	err     error
	split   bool // refused as a whole: each waiter sends its event alone
}

// NewBatcher returns a Batcher that sends within lim, listing at most max
// events in one digest, waiting on clock. final reports an error after
// which the same message must not be sent again (a permanent refusal).
func NewBatcher(lim *rate.Limiter, max int, clock Clock, final func(error) bool) *Batcher {
	ctx, cancel := context.WithCancel(context.Background())
	return &Batcher{lim: lim, max: max, clock: clock, final: final, ctx: ctx, cancel: cancel}
}

// Deliver sends ev through send, alone or in a digest, and returns the
// result of the message that carried it, or ctx's error, or ErrClosed.
func (b *Batcher) Deliver(ctx context.Context, ev *diff.Event, send SendFunc) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	if b.pending == nil && b.lim.AllowN(b.clock.Now(), 1) {
		b.mu.Unlock()
		return send(ctx, []*diff.Event{ev})
	}
	d := b.pending
	if d == nil || len(d.evs) >= b.max {
		d = &digest{send: send, done: make(chan struct{})}
		b.pending = d
		r := b.lim.ReserveN(b.clock.Now(), 1)
		b.wg.Add(1)
		go b.run(d, r)
	}
	d.evs = append(d.evs, ev)
	b.mu.Unlock()

	select {
	case <-d.done:
		return b.result(ctx, d, ev, send)
	case <-ctx.Done():
		b.mu.Lock()
		select {
		case <-d.done:
			b.mu.Unlock()
			return b.result(ctx, d, ev, send)
		default:
		}
		if !d.sending {
			d.evs = slices.DeleteFunc(d.evs, func(e *diff.Event) bool { return e == ev })
		}
		b.mu.Unlock()
		return ctx.Err()
	}
}

// result is what Deliver of ev returns once digest d is done.
func (b *Batcher) result(ctx context.Context, d *digest, ev *diff.Event, send SendFunc) error {
	if !d.split {
		return d.err
	}
	return b.sendAlone(ctx, ev, send)
}

// sendAlone waits for a token and sends ev alone.
func (b *Batcher) sendAlone(ctx context.Context, ev *diff.Event, send SendFunc) error {
	r := b.lim.ReserveN(b.clock.Now(), 1)
	if !r.OK() {
		return fmt.Errorf("rate limiter refused a reservation")
	}
	if err := b.wait(ctx, r); err != nil {
		return err
	}
	return send(ctx, []*diff.Event{ev})
}

// wait waits until reservation r is due, on the clock. It cancels r when
// ctx ends (returning its error) or the Batcher closes (ErrClosed).
func (b *Batcher) wait(ctx context.Context, r *rate.Reservation) error {
	d := r.DelayFrom(b.clock.Now())
	if d <= 0 {
		return nil
	}
	due := make(chan struct{})
	stop := b.clock.AfterFunc(d, func() { close(due) })
	select {
	case <-due:
		return nil
	case <-ctx.Done():
		stop()
		r.CancelAt(b.clock.Now())
		return ctx.Err()
	case <-b.ctx.Done():
		stop()
		r.CancelAt(b.clock.Now())
		return ErrClosed
	}
}

// run sends digest d once its reserved token is due.
func (b *Batcher) run(d *digest, r *rate.Reservation) {
	defer b.wg.Done()
	if !r.OK() {
		b.finish(d, nil, fmt.Errorf("rate limiter refused a reservation"))
		return
	}
	if err := b.wait(context.Background(), r); err != nil {
		b.finish(d, nil, err)
		return
	}
	b.mu.Lock()
	if b.pending == d {
		b.pending = nil
	}
	d.sending = true
	evs := slices.Clone(d.evs)
	b.mu.Unlock()
	if len(evs) == 0 { // every waiter gave up
		b.finish(d, nil, nil)
		return
	}
	err := d.send(b.ctx, evs)
	b.finish(d, evs, err)
}

func (b *Batcher) finish(d *digest, evs []*diff.Event, err error) {
	d.err = err
	d.split = len(evs) > 1 && err != nil && b.final(err)
	close(d.done)
}

// Close stops pending digests (their Deliver calls return ErrClosed) and
// waits for them up to ctx.
func (b *Batcher) Close(ctx context.Context) error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
