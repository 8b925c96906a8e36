package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/diff"
)

// NATS defaults.
const (
	DefaultNATSSubject = "incs.tasks.{task_id}.{event}"
	DefaultNATSTimeout = 5 * time.Second
	// NATSEmbedded as a NATS URL starts an in-process server.
	NATSEmbedded = "embedded"
	// DefaultNATSMaxInFlight is the dispatcher concurrency suggested for
	// NATS sinks when none is configured: publishes pipeline on one
	// connection and JetStream acks are awaited without a goroutine each
	// (DeliverAsync), so more in flight is cheap and hides the ack round
	// trip; per-task order holds at any value.
	DefaultNATSMaxInFlight = 512
)

// StreamConfig asks a JetStream NATS sink to make sure a stream stores its
// subjects. At start, a stream (of any name) whose subjects already cover
// Subjects is used as it is; otherwise the stream Name is created. A
// stream Name that exists without covering Subjects, or another stream
// whose subjects overlap them, is a conflict and an error.
type StreamConfig struct {
	Name string
	// Subjects default to the subject template with each token holding a
	// placeholder replaced by "*": "incs.tasks.*.*".
	Subjects []string
	MaxAge   time.Duration // 0: unlimited
	Replicas int           // 0: 1
}

// NATSConfig configures a NATS sink.
type NATSConfig struct {
	Name string
	// URL is a NATS server URL (or a comma-separated list), or "embedded"
	// to start an in-process server with Embedded.
	URL string
	// Subject is the template of each event's subject, with placeholders
	// {task_id}, {event} (e.g. status_changed) and {type} (e.g.
	// task.status_changed). Default "incs.tasks.{task_id}.{event}".
	Subject string
	// JetStream makes a publish count only once the stream acknowledged it.
	JetStream bool
	// Stream, with JetStream, is created or checked at start.
	Stream *StreamConfig
	// Timeout bounds one publish: the flush of core NATS or the JetStream
	// ack (default 5s); also the connect and stream set-up.
	Timeout time.Duration
	// Embedded configures the server started for URL "embedded"; its
	// Logger is replaced by Logger.
	Embedded EmbeddedOptions
	// Options are added to the connection's options: credentials, nkey
	// and TLS.
	Options []nats.Option
	Logger  zerolog.Logger
}

