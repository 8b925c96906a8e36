// Reading single messages: from the stream's leader through the JSON API
// (getMsg, consistent: what the leader stored, the appends' checks and
// the catch-up read there), or for event messages by a direct get first.
// Direct gets: a stream with allow_direct answers
// "$JS.API.DIRECT.GET.<stream>" from any replica in sync, with the
// message's bytes as they are, where the leader's JSON API wraps them in
// base64 JSON (a fifth of a lagging sink's CPU went to decoding that).
// A replica may lag by the last commit, so a direct get that finds
// nothing is asked again of the leader.

package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// msgReq asks for one message: at Seq (or the first at or after it on
// NextBySubj), or the last on LastBySubj.
type msgReq struct {
	Seq        uint64 `json:"seq,omitempty"`
	NextBySubj string `json:"next_by_subj,omitempty"`
	LastBySubj string `json:"last_by_subj,omitempty"`
}

// msgResp is the leader's answer to a msgReq.
type msgResp struct {
	Error   *jetstream.APIError `json:"error,omitempty"`
	Message *struct {
		Subject string `json:"subject"`
		Seq     uint64 `json:"seq"`
		Data    []byte `json:"data,omitempty"`
	} `json:"message,omitempty"`
}

// requestWait bounds the wait for the answer to one request to the
// stream: a server that dies after it took a request never answers it,
// and a read whose context has no deadline (a dispatcher's) waited for
// ever, its partition delivering nothing more. After requestWait the
// request is sent again (a read is idempotent), for as long as the
// caller's context lasts, so a read still waits through a stream leader's
// election (several seconds). It is nats.go's own default for JetStream
// API requests. A variable for tests.
var requestWait = 5 * time.Second

// request sends one request to the stream's API and returns its answer,
// sending it again each requestWait without one until ctx ends.
func (s *Store) request(ctx context.Context, subject string, body []byte) (*nats.Msg, error) {
	for {
		rctx, cancel := context.WithTimeout(ctx, requestWait)
		m, err := s.nc.RequestWithContext(rctx, subject, body)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return m, err
		}
		s.log.Debug().Str("subject", subject).Dur("waited", requestWait).Msg("jsstore: no answer; asking again")
	}
}

// getMsg reads one message from the stream's leader. The stream allows
// direct gets, so nats.go's Stream.GetMsg would ask any replica: the
// appends' checks (the last head, the last epoch) must not read a replica
// that lags.
func (s *Store) getMsg(ctx context.Context, req msgReq) (*jetstream.RawStreamMsg, error) {
	body, _ := json.Marshal(req)
	r, err := s.request(ctx, "$JS.API.STREAM.MSG.GET."+s.name, body)
	if err != nil {
		return nil, err
	}
	var resp msgResp
	if err := json.Unmarshal(r.Data, &resp); err != nil {
		return nil, fmt.Errorf("reading a message: %w", err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return nil, jetstream.ErrMsgNotFound
	case resp.Error != nil:
		return nil, resp.Error
	case resp.Message == nil:
		return nil, jetstream.ErrInvalidJetStreamResponse
	}
	return &jetstream.RawStreamMsg{Subject: resp.Message.Subject, Sequence: resp.Message.Seq, Data: resp.Message.Data}, nil
}

// lastMsg reads the last message on subject from the stream's leader.
func (s *Store) lastMsg(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	return s.getMsg(ctx, msgReq{LastBySubj: subject})
}

// directState says whether direct gets work on the stream: allow_direct
// set, and not refused since.
type directState struct{ off atomic.Bool }

// getNext returns the first message on subject at or after seq, as fetch
// needs it: by a direct get, and from the leader (stream.GetMsg) when
// that finds nothing, fails, or the stream has no direct gets.
func (s *Store) getNext(ctx context.Context, seq uint64, subject string) (*jetstream.RawStreamMsg, error) {
	if !s.direct.off.Load() {
		raw, err := s.directGet(ctx, seq, subject)
		if err == nil {
			return raw, nil
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			if errors.Is(err, nats.ErrNoResponders) {
				s.direct.off.Store(true)
			}
			s.log.Debug().Err(err).Msg("jsstore: direct get; asking the stream's leader")
		}
	}
	return s.getMsg(ctx, msgReq{Seq: seq, NextBySubj: subject})
}

// directGet is one direct get.
func (s *Store) directGet(ctx context.Context, seq uint64, subject string) (*jetstream.RawStreamMsg, error) {
	body, _ := json.Marshal(msgReq{Seq: seq, NextBySubj: subject})
	r, err := s.request(ctx, "$JS.API.DIRECT.GET."+s.name, body)
	if err != nil {
		return nil, err
	}
	if len(r.Data) == 0 {
		switch status := r.Header.Get("Status"); status {
		case "404":
			return nil, jetstream.ErrMsgNotFound
		case "":
		default:
			return nil, fmt.Errorf("direct get: status %s %s", status, r.Header.Get("Description"))
		}
	}
	sq, err := strconv.ParseUint(r.Header.Get(jetstream.SequenceHeader), 10, 64)
	subj := r.Header.Get(jetstream.SubjectHeader)
	if err != nil || subj == "" {
		return nil, errors.New("direct get: an answer without its sequence or subject")
	}
	return &jetstream.RawStreamMsg{Subject: subj, Sequence: sq, Header: r.Header, Data: r.Data}, nil
}
