// Leadership on the append path: the lease as this replica holds it
// (leadership: epoch, the epoch record's sequence every append expects,
// until when the lease surely holds), the checks every append starts
// with (ErrNotLeader, the append lock), and the fencing verdict when the
// server refuses a batch's expected sequence (ErrFenced, or a head that
// moved). Winning and renewing the lease is lease.go's.

package jsstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// leadership is what a replica holding the lease appends with.
type leadership struct {
	epoch    uint64
	epochSeq uint64    // stream sequence of this leader's epoch record: every append expects it
	leaseRev uint64    // revision of the lease key as last written
	until    time.Time // the lease is surely held until then (local clock)
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

// isWrongLastSeq reports whether err is the server refusing an expected
// last sequence: 10071, or 10164 on replicated streams.
func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
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
	m, gerr := s.lastMsg(ctx, s.subj+"epoch")
	if gerr == nil && m.Sequence != lead.epochSeq {
		s.stepDown("fenced: a newer epoch record exists")
		return fmt.Errorf("jsstore: append: %w (%v)", ErrFenced, err)
	}
	if gerr != nil {
		return fmt.Errorf("jsstore: append: %w; reading the epoch: %v", err, gerr)
	}
	// The head moved under this leader (a batch stored whose answer was
	// lost): read it into the view, not waiting for the tail, which may
	// be recreating its consumer, and let the caller retry.
	if cerr := s.catchUp(ctx); cerr != nil {
		s.log.Debug().Err(cerr).Msg("jsstore: append: catching up after the head moved")
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
