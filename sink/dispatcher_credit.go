package sink

// The read-ahead of a dispatcher session: dispatchCredits bound the events
// held in memory, read but not yet done; readLoop takes credits to read the
// outbox, and the session gives one back for each event delivered,
// dead-lettered or filtered out.

import (
	"context"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// dispatchReadBatch is the most events one Outbox.Read returns.
const dispatchReadBatch = 256

// dispatchCredits bounds the read-ahead: the reader takes a credit per
// event read, the loop gives it back once the event is done.
type dispatchCredits struct {
	mu     sync.Mutex
	avail  int
	signal chan struct{} // buffered 1
}

// acquire waits until credits are free and takes up to n of them. It
// waits up to 2ms for at least low credits so that reads are not one event
// each; it returns 0 when stop is closed.
func (c *dispatchCredits) acquire(n, low int, stop <-chan struct{}) int {
	var (
		t       *time.Timer
		expired <-chan time.Time
		late    bool
	)
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		c.mu.Lock()
		avail := c.avail
		if avail >= low || (avail > 0 && late) {
			k := min(avail, n)
			c.avail -= k
			c.mu.Unlock()
			return k
		}
		c.mu.Unlock()
		if avail > 0 && t == nil {
			t = time.NewTimer(2 * time.Millisecond)
			expired = t.C
		}
		select {
		case <-c.signal:
		case <-expired:
			late = true
		case <-stop:
			return 0
		}
	}
}

func (c *dispatchCredits) release(n int) {
	c.mu.Lock()
	c.avail += n
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

// readLoop reads the outbox from offset from on into s.batches, within the
// read-ahead credits, waiting on notify when it caught up.
func (s *dispatchSession) readLoop(from uint64, notify <-chan struct{}) {
	defer s.wg.Done()
	d := s.d
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	low := min(dispatchReadBatch, d.cfg.ReadAhead/4)
	poll := time.NewTicker(2 * time.Second) // in case a notification is lost
	defer poll.Stop()
	var errBackOff *backoff.ExponentialBackOff // while reads fail
	pos := from
	for {
		n := s.credits.acquire(dispatchReadBatch, low, s.stop)
		if n == 0 {
			return
		}
		evs, err := d.cfg.Outbox.Read(ctx, pos, n)
		if err != nil {
			s.credits.release(n)
			if ctx.Err() != nil {
				return
			}
			d.log.Error().Err(err).Uint64("from", pos).Msg("read outbox")
			if errBackOff == nil {
				errBackOff = newStoreBackOff(d.cfg.Clock.Now)
			}
			if !sleep(d.cfg.Clock, errBackOff.NextBackOff(), s.stop) {
				return
			}
			continue
		}
		errBackOff = nil
		// Keep only events past pos, in order (a store bug must not
		// move the watermark backwards).
		k := 0
		for i := range evs {
			if evs[i].Offset >= pos {
				evs[k] = evs[i]
				pos = evs[i].Offset + 1
				k++
			}
		}
		evs = evs[:k]
		if k < n {
			s.credits.release(n - k)
		}
		if k > 0 {
			select {
			case s.batches <- evs:
			case <-s.stop:
				return
			}
		}
		if k < n {
			select {
			case <-notify:
			case <-poll.C:
			case <-s.stop:
				return
			}
		}
	}
}
