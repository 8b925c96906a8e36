// Renewing the leader lease: the compare-and-set publish that carries
// the TTL, and the verdict on its outcome (renewed, lost to another
// replica, lapsed, or retry at the next tick).

package jsstore

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// renew extends the lease with a compare-and-set publish that carries the
// TTL: kv.Update would drop the key's TTL (see TestQuirkUpdateDropsTTL).
func (s *Store) renew(ctx context.Context) {
	s.leadMu.Lock()
	l := s.lead
	s.leadMu.Unlock()
	if l == nil {
		return
	}
	val, _ := json.Marshal(leaseVal{Leader: s.o.ReplicaID, Hash: s.o.ConfigHash})
	started := s.o.Now()
	rctx, cancel := context.WithTimeout(ctx, s.tick())
	ack, err := s.js.PublishMsg(rctx, &nats.Msg{Subject: "$KV." + s.name + "-lease." + leaseKey, Data: val},
		jetstream.WithExpectLastSequencePerSubject(l.leaseRev), jetstream.WithMsgTTL(s.o.Lease))
	cancel()
	switch {
	case err == nil:
		s.leadMu.Lock()
		if s.lead != nil {
			s.lead.leaseRev = ack.Sequence
			s.lead.until = started.Add(s.holdFor())
		}
		s.leadMu.Unlock()
	case isWrongLastSeq(err):
		s.stepDown("lease lost: another replica holds it")
	case !s.o.Now().Before(l.until):
		s.stepDown(fmt.Sprintf("lease lapsed: renewal failing: %v", err))
	default:
		s.log.Warn().Err(err).Msg("jsstore: lease renewal failed; retrying")
	}
}
