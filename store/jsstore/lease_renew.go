// Renewing the leader lease: the compare-and-set publish that carries
// the TTL, and the verdict on its outcome. A renewal that got no reply (a
// timeout, no responders, the connection dropped while waiting) may be
// stored or not: the lease key, read back from its stream's leader, tells
// which, so a lost reply costs neither a step-down nor a lease without
// polling (as commit.go does for commits). Also the test hook that loses
// renewals.

package jsstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// renew extends the lease with a compare-and-set publish that carries the
// TTL: kv.Update would drop the key's TTL (see TestQuirkUpdateDropsTTL).
// When the publish fails it reads the key back (readLease) and decides:
//
//   - the key holds this renewal's value (its nonce) past the revision
//     renewed from: stored, its reply lost; lead on from its revision and
//     count on the lease until holdFor after this renewal was sent, as if
//     the reply had come;
//   - it holds an earlier renewal of this leadership (its reply and
//     read-back were lost, so this compare-and-set was refused): take its
//     revision, to renew from it at the next tick, but count on the lease
//     no longer than before: when that renewal was sent is not known;
//   - it moved on to something else (another replica's lease, a delete
//     marker, nothing): step down;
//   - the read-back failed too: as before, step down if the server
//     refused the renewal's expected revision or the lease lapsed
//     locally, else retry at the next tick.
//
// Why this keeps at most one leader: another replica leads only after its
// create of the key succeeds, which the server refuses while the key
// holds a value, that is until the TTL of the last renewal stored runs
// out, a lease after the server stored it. A renewal is only counted on
// when its exact value (its nonce) is seen stored past the revision it
// expected: it was sent, and so stored, no earlier than started, so the
// key lives until started + Lease at least, and this replica stops
// leading at started + holdFor, a tenth of a lease sooner, exactly as for
// a renewal whose reply came. Nothing else extends the lease: a read-back
// that fails, or shows an earlier renewal, leaves until as it was, so the
// leader never counts on the lease past holdFor after the last renewal it
// knows was sent and stored, whatever replies are lost. A stale read could
// only show less than the server stored, never a renewal it did not.
// Fencing stays the backstop for a leader paused past that moment.
func (s *Store) renew(ctx context.Context) {
	s.leadMu.Lock()
	l := s.lead
	s.leadMu.Unlock()
	if l == nil {
		return
	}
	val, _ := json.Marshal(leaseVal{Leader: s.o.ReplicaID, Hash: s.o.ConfigHash, Renewal: rand.Uint64()})
	started := s.o.Now()
	loss := lossNone
	if loseRenewal != nil {
		loss = loseRenewal()
	}
	rev, err := s.publishRenewal(ctx, l.leaseRev, val, loss)
	if err == nil {
		s.renewed(l, rev, &started)
		return
	}
	if ctx.Err() != nil {
		return // Run is ending: release deals with the lease
	}
	last, rerr := s.readLease(ctx)
	if loss == lossReplyAndReadBack {
		rerr = errors.New("test: read-back lost")
	}
	// moved: the key went past the revision renewed from; lv is its
	// value then (none for a delete marker).
	moved := rerr == nil && last.seq > l.leaseRev
	var lv leaseVal
	if moved {
		_ = json.Unmarshal(last.data, &lv)
	}
	switch {
	case moved && bytes.Equal(last.data, val):
		s.log.Info().Err(err).Uint64("revision", last.seq).Msg("jsstore: lease renewal stored, its reply lost; leading on")
		s.renewed(l, last.seq, &started)
	case moved && lv.Leader == s.o.ReplicaID:
		// Only this leadership writes its id past l.leaseRev: its
		// creating revision is at most l.leaseRev, and while it leads
		// it writes only renewals.
		s.log.Info().Err(err).Uint64("revision", last.seq).Msg("jsstore: an earlier lease renewal was stored, its reply lost; renewing from it")
		s.renewed(l, last.seq, nil)
	case moved && lv.Leader != "":
		s.stepDown(fmt.Sprintf("lease lost: %s holds it", lv.Leader))
	case moved, errors.Is(rerr, jetstream.ErrMsgNotFound):
		s.stepDown("lease lost: it lapsed on the server")
	case isWrongLastSeq(err):
		s.stepDown("lease lost: another replica holds it")
	case !s.o.Now().Before(l.until):
		s.stepDown(fmt.Sprintf("lease lapsed: renewal failing: %v", err))
	default:
		s.log.Warn().Err(err).AnErr("read_back", rerr).Msg("jsstore: lease renewal failed; retrying")
	}
}

