// Pipelining of Ingest: a page's batch is sent and its commit awaited
// while the next Ingest prepares its own (pipeBatch, Store.inflight),
// diffing against the seen records the batch under way stages
// (Store.staged); that one commits only once the one before committed.

package jsstore

import (
	"context"
	"fmt"

	"github.com/nats-io/nuid"
)

// pipeBatch is an Ingest's batch whose commit is under way while the
// next Ingest prepares its own (Store.inflight): that one takes its
// offsets on from head, diffs against its seen records (Store.staged),
// sends its messages, and sends its commit once this one committed,
// expecting seq, the sequence of this one's head message.
type pipeBatch struct {
	done chan struct{} // closed when committed or failed
	head uint64        // the head once committed
	at   int64         // its events' commit time
	seq  uint64        // stream sequence of its head message (after done)
	err  error         // why it failed (after done)
}

func (p *pipeBatch) finished() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stagedSeen is a seen record in a batch not yet committed.
type stagedSeen struct {
	rec []byte
	by  *pipeBatch
}

// seenFor returns a task's seen record as the next batch must see it:
// from a batch under way (whole), else from the view (without its
// values, see seenEnt).
func (s *Store) seenFor(taskID int64) seenEnt {
	s.stagedMu.Lock()
	st, ok := s.staged[taskID]
	s.stagedMu.Unlock()
	if ok {
		return seenEnt{rec: st.rec}
	}
	return s.v.seenRecord(taskID)
}

// awaitPrev waits until the batch this one follows committed, and takes
// the sequence of its head message as the head to expect. If it failed,
// this batch, built on its offsets and seen records, fails too.
func (b *batcher) awaitPrev(ctx context.Context) error {
	p := b.prev
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return fmt.Errorf("jsstore: append: %w", ctx.Err())
	}
	if p.err != nil {
		return fmt.Errorf("jsstore: append: the batch before this one failed, so this one is not sent: %w", p.err)
	}
	b.prev, b.headSeq = nil, p.seq
	return nil
}

// flushPipelined is an Ingest's last flush. Under the append lock it
// sends the batch's messages but its commit, stages its seen records and
// makes it the batch under way; then it releases the lock (unlock), so
// the next Ingest prepares and sends its batch meanwhile, and commits
// once the batch before it committed.
func (b *batcher) flushPipelined(ctx context.Context, unlock func()) error {
	if len(b.msgs)+len(b.evs) == 0 {
		unlock()
		return nil
	}
	s := b.s
	msgs, head, pending := b.take()
	p := &pipeBatch{done: make(chan struct{}), head: head, at: b.at}
	id := nuid.Next()
	if err := s.sendBody(b.lead, id, msgs[:len(msgs)-1]); err != nil {
		id = "" // commit sends the whole batch again
	}
	s.stage(msgs, p)
	s.inflight = p
	unlock()

	err := b.awaitPrev(ctx)
	if err == nil {
		p.seq, err = b.commitApply(ctx, msgs, head, id, pending)
	}
	p.err = err
	s.stagedMu.Lock()
	for id, st := range s.staged {
		if st.by == p {
			delete(s.staged, id)
		}
	}
	s.stagedMu.Unlock()
	close(p.done)
	return err
}

// stage makes the seen records of msgs, batch p's, those the next
// Ingest diffs against until p committed: a removal's rolled-up message
// and the seen records in packs, not the rule states packed beside them
// (a compaction may rewrite those in an Ingest's batch).
func (s *Store) stage(msgs []outMsg, p *pipeBatch) {
	s.stagedMu.Lock()
	defer s.stagedMu.Unlock()
	for _, m := range msgs {
		if m.kind == "seen" {
			s.staged[m.task] = stagedSeen{rec: m.data, by: p}
		}
		for _, r := range m.recs {
			if r.kind == kindSeen {
				s.staged[r.task] = stagedSeen{rec: r.rec, by: p}
			}
		}
	}
}

// drain waits (append lock held) until the batch under way, if any,
// committed or failed.
func (s *Store) drain() {
	if p := s.inflight; p != nil {
		<-p.done
		s.inflight = nil
	}
}