// NATS publishes events to NATS subjects with the headers Nats-Msg-Id (the
// event id, which JetStream deduplicates on) and Content-Type
// application/cloudevents+json; the body is ev.Body. With core NATS an
// event counts as delivered once the server confirmed receiving it (a
// flush; concurrent Deliver calls share one flush); with JetStream, once
// the stream acknowledged it (a duplicate counts too).
//
// The connection reconnects forever. While it is down Deliver fails at
// once with a retryable error. A message over the server's max payload is
// a permanent failure; every other failure is retryable. A NATS is safe for
// concurrent use.
type NATS struct {
	name     string
	subject  Subject
	timeout  time.Duration
	log      zerolog.Logger
	nc       *nats.Conn
	js       jetstream.JetStream // nil for core NATS
	srv      *server.Server      // the embedded server, owned
	ncClosed chan struct{}       // closed by the ClosedHandler
	flusher  natsFlusher
	acks     jsAcks // JetStream acknowledgements

	stream   *StreamConfig
	streamOK atomic.Bool
	streamMu sync.Mutex

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var _ AsyncSink = (*NATS)(nil)

// NewNATS validates cfg, starts the embedded server if the URL asks for it,
// and connects. If the server cannot be reached, NewNATS still returns the
// sink, connecting in the background (deliveries fail retryably until it
// is up); the stream is then checked on the first delivery. With a
// reachable server it checks or creates the stream and returns a conflict
// as an error. ctx bounds the stream set-up.
func NewNATS(ctx context.Context, cfg NATSConfig) (*NATS, error) {
	if cfg.Name == "" {
		return nil, errors.New("nats: no name")
	}
	if cfg.Subject == "" {
		cfg.Subject = DefaultNATSSubject
	}
	tmpl, err := ParseSubject(cfg.Subject)
	if err != nil {
		return nil, fmt.Errorf("nats %s: subject: %w", cfg.Name, err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultNATSTimeout
	}
	if cfg.URL == "" {
		return nil, fmt.Errorf("nats %s: no url", cfg.Name)
	}
	var stream *StreamConfig
	if cfg.JetStream && cfg.Stream != nil {
		sc := *cfg.Stream
		if sc.Name == "" {
			return nil, fmt.Errorf("nats %s: stream: no name", cfg.Name)
		}
		if len(sc.Subjects) == 0 {
			sc.Subjects = []string{tmpl.Wildcard()}
		}
		for _, s := range sc.Subjects {
			if !server.IsValidSubject(s) {
				return nil, fmt.Errorf("nats %s: stream %s: invalid subject %q", cfg.Name, sc.Name, s)
			}
		}
		stream = &sc
	}
	n := &NATS{
		name:     cfg.Name,
		subject:  tmpl,
		timeout:  cfg.Timeout,
		log:      cfg.Logger.With().Str("sink", cfg.Name).Logger(),
		stream:   stream,
		ncClosed: make(chan struct{}),
	}
	url := cfg.URL
	if url == NATSEmbedded {
		emb := cfg.Embedded
		emb.Logger = n.log
		if n.srv, err = StartEmbeddedNATS(emb); err != nil {
			return nil, fmt.Errorf("nats %s: %w", cfg.Name, err)
		}
		url = n.srv.ClientURL()
	}
	var inProcess []nats.Option
	if n.srv != nil {
		inProcess = append(inProcess, nats.InProcessServer(n.srv))
	}
	n.nc, err = nats.Connect(url, append(append(inProcess, cfg.Options...),
		nats.Name("incs-relay "+cfg.Name),
		nats.Timeout(cfg.Timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if n.closed.Load() {
				return // our own Close drains and disconnects
			}
			n.log.Warn().Err(err).Msg("nats disconnected")
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			n.log.Info().Str("server", c.ConnectedUrlRedacted()).Msg("nats reconnected")
		}),
		nats.ConnectHandler(func(c *nats.Conn) {
			n.log.Info().Str("server", c.ConnectedUrlRedacted()).Msg("nats connected")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			n.log.Error().Err(err).Msg("nats")
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(n.ncClosed) }),
	)...)
	if err != nil {
		n.shutdownServer()
		return nil, fmt.Errorf("nats %s: connect: %w", cfg.Name, err)
	}
	n.flusher = natsFlusher{nc: n.nc, timeout: cfg.Timeout}
	n.acks = jsAcks{sink: cfg.Name, timeout: cfg.Timeout, log: n.log}
	if cfg.JetStream {
		if n.js, err = jetstream.New(n.nc); err != nil {
			_ = n.Close(ctx)
			return nil, fmt.Errorf("nats %s: jetstream: %w", cfg.Name, err)
		}
	}
	if n.stream != nil {
		if !n.nc.IsConnected() {
			n.log.Warn().Msg("nats not reachable yet; the stream is checked on the first delivery")
		} else if err := n.ensureStream(ctx); err != nil {
			_ = n.Close(ctx)
			return nil, err
		}
	}
	return n, nil
}

// Name returns the sink's name.
func (n *NATS) Name() string { return n.name }

// ClientURL returns the URL clients reach the embedded server at, or the
// URL of the server connected to (credentials redacted); "" if none.
func (n *NATS) ClientURL() string {
	if n.srv != nil {
		return n.srv.ClientURL()
	}
	return n.nc.ConnectedUrlRedacted()
}

// Deliver publishes ev once and blocks until the server confirmed it (see
// NATS), the timeout passed or ctx ended.
func (n *NATS) Deliver(ctx context.Context, ev *diff.Event) error {
	msg, subj, err := n.message(ctx, ev)
	if err != nil {
		return err
	}
	if n.js == nil {
		if err := n.nc.PublishMsg(msg); err != nil {
			return publishError(n.name, subj, err)
		}
		if err := n.flusher.wait(ctx); err != nil {
			return fmt.Errorf("nats %s: publish %s: flush: %w", n.name, subj, err)
		}
		return nil
	}
	if n.stream != nil && !n.streamOK.Load() {
		if err := n.ensureStream(ctx); err != nil {
			return err
		}
	}
	done := make(chan error, 1)
	n.acks.publish(ctx, n.nc, msg, ev.ID, func(err error) { done <- err })
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("nats %s: publish %s: %w", n.name, subj, ctx.Err())
	}
}

