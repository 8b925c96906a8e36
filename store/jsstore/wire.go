// The wire protocol of an atomic batch: its headers, the messages
// (outMsg) as sent with their batch id, sequence and expected-sequence
// fencing headers, the body published ahead of the commit, and the commit
// request with its reply (pubAck), checked against what was sent.

package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Headers of the atomic batch publish and of the server's expectations.
// nats.go has no batch API; the protocol is these headers on plain
// publishes (the commit message is a request and gets the PubAck).
//
// github.com/synadia-io/orbit.go/jetstreamext v0.4.0 publishes atomic
// batches (PublishMsgBatch; BatchPublisher's AddMsg, then CommitMsg, would
// fit a pipelined commit) and keeps per-message headers (Nats-Rollup, the
// expected last subject sequence), but we keep ours (evaluated 2026-12):
//   - a reply for another batch or count is its ErrInvalidBatchAck, which
//     names neither, and it drops a reply it cannot decode
//     (jetstream.ErrInvalidJSAck): commitReply names both, and the reply;
//   - it needs nats.go v1.56.0 (we are on v1.55.0, with nkeys and x/crypto,
//     x/sys, x/text moving too) for the whole module;
//   - by default it waits for an ack of a batch's first message, a round
//     trip more per batch (BatchFlowControl{AckFirst: false} turns it off);
//   - it does not check MaxBatch, nor does it know of a lost answer, a
//     dropped connection or a resent commit: publishBatch, sendCommit and
//     commit would stay as they are, saving some 25 lines (batchMsg,
//     sendBody).
//
// Speed is no reason to move: one batch of 1 KiB messages on a
// single-node file stream, 6 runs each on 2 cores at a load average of
// 12 (so the spread is wide; BenchmarkPublishBatch, a scratch benchmark
// not kept): 500 messages, ours 7.4k-12.0k msgs/s, jetstreamext
// 8.9k-18.5k (default) and 9.5k-15.7k (AckFirst off); 10 messages, ours
// 12-31 ms a batch, jetstreamext 22-32 ms and 24-37 ms.
const (
	hdrBatchID       = "Nats-Batch-Id"
	hdrBatchSeq      = "Nats-Batch-Sequence"
	hdrBatchCommit   = "Nats-Batch-Commit"
	hdrExpSubjSeq    = "Nats-Expected-Last-Subject-Sequence"
	hdrExpSubjSeqFor = "Nats-Expected-Last-Subject-Sequence-Subject"
	hdrRollup        = "Nats-Rollup"
)

// commitWait bounds the wait for a batch's PubAck, and then for the tail
// to read the batch: half a lease, so a commit lost with a dying node
// fails, and is sent again, well within the lease (before: a fixed 10s,
// longer than a 2s lease, so storing paused 9-10s when a node died under
// a commit). A lost connection fails the commit at once (publishBatch).
func (s *Store) commitWait() time.Duration { return s.o.Lease / 2 }

// dropAck, when set (tests), discards the PubAck of a commit the server
// stored, as a connection lost at that moment would.
var dropAck func() bool

// outMsg is one message of a batch.
type outMsg struct {
	subj string
	hdr  nats.Header
	data []byte
	kind string // a rolled-up message's kind: "seen" (an Ingest under way stages it, Store.staged), "rule", "rtask", ...
	task int64  // the task of a rolled-up message
	// evs are an event message's events as packed (packEvents): the
	// cache takes them once the batch committed, without parsing data.
	evs []entry
	// wire, when set, is what is published instead of data: an event
	// message's frames or a seen pack's records compressed (packEvents,
	// packMsgs, compressFrames).
	wire []byte
	// recs are a seen pack's records (packMsgs): an Ingest under way
	// stages them, and the view takes them without parsing data.
	recs []packRec
}

// pubAck is the server's answer to a batch's commit.
type pubAck struct {
	Error  *jetstream.APIError `json:"error,omitempty"`
	Stream string              `json:"stream"`
	Seq    uint64              `json:"seq"`
	Batch  string              `json:"batch,omitempty"`
	Count  int                 `json:"count,omitempty"`
}