// publishRenewal sends the renewal val expecting the lease key at rev and
// returns the revision it was stored at. loss is the test hook's.
func (s *Store) publishRenewal(ctx context.Context, rev uint64, val []byte, loss renewLoss) (uint64, error) {
	if loss == lossRequest {
		return 0, fmt.Errorf("test: renewal request lost: %w", context.DeadlineExceeded)
	}
	ctx, cancel := context.WithTimeout(ctx, s.tick())
	defer cancel()
	ack, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: "$KV." + s.name + "-lease." + leaseKey, Data: val},
		jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(s.o.Lease))
	if err != nil {
		return 0, err
	}
	if loss != lossNone {
		return 0, fmt.Errorf("test: renewal reply lost: %w", context.DeadlineExceeded)
	}
	return ack.Sequence, nil
}

// renewed records a renewal of leadership l stored at revision rev: this
// replica renews from rev next, and, when started (when the renewal was
// sent) is known, counts on the lease until holdFor after it. A
// leadership that ended or began again meanwhile is left alone.
func (s *Store) renewed(l *leadership, rev uint64, started *time.Time) {
	s.leadMu.Lock()
	defer s.leadMu.Unlock()
	if s.lead == nil || s.lead.epochSeq != l.epochSeq {
		return
	}
	s.lead.leaseRev = rev
	if started != nil {
		if until := started.Add(s.holdFor()); until.After(s.lead.until) {
			s.lead.until = until
		}
	}
}

// leaseMsg is the lease key's last message: its revision and value (empty
// for a delete marker).
type leaseMsg struct {
	seq  uint64
	data []byte
}

// readLease reads the lease key's last message with a get that only the
// lease stream's leader answers (STREAM.MSG.GET), not kv.Get's direct get,
// which any replica answers and which may be stale (see
// TestQuirkReplicatedCAS). Its error wraps jetstream.ErrMsgNotFound when
// the key has no message left.
func (s *Store) readLease(ctx context.Context) (leaseMsg, error) {
	ctx, cancel := context.WithTimeout(ctx, s.tick())
	defer cancel()
	req, _ := json.Marshal(struct {
		LastBySubj string `json:"last_by_subj"`
	}{"$KV." + s.name + "-lease." + leaseKey})
	m, err := s.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+s.name+"-lease", req)
	if err != nil {
		return leaseMsg{}, err
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Seq  uint64 `json:"seq"`
			Data []byte `json:"data"`
		} `json:"message"`
	}
	switch err := json.Unmarshal(m.Data, &resp); {
	case err != nil:
		return leaseMsg{}, fmt.Errorf("lease read-back: %w", err)
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return leaseMsg{}, fmt.Errorf("lease read-back: %w", jetstream.ErrMsgNotFound)
	case resp.Error != nil:
		return leaseMsg{}, fmt.Errorf("lease read-back: %w", resp.Error)
	case resp.Message == nil:
		return leaseMsg{}, errors.New("lease read-back: an answer without a message")
	}
	return leaseMsg{seq: resp.Message.Seq, data: resp.Message.Data}, nil
}

// renewLoss is what the test hook loseRenewal loses of one renewal, as a
// connection dropped at that moment would.
type renewLoss int

const (
	lossNone             renewLoss = iota
	lossRequest                    // the renewal never reaches the server
	lossReply                      // the server stores it; its reply is lost
	lossReplyAndReadBack           // as lossReply, and the read-back fails too
)

// loseRenewal, when set (tests), says what each renewal loses, as wire.go's
// dropAck does for commits.
var loseRenewal func() renewLoss