// message builds ev's message after the checks every attempt starts with.
func (n *NATS) message(ctx context.Context, ev *diff.Event) (*nats.Msg, string, error) {
	if n.closed.Load() {
		return nil, "", fmt.Errorf("nats %s: closed", n.name)
	}
	subj := n.subject.Render(ev)
	if err := ctx.Err(); err != nil {
		return nil, subj, fmt.Errorf("nats %s: publish %s: %w", n.name, subj, err)
	}
	if !n.nc.IsConnected() {
		return nil, subj, fmt.Errorf("nats %s: publish %s: not connected (%s)", n.name, subj, natsStatus(n.nc.Status()))
	}
	body, err := eventBodyOrJSON(ev)
	if err != nil {
		return nil, subj, Permanent(fmt.Errorf("nats %s: encode event %s: %w", n.name, ev.ID, err))
	}
	return &nats.Msg{
		Subject: subj,
		Data:    body,
		Header: nats.Header{
			jetstream.MsgIDHeader: []string{ev.ID},
			"Content-Type":        []string{"application/cloudevents+json"},
		},
	}, subj, nil
}

// DeliverAsync makes the attempt Deliver makes and calls done with its
// outcome. With JetStream it returns once the message is written to the
// connection, and done runs when the ack arrives (on the connection's
// goroutine for the reply inbox), the timeout passes or ctx ends; the
// dispatcher then keeps hundreds of publishes under way without a goroutine
// each. Core NATS deliveries run Deliver on a goroutine.
func (n *NATS) DeliverAsync(ctx context.Context, ev *diff.Event, done func(error)) {
	if n.js == nil || n.stream != nil && !n.streamOK.Load() {
		go func() { done(n.Deliver(ctx, ev)) }() // rare: the stream check blocks
		return
	}
	msg, _, err := n.message(ctx, ev)
	if err != nil {
		done(err)
		return
	}
	n.acks.publish(ctx, n.nc, msg, ev.ID, done)
}

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

// publishError wraps a failed publish of sink to subj; a message over the
// server's max payload is permanent.
func publishError(sink, subj string, err error) error {
	err = fmt.Errorf("nats %s: publish %s: %w", sink, subj, err)
	if errors.Is(err, nats.ErrMaxPayload) {
		return Permanent(err)
	}
	return err
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

// Close drains and closes the connection (bounded by ctx), then shuts
// down the embedded server if there is one. It is idempotent.
func (n *NATS) Close(ctx context.Context) error {
	n.closeOnce.Do(func() {
		n.closed.Store(true)
		if err := n.nc.Drain(); err != nil {
			n.nc.Close()
		}
		select {
		case <-n.ncClosed:
		case <-ctx.Done():
			n.nc.Close()
			n.closeErr = fmt.Errorf("nats %s: drain: %w", n.name, ctx.Err())
		}
		n.flusher.wg.Wait()
		n.acks.close()
		n.shutdownServer()
	})
	return n.closeErr
}

func (n *NATS) shutdownServer() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
	}
}

