// Committing a batch despite lost answers: a commit that got no reply
// (its node died, the connection dropped) is sent again while this
// replica leads, and one an earlier attempt stored is counted once.

package jsstore

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// commitAttempts bounds how often flush sends one batch again after a
// commit failed without an answer (timeout, lost connection); every
// attempt also needs the lease still held.
const commitAttempts = 5

// commit publishes msgs, a batch ending with the head message for head
// (or, when sent is not "", only its commit: the rest went as batch
// sent), and returns the stream sequence of its commit. A commit that got no
// answer (its node died, the connection dropped) is sent again while this
// replica leads, at most commitAttempts times. Sending it again is safe:
// every attempt expects the same last head message, so the server stores
// at most one of them; when a later attempt is refused because the head
// moved, and the head the tail then reads is this batch's (only this
// leader writes heads under its epoch), an earlier attempt was stored and
// its answer lost: that is a success, not a duplicate.
func (b *batcher) commit(ctx context.Context, msgs []outMsg, head uint64, sent string) (uint64, error) {
	for attempt := 1; ; attempt++ {
		var seq uint64
		var err error
		if attempt == 1 && sent != "" {
			seq, err = b.s.sendCommit(ctx, b.lead, sent, len(msgs), msgs[len(msgs)-1])
		} else {
			seq, err = b.s.publishBatch(ctx, b.lead, msgs)
		}
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
	m, err := s.lastMsg(ctx, s.subj+"head")
	if err != nil || m.Sequence <= headSeq || string(m.Data) != strconv.FormatUint(head, 10) {
		return 0, false
	}
	e, err := s.lastMsg(ctx, s.subj+"epoch")
	if err != nil || e.Sequence != lead.epochSeq {
		return 0, false
	}
	return m.Sequence, true
}

// waitConnected waits until the connection is up again (or closed), at
// most d.
func (s *Store) waitConnected(ctx context.Context, d time.Duration) {
	up := s.nc.StatusChanged(nats.CONNECTED, nats.CLOSED)
	defer s.nc.RemoveStatusListener(up)
	if s.nc.IsConnected() || s.nc.IsClosed() {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-up:
	case <-t.C:
	case <-ctx.Done():
	}
}
