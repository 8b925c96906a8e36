// Prune: raising the prune floor (a rolled-up note every replica tails)
// and purging each partition's event messages below it, by subject and
// sequence; and, on the leader, deleting old seen records.

package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/incs-relay/incs-relay/store"
)

// PruneStatus is what the pruning of events reports.
type PruneStatus struct {
	// PurgeFailures counts the purges of a partition's event messages
	// the server refused or did not answer; each is retried at the next
	// Prune.
	PurgeFailures uint64
	// Floor is the prune floor: events at or below it are pruned.
	Floor uint64
}

// pruneState is the Store's pruning bookkeeping.
type pruneState struct {
	failures atomic.Uint64
	purged   atomic.Uint64 // the floor every partition was purged up to
}

// PruneStatus returns what pruning did so far.
func (s *Store) PruneStatus() PruneStatus {
	floor, _ := s.floorHead()
	return PruneStatus{PurgeFailures: s.prune.failures.Load(), Floor: floor}
}

// Prune, on the leader, prunes the events every sink in p.Sinks has
// passed and that are older than p.Retention, and deletes (as an append)
// the seen records of tasks created more than p.Lookback+24h ago. Pruning
// raises the prune floor, below which no replica reads an event, and then
// purges each partition's event messages wholly below it; several events
// share a message, so a few pruned ones may stay stored until their
// message goes. Only the cursors of the sinks in p.Sinks hold pruning
// back; a dead letter, of any sink, listed or not, does not: its event
// was copied aside when it was recorded. On other replicas Prune does
// nothing.
func (s *Store) Prune(ctx context.Context, p store.PruneOptions) (store.PruneResult, error) {
	var res store.PruneResult
	if err := s.checkOpen("prune"); err != nil {
		return res, err
	}
	if !s.IsLeader() {
		return res, nil
	}
	now := p.Now
	if now.IsZero() {
		now = s.o.Now()
	}
	if p.Retention > 0 {
		n, err := s.pruneEvents(ctx, p.Sinks, now.Add(-p.Retention).UnixNano())
		res.Events = n
		if err != nil {
			return res, err
		}
	}
	if p.Lookback > 0 {
		n, err := s.pruneSeen(ctx, now.Add(-p.Lookback-24*time.Hour).Unix())
		res.Tasks = n
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// pruneEvents raises the floor to the lowest of the sinks' cursors and
// the last event committed before cutoff (unix ns), then purges.
func (s *Store) pruneEvents(ctx context.Context, sinks []string, cutoff int64) (int, error) {
	floor, head := s.floorHead()
	upto := head
	for _, sink := range sinks {
		c, err := s.cursor(ctx, sink, nil)
		if err != nil {
			return 0, err
		}
		upto = min(upto, c)
	}
	since, err := s.offsetSince(ctx, cutoff)
	if err != nil {
		return 0, err
	}
	upto = min(upto, since-1)
	n := 0
	if upto > floor {
		first, err := s.first(ctx)
		if err != nil {
			return 0, err
		}
		body, _ := json.Marshal(pruneNote{Floor: upto})
		msg := &nats.Msg{Subject: s.subj + "pruned", Data: body, Header: nats.Header{hdrRollup: []string{"sub"}}}
		ack, err := s.js.PublishMsg(ctx, msg)
		if err != nil {
			return 0, fmt.Errorf("jsstore: prune: %w", err)
		}
		if err := s.v.waitApplied(ctx, ack.Sequence); err != nil {
			return 0, err
		}
		if first > 0 {
			n = int(upto - max(first, floor+1) + 1)
		}
		floor = upto
	}
	if s.prune.purged.Load() < floor {
		if err := s.purge(ctx, floor); err != nil {
			return n, err
		}
		s.prune.purged.Store(floor)
	}
	return n, ctx.Err()
}

// purgeStride is how many stream sequences one purge request spans at
// most: the server holds the stream while it deletes, so a purge of a
// million events' messages in one request held commits for over a second;
// in strides of this size each request is short and commits pass between
// them.
var purgeStride uint64 = 4096

// purge deletes every partition's event messages wholly at or below
// floor: each partition up to the message holding the lowest event above
// it, by subject and sequence, in requests of at most purgeStride
// sequences, each bounded by half a lease. It holds no lock of the
// view's. A failed purge is counted and left to the next Prune.
func (s *Store) purge(ctx context.Context, floor uint64) error {
	var first error
	for p := range s.o.Partitions {
		err := s.purgePart(ctx, p, floor)
		if err != nil {
			s.prune.failures.Add(1)
			s.log.Warn().Err(err).Int("partition", p).Msg("jsstore: prune: purging the pruned event messages failed; the next prune retries")
			if first == nil {
				first = fmt.Errorf("jsstore: prune: partition %d: %w", p, err)
			}
		}
	}
	return first
}

// purgePart purges partition p's event messages wholly at or below floor.
func (s *Store) purgePart(ctx context.Context, p int, floor uint64) error {
	keep, err := s.keepFrom(ctx, p, floor)
	if err != nil || keep <= 1 {
		return err
	}
	// The partition's oldest message, from the server: the cache may
	// still hold one purged before.
	oldest, err := s.getMsg(ctx, msgReq{Seq: 1, NextBySubj: s.evSubject(p)})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil || oldest.Sequence >= keep {
		return err
	}
	for upto := min(oldest.Sequence+purgeStride, keep); ; upto = min(upto+purgeStride, keep) {
		rctx, cancel := context.WithTimeout(ctx, s.commitWait())
		err := s.stream.Purge(rctx, jetstream.WithPurgeSubject(s.evSubject(p)), jetstream.WithPurgeSequence(upto))
		cancel()
		if err != nil || upto == keep {
			return err
		}
	}
}

// keepFrom returns the sequence of partition p's first event message
// holding an event above floor: every message of p before it is pruned
// whole. 1 keeps all.
func (s *Store) keepFrom(ctx context.Context, p int, floor uint64) (uint64, error) {
	seq, err := s.locate(ctx, p, floor+1)
	if err != nil {
		return 0, err
	}
	m, err := s.fetch(ctx, p, seq)
	switch {
	case err != nil || m == nil:
		return 1, err
	case m.last() > floor:
		return m.seq, nil
	}
	return m.seq + 1, nil
}

// pruneSeen deletes, in fenced batches, the seen records of tasks created
// before cutoff (unix seconds).
func (s *Store) pruneSeen(ctx context.Context, cutoff int64) (int, error) {
	var ids []int64
	s.v.mu.RLock()
	for id, e := range s.v.seen {
		if at, err := store.SeenCreatedAt(e.rec); err == nil && at != 0 && at < cutoff {
			ids = append(ids, id)
		}
	}
	s.v.mu.RUnlock()
	if len(ids) == 0 {
		return 0, nil
	}
	slices.Sort(ids)
	s.appendMu.Lock()
	defer s.appendMu.Unlock()
	s.drain()
	lead := s.leading()
	if lead == nil {
		return 0, nil
	}
	b := s.newBatcher(lead)
	n := 0
	for _, id := range ids {
		if err := b.add(ctx, nil, []outMsg{b.rollupMsg("seen", id, nil)}, func() { n++ }); err != nil {
			return n, err
		}
	}
	err := b.flush(ctx)
	return n, err
}
