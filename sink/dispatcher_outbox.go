package sink

// The store side of a Dispatcher: the Outbox interface it reads events from
// and writes cursors and dead letters to, and a session's cursor flusher,
// which persists the contiguous watermark every CursorFlush.

import (
	"context"
	"fmt"
	"time"

	"github.com/incs-relay/incs-relay/diff"
)

// Outbox is the part of the store a Dispatcher uses; every store.Store implements
// it. All methods are called from several goroutines of one Dispatcher and
// from several Dispatchers at once.
type Outbox interface {
	// Read returns up to limit events with offset >= from, in offset
	// order, with Body and StoredAt set. It returns an empty slice when
	// there are none.
	Read(ctx context.Context, from uint64, limit int) ([]diff.Event, error)
	// Cursor returns the offset through which the sink has every event
	// delivered or dead-lettered; 0 means none.
	Cursor(sink string) (uint64, error)
	// SetCursor persists the sink's cursor. It must accept a lower value
	// than the current one (Rewind relies on that).
	SetCursor(sink string, offset uint64) error
	// DeadLetter records that the sink gave up on the event at offset.
	DeadLetter(sink string, offset uint64, attempts int, lastErr string) error
	// Notify returns a new subscription: a channel (buffered 1, sent to
	// without blocking) that receives after each commit that appended
	// events. The subscription lasts until ctx ends: then the store drops
	// it and sends nothing more on the channel (which it does not close).
	// Pass a context that ends when the consumer stops (a dispatcher its
	// Run's), or every call leaks one subscription for the store's life.
	Notify(ctx context.Context) <-chan struct{}
}

// flush persists the watermark if it moved.
func (s *dispatchSession) flush() error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	w := s.watermark.Load()
	if w == s.persisted.Load() {
		return nil
	}
	if err := s.d.cfg.Outbox.SetCursor(s.d.name, w); err != nil {
		return fmt.Errorf("dispatcher %s: persist cursor %d: %w", s.d.name, w, err)
	}
	s.persisted.Store(w)
	s.d.mu.Lock()
	s.d.st.Persisted = w
	s.d.mu.Unlock()
	return nil
}

func (s *dispatchSession) flushLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.d.cfg.CursorFlush)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if err := s.flush(); err != nil {
				s.d.log.Error().Err(err).Msg("persist cursor")
			}
		}
	}
}