// publishBatch stores msgs as one atomic batch, each message expecting
// lead's epoch record as the last on the epoch subject, and returns the
// commit's stream sequence. The last message is the commit.
func (s *Store) publishBatch(ctx context.Context, lead *leadership, msgs []outMsg) (uint64, error) {
	if len(msgs) == 0 || len(msgs) > MaxBatch {
		return 0, fmt.Errorf("batch of %d messages", len(msgs))
	}
	id := nuid.Next()
	if err := s.sendBody(lead, id, msgs[:len(msgs)-1]); err != nil {
		return 0, err
	}
	return s.sendCommit(ctx, lead, id, len(msgs), msgs[len(msgs)-1])
}

// batchMsg is m as message i (from 0) of batch id.
func (s *Store) batchMsg(lead *leadership, id string, i int, m outMsg) *nats.Msg {
	nm := &nats.Msg{Subject: m.subj, Header: m.hdr, Data: m.data}
	if m.wire != nil {
		nm.Data = m.wire
	}
	if nm.Header == nil {
		nm.Header = nats.Header{}
	}
	nm.Header[hdrBatchID] = []string{id}
	nm.Header[hdrBatchSeq] = []string{strconv.Itoa(i + 1)}
	if _, ok := nm.Header[hdrExpSubjSeq]; !ok {
		nm.Header[hdrExpSubjSeq] = []string{strconv.FormatUint(lead.epochSeq, 10)}
		nm.Header[hdrExpSubjSeqFor] = []string{s.subj + "epoch"}
	}
	return nm
}

// sendBody publishes the messages of batch id before its commit: the
// server keeps them apart until the commit arrives, and drops them if it
// never does.
func (s *Store) sendBody(lead *leadership, id string, msgs []outMsg) error {
	for i, m := range msgs {
		if err := s.nc.PublishMsg(s.batchMsg(lead, id, i, m)); err != nil {
			return fmt.Errorf("%w: %w", errNoAck, err) // nothing committed: safe to send again
		}
	}
	return nil
}

// sendCommit sends last as message n, the commit, of batch id and
// returns the commit's stream sequence. It waits for the answer at most
// commitWait, and not at all once the connection drops: a batch sent to
// a node that died gets no answer.
func (s *Store) sendCommit(ctx context.Context, lead *leadership, id string, n int, last outMsg) (uint64, error) {
	cctx, cancel := context.WithTimeout(ctx, s.commitWait())
	defer cancel()
	status := s.nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	defer s.nc.RemoveStatusListener(status)
	go func() {
		select {
		case <-status:
			cancel()
		case <-cctx.Done():
		}
	}()
	nm := s.batchMsg(lead, id, n-1, last)
	nm.Header[hdrBatchCommit] = []string{"1"}
	resp, err := s.nc.RequestMsgWithContext(cctx, nm)
	if err == nil && dropAck != nil && dropAck() {
		err = errNoAck
	}
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, errNoAck) {
			// Timed out, cut by a lost connection, or refused by the
			// client: the batch may be stored or not.
			err = fmt.Errorf("%w: %w", errNoAck, err)
		}
		return 0, fmt.Errorf("batch commit: %w", err)
	}
	return commitReply(resp.Data, id, n)
}

// commitReply returns the commit's stream sequence from its reply, data,
// to batch id of n messages: the server's refusal as its error, and an
// error naming both when the reply is for another batch or count.
func commitReply(data []byte, id string, n int) (uint64, error) {
	var ack pubAck
	if err := json.Unmarshal(data, &ack); err != nil {
		return 0, fmt.Errorf("batch commit: bad reply %q: %w", data, err)
	}
	if ack.Error != nil {
		return 0, ack.Error
	}
	if ack.Batch != id || ack.Count != n {
		return 0, fmt.Errorf("batch commit: the reply is for batch %q of %d messages, but %q of %d was sent", ack.Batch, ack.Count, id, n)
	}
	return ack.Seq, nil
}

// errNoAck is a commit that got no answer: the server may have stored it
// or not.
var errNoAck = errors.New("the batch got no answer (timeout or connection lost)")
