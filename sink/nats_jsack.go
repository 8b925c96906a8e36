package sink

// The JetStream ack tracker of the NATS sink: jsAcks routes the stream's
// publish acknowledgements to the deliveries waiting for them, and
// parsePubAck reads one.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// jsAcks routes JetStream acknowledgements to the deliveries waiting for
// them: one subscription on a private inbox, one entry per publish, keyed
// by the number that ends its reply subject. What jetstream.PublishMsgAsync
// does, without a JSON decode per ack and with a done callback instead of
// channels to wait on. A sweeper fails entries whose timeout passed or
// whose ctx ended.
//
// It is kept rather than jetstream.PublishMsgAsync (with its ack and error
// handlers, WithPublishAsyncTimeout, and a context.AfterFunc per publish
// for the ctx) because that measured slower, three interleaved runs each
// on a shared 2-core machine (2026-12-05): BenchmarkDispatcher_JetStream
// in_flight=256, 200,000 events, 26,100/28,200/33,600 and
// 17,500/33,000/28,800 events/s here against 20,200/18,400/22,000 and
// 27,300/21,400/15,000, at 9.8–11.4 s CPU against 10.5–12.2 s; `bench
// --sinks jetstream` 16,500/15,700/13,900 events/s at 6.5–6.8 s CPU
// against 13,500/11,200/12,800 at 7.4–8.0 s. Its per-ack JSON decode and
// timer per message cost more than this map and one sweeper.
type jsAcks struct {
	sink    string
	timeout time.Duration
	log     zerolog.Logger

	once   sync.Once
	prefix string // reply subject prefix, "_INBOX.<nuid>."
	sub    *nats.Subscription
	subErr error
	stop   chan struct{}
	wg     sync.WaitGroup

	mu   sync.Mutex
	next uint64
	wait map[uint64]*jsAck
}

type jsAck struct {
	ctx      context.Context
	deadline time.Time
	subject  string
	eventID  string
	done     func(error)
}

// start subscribes to the reply inbox once.
func (a *jsAcks) start(nc *nats.Conn) error {
	a.once.Do(func() {
		a.prefix = nc.NewInbox() + "."
		a.wait = make(map[uint64]*jsAck)
		a.stop = make(chan struct{})
		if a.sub, a.subErr = nc.Subscribe(a.prefix+"*", a.handle); a.subErr != nil {
			return
		}
		// Acks may arrive in bursts of hundreds: never drop one for a
		// slow consumer.
		_ = a.sub.SetPendingLimits(-1, -1)
		a.wg.Add(1)
		go a.sweep()
	})
	return a.subErr
}

// publish sends msg with a reply subject of the inbox and calls done once
// with the outcome.
func (a *jsAcks) publish(ctx context.Context, nc *nats.Conn, msg *nats.Msg, eventID string, done func(error)) {
	if err := a.start(nc); err != nil {
		done(fmt.Errorf("nats %s: ack inbox: %w", a.sink, err))
		return
	}
	e := &jsAck{ctx: ctx, deadline: time.Now().Add(a.timeout), subject: msg.Subject, eventID: eventID, done: done}
	a.mu.Lock()
	if a.wait == nil {
		a.mu.Unlock()
		done(fmt.Errorf("nats %s: closed", a.sink))
		return
	}
	a.next++
	id := a.next
	a.wait[id] = e
	a.mu.Unlock()
	msg.Reply = a.prefix + strconv.FormatUint(id, 10)
	if err := nc.PublishMsg(msg); err != nil {
		if a.take(id) != nil {
			done(publishError(a.sink, msg.Subject, err))
		}
	}
}

// take removes and returns the entry id, nil if it is gone already.
func (a *jsAcks) take(id uint64) *jsAck {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.wait[id]
	delete(a.wait, id)
	return e
}

// handle receives one acknowledgement (or a no-responders status).
func (a *jsAcks) handle(m *nats.Msg) {
	id, err := strconv.ParseUint(strings.TrimPrefix(m.Subject, a.prefix), 10, 64)
	if err != nil {
		return
	}
	e := a.take(id)
	if e == nil {
		return // timed out, cancelled or closed meanwhile
	}
	if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
		e.done(publishError(a.sink, e.subject, jetstream.ErrNoStreamResponse))
		return
	}
	dup, err := parsePubAck(m.Data)
	if err != nil {
		e.done(publishError(a.sink, e.subject, err))
		return
	}
	if dup {
		a.log.Debug().Str("event_id", e.eventID).Msg("duplicate publish; the stream already has it")
	}
	e.done(nil)
}

// sweep fails the entries whose timeout passed or whose ctx ended.
func (a *jsAcks) sweep() {
	defer a.wg.Done()
	t := time.NewTicker(min(a.timeout/4, 100*time.Millisecond))
	defer t.Stop()
	var expired []*jsAck
	for {
		select {
		case <-a.stop:
			return
		case now := <-t.C:
			a.mu.Lock()
			for id, e := range a.wait {
				if e.ctx.Err() != nil || now.After(e.deadline) {
					delete(a.wait, id)
					expired = append(expired, e)
				}
			}
			a.mu.Unlock()
			for i, e := range expired {
				if err := e.ctx.Err(); err != nil {
					e.done(fmt.Errorf("nats %s: publish %s: %w", a.sink, e.subject, err))
				} else {
					e.done(fmt.Errorf("nats %s: publish %s: no ack within %s: %w", a.sink, e.subject, a.timeout, nats.ErrTimeout))
				}
				expired[i] = nil
			}
			expired = expired[:0]
		}
	}
}

// close stops the sweeper and fails what still waits. A publish after it
// fails: the inbox is never subscribed afterwards.
func (a *jsAcks) close() {
	a.once.Do(func() {})
	a.mu.Lock()
	pending := a.wait
	a.wait = nil
	a.mu.Unlock()
	if a.stop != nil {
		close(a.stop)
		a.wg.Wait()
	}
	for _, e := range pending {
		e.done(fmt.Errorf("nats %s: publish %s: closed before the ack", a.sink, e.subject))
	}
}

// parsePubAck reads a JetStream publish acknowledgement as
// jetstream.PublishMsg does: an error answer is that error, an ack without
// a stream is jetstream.ErrInvalidJSAck. The usual ack,
// {"stream":"S","seq":N} with an optional "duplicate":true, is read without
// encoding/json; anything else is decoded with it.
func parsePubAck(data []byte) (duplicate bool, err error) {
	if bytes.HasPrefix(data, []byte(`{"stream":"`)) && len(data) > len(`{"stream":"`) && data[len(`{"stream":"`)] != '"' &&
		json.Valid(data) && !bytes.Contains(data, []byte(`"error"`)) {
		return bytes.Contains(data, []byte(`"duplicate":true`)), nil
	}
	var ack struct {
		Error     *jetstream.APIError `json:"error"`
		Stream    string              `json:"stream"`
		Duplicate bool                `json:"duplicate"`
	}
	if json.Unmarshal(data, &ack) != nil {
		return false, jetstream.ErrInvalidJSAck
	}
	if ack.Error != nil {
		return false, fmt.Errorf("nats: %w", ack.Error)
	}
	if ack.Stream == "" {
		return false, jetstream.ErrInvalidJSAck
	}
	return ack.Duplicate, nil
}
