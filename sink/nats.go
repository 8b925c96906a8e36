package sink

// The NATS sink: NATSConfig, NewNATS (the connection and the embedded
// server), Deliver and DeliverAsync, Close, and the flush that core NATS
// deliveries share. The JetStream ack tracker is nats_jsack.go; the stream
// set-up is nats_stream.go; the embedded server is natsserver.go.

import (
	"context"
	"errors"
	"fmt"
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

// publishError wraps a failed publish of sink to subj; a message over the
// server's max payload is permanent.
func publishError(sink, subj string, err error) error {
	err = fmt.Errorf("nats %s: publish %s: %w", sink, subj, err)
	if errors.Is(err, nats.ErrMaxPayload) {
		return Permanent(err)
	}
	return err
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