// ensureStream checks or creates the configured stream (see StreamConfig).
func (n *NATS) ensureStream(ctx context.Context) error {
	n.streamMu.Lock()
	defer n.streamMu.Unlock()
	if n.streamOK.Load() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	sc := n.stream
	prefix := fmt.Sprintf("nats %s: stream %s", n.name, sc.Name)
	var (
		named    *jetstream.StreamInfo
		covering *jetstream.StreamInfo
		overlap  *jetstream.StreamInfo
	)
	lister := n.js.ListStreams(ctx)
	for info := range lister.Info() {
		if info.Config.Name == sc.Name {
			named = info
		}
		if covering == nil && natsSubjectsCover(info.Config.Subjects, sc.Subjects) {
			covering = info
		}
		if overlap == nil && natsSubjectsOverlap(info.Config.Subjects, sc.Subjects) {
			overlap = info
		}
	}
	if err := lister.Err(); err != nil {
		return fmt.Errorf("%s: list streams: %w", prefix, err)
	}
	switch {
	case covering != nil:
		if covering.Config.Name != sc.Name {
			n.log.Info().Str("stream", covering.Config.Name).Strs("subjects", covering.Config.Subjects).
				Msg("an existing stream covers the subjects; using it as it is")
		}
	case named != nil:
		return fmt.Errorf("%s: exists with subjects %v, which do not cover %v", prefix, named.Config.Subjects, sc.Subjects)
	case overlap != nil:
		return fmt.Errorf("%s: subjects %v overlap stream %s (subjects %v)", prefix, sc.Subjects, overlap.Config.Name, overlap.Config.Subjects)
	default:
		_, err := n.js.CreateStream(ctx, jetstream.StreamConfig{
			Name:     sc.Name,
			Subjects: sc.Subjects,
			MaxAge:   sc.MaxAge,
			Replicas: max(sc.Replicas, 1),
			Storage:  jetstream.FileStorage,
		})
		if err != nil {
			return fmt.Errorf("%s: create: %w", prefix, err)
		}
		n.log.Info().Str("stream", sc.Name).Strs("subjects", sc.Subjects).Msg("stream created")
	}
	n.streamOK.Store(true)
	return nil
}

// natsSubjectsCover reports whether every subject of want is matched by
// some subject of have, wildcards on both sides included.
func natsSubjectsCover(have, want []string) bool {
	for _, w := range want {
		if !slices.ContainsFunc(have, func(h string) bool { return server.SubjectMatchesFilter(w, h) }) {
			return false
		}
	}
	return true
}

func natsSubjectsOverlap(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if server.SubjectsCollide(x, y) {
				return true
			}
		}
	}
	return false
}

// natsFlusher lets concurrent publishers share flushes: a waiter joins the
// next flush, which starts once the one under way finished, so each flush
// confirms every message published before its waiters joined.
type natsFlusher struct {
	nc      *nats.Conn
	timeout time.Duration
	wg      sync.WaitGroup

	mu      sync.Mutex
	next    *natsFlushBatch
	running bool
}

type natsFlushBatch struct {
	done chan struct{}
	err  error
}

// wait blocks until a flush begun after the call returned, or ctx ended.
func (f *natsFlusher) wait(ctx context.Context) error {
	f.mu.Lock()
	b := f.next
	if b == nil {
		b = &natsFlushBatch{done: make(chan struct{})}
		f.next = b
	}
	if !f.running {
		f.running = true
		f.wg.Add(1)
		go f.loop()
	}
	f.mu.Unlock()
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *natsFlusher) loop() {
	defer f.wg.Done()
	for {
		f.mu.Lock()
		b := f.next
		f.next = nil
		if b == nil {
			f.running = false
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
		b.err = f.nc.FlushTimeout(f.timeout)
		close(b.done)
	}
}

func natsStatus(s nats.Status) string {
	return strings.ToLower(s.String())
}
