package sink

// Tests of the NATS sink (nats.go), and what the NATS tests share: an
// in-process server, a client connection, a sink, and receivers of core
// NATS and of a stream.

import (
	"context"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store/storetest"
)

// natsTestServer runs an in-process NATS server with JetStream on
// 127.0.0.1 (port -1: random) storing in dir, shut down at cleanup.
func natsTestServer(t testing.TB, dir string, port int, mod func(*server.Options)) *server.Server {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true, JetStream: true, StoreDir: dir}
	if mod != nil {
		mod(opts)
	}
	s, err := server.NewServer(opts)
	require.NoError(t, err)
	go s.Start()
	require.True(t, s.ReadyForConnections(10*time.Second), "nats server not ready")
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// natsTestConn connects a test client to s, closed at cleanup.
func natsTestConn(t testing.TB, s *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// newTestNATS returns a NATS sink, closed at cleanup.
func newTestNATS(t testing.TB, cfg NATSConfig) *NATS {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "bus"
	}
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	n, err := NewNATS(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = n.Close(context.Background()) })
	return n
}

// natsCoreReceiver collects the messages of a core NATS subscription.
type natsCoreReceiver struct {
	mu      sync.Mutex
	msgs    []*nats.Msg
	arrived chan struct{}
}

func newNATSCoreReceiver(t testing.TB, nc *nats.Conn, subject string) *natsCoreReceiver {
	rc := &natsCoreReceiver{arrived: make(chan struct{}, 1)}
	_, err := nc.Subscribe(subject, func(m *nats.Msg) {
		rc.mu.Lock()
		rc.msgs = append(rc.msgs, m)
		rc.mu.Unlock()
		select {
		case rc.arrived <- struct{}{}:
		default:
		}
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	return rc
}

func (rc *natsCoreReceiver) Msgs(t *testing.T, n int) []*nats.Msg {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for {
		rc.mu.Lock()
		got := slices.Clone(rc.msgs)
		rc.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-rc.arrived:
		case <-deadline.C:
			require.FailNow(t, "nats receiver", "got %d messages, want %d", len(got), n)
		}
	}
}

func (rc *natsCoreReceiver) Received(t *testing.T, n int) [][]byte {
	var out [][]byte
	for _, m := range rc.Msgs(t, n) {
		out = append(out, m.Data)
	}
	return out
}

func (rc *natsCoreReceiver) SetMode(conformanceMode) {}

// natsStreamReceiver reads what a JetStream stream stored.
type natsStreamReceiver struct {
	js     jetstream.JetStream
	stream string
}

func (rc *natsStreamReceiver) Msgs(t *testing.T, n int) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	var st jetstream.Stream
	require.Eventually(t, func() bool {
		var err error
		st, err = rc.js.Stream(ctx, rc.stream)
		return err == nil && st.CachedInfo().State.Msgs >= uint64(n)
	}, 5*time.Second, 5*time.Millisecond, "stream %s holds fewer than %d messages", rc.stream, n)
	info := st.CachedInfo()
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		require.NoError(t, err)
		out = append(out, m)
	}
	return out
}

func (rc *natsStreamReceiver) Received(t *testing.T, n int) [][]byte {
	var out [][]byte
	for _, m := range rc.Msgs(t, n) {
		out = append(out, m.Data)
	}
	return out
}

func (rc *natsStreamReceiver) SetMode(conformanceMode) {}

func TestNATS_Conformance(t *testing.T) {
	t.Run("core", func(t *testing.T) {
		runSinkConformance(t, sinkConformance{
			NewSink: func(t *testing.T) (Sink, conformanceReceiver) {
				s := natsTestServer(t, t.TempDir(), -1, nil)
				rc := newNATSCoreReceiver(t, natsTestConn(t, s), "incs.>")
				n, err := NewNATS(context.Background(), NATSConfig{Name: "bus", URL: s.ClientURL()})
				require.NoError(t, err)
				return n, rc
			},
		})
	})
	t.Run("jetstream", func(t *testing.T) {
		runSinkConformance(t, sinkConformance{
			NewSink: func(t *testing.T) (Sink, conformanceReceiver) {
				s := natsTestServer(t, t.TempDir(), -1, nil)
				js, err := jetstream.New(natsTestConn(t, s))
				require.NoError(t, err)
				n, err := NewNATS(context.Background(), NATSConfig{Name: "bus", URL: s.ClientURL(), JetStream: true,
					Stream: &StreamConfig{Name: "INCS"}})
				require.NoError(t, err)
				return n, &natsStreamReceiver{js: js, stream: "INCS"}
			},
		})
	})
}

func TestNATS_Headers(t *testing.T) {
	s := natsTestServer(t, t.TempDir(), -1, nil)
	rc := newNATSCoreReceiver(t, natsTestConn(t, s), ">")
	n := newTestNATS(t, NATSConfig{URL: s.ClientURL()})
	ev := newConformanceEvent(t, 237, 532)
	require.NoError(t, n.Deliver(context.Background(), ev))
	m := rc.Msgs(t, 1)[0]
	assert.Equal(t, "incs.tasks.237.status_changed", m.Subject)
	assert.Equal(t, "log-532", m.Header.Get("Nats-Msg-Id"))
	assert.Equal(t, "application/cloudevents+json", m.Header.Get("Content-Type"))
	assert.Equal(t, string(ev.Body), string(m.Data))
}

func TestNATS_SubjectTemplate(t *testing.T) {
	ev := newConformanceEvent(t, 237, 532) // task.status_changed
	tests := []struct {
		name     string
		template string
		want     string
		wildcard string
	}{
		{"default", "", "incs.tasks.237.status_changed", "incs.tasks.*.*"},
		{"type", "incs.{type}.{task_id}", "incs.task.status_changed.237", "incs.*.*.*"},
		{"inside a token", "incs.t{task_id}.{event}", "incs.t237.status_changed", "incs.*.*"},
		{"fixed", "incs.events", "incs.events", "incs.events"},
		{"event first", "{event}.incs", "status_changed.incs", "*.incs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := tc.template
			if tmpl == "" {
				tmpl = DefaultNATSSubject
			}
			p, err := ParseSubject(tmpl)
			require.NoError(t, err)
			assert.Equal(t, tc.want, p.Render(ev))
			assert.Equal(t, tc.wildcard, p.Wildcard())
			assert.True(t, server.SubjectMatchesFilter(tc.want, p.Wildcard()))
		})
	}
	bad := []struct{ name, template, want string }{
		{"unknown placeholder", "incs.{task}", "unknown placeholder {task}"},
		{"unclosed", "incs.{event", "unclosed"},
		{"unmatched", "incs.event}", "unmatched"},
		{"wildcard", "incs.*", "not a valid NATS subject"},
		{"tail wildcard", "incs.>", "not a valid NATS subject"},
		{"empty token", "incs..{event}", "not a valid NATS subject"},
		{"space", "incs tasks.{event}", "not a valid NATS subject"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewNATS(context.Background(), NATSConfig{Name: "bus", URL: "nats://127.0.0.1:1", Subject: tc.template})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), "nats bus: subject")
		})
	}
}

func TestNATS_JetStreamDedupe(t *testing.T) {
	s := natsTestServer(t, t.TempDir(), -1, nil)
	n := newTestNATS(t, NATSConfig{URL: s.ClientURL(), JetStream: true, Stream: &StreamConfig{Name: "INCS"}})
	ev := newConformanceEvent(t, 1, 9)
	require.NoError(t, n.Deliver(context.Background(), ev))
	require.NoError(t, n.Deliver(context.Background(), ev), "a duplicate counts as delivered")
	js, err := jetstream.New(natsTestConn(t, s))
	require.NoError(t, err)
	st, err := js.Stream(context.Background(), "INCS")
	require.NoError(t, err)
	assert.Equal(t, uint64(1), st.CachedInfo().State.Msgs)
	m, err := st.GetMsg(context.Background(), 1)
	require.NoError(t, err)
	assert.Equal(t, "log-9", m.Header.Get("Nats-Msg-Id"))
	assert.Equal(t, "application/cloudevents+json", m.Header.Get("Content-Type"))
	assert.Equal(t, string(ev.Body), string(m.Data))
}

func TestNATS_NoStreamIsRetryable(t *testing.T) {
	s := natsTestServer(t, t.TempDir(), -1, nil)
	n := newTestNATS(t, NATSConfig{URL: s.ClientURL(), JetStream: true, Timeout: time.Second})
	err := n.Deliver(context.Background(), newConformanceEvent(t, 1, 1))
	require.Error(t, err)
	kind, _ := classifyFailure(err)
	assert.Equal(t, failRetryable, kind)
	assert.ErrorIs(t, err, jetstream.ErrNoStreamResponse)
	assert.Contains(t, err.Error(), "nats bus: publish incs.tasks.1.status_changed")
}

// TestNATS_JetStreamErrorAck: a stream that refuses the message answers
// with an error ack, which is a failed (retryable) delivery naming the
// server's reason, never an acknowledgement.
func TestNATS_JetStreamErrorAck(t *testing.T) {
	s := natsTestServer(t, t.TempDir(), -1, nil)
	js, err := jetstream.New(natsTestConn(t, s))
	require.NoError(t, err)
	_, err = js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: "FULL", Subjects: []string{"incs.>"}, MaxMsgs: 1, Discard: jetstream.DiscardNew,
	})
	require.NoError(t, err)
	n := newTestNATS(t, NATSConfig{URL: s.ClientURL(), JetStream: true})
	require.NoError(t, n.Deliver(context.Background(), newConformanceEvent(t, 1, 1)))
	err = n.Deliver(context.Background(), newConformanceEvent(t, 1, 2))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "maximum messages exceeded")
	kind, _ := classifyFailure(err)
	assert.Equal(t, failRetryable, kind)
}

func TestNATS_MaxPayloadIsPermanent(t *testing.T) {
	s := natsTestServer(t, t.TempDir(), -1, func(o *server.Options) { o.MaxPayload = 256 })
	n := newTestNATS(t, NATSConfig{URL: s.ClientURL()})
	err := n.Deliver(context.Background(), newConformanceEvent(t, 1, 1))
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrPermanent)
}

// natsFreePort is a port for a NATS server a test stops and starts again
// on the same address (storetest.FreePort).
func natsFreePort(t *testing.T) int {
	t.Helper()
	return storetest.FreePort(t)
}

func TestNATS_ServerDown(t *testing.T) {
	for _, js := range []bool{false, true} {
		t.Run("jetstream="+strconv.FormatBool(js), func(t *testing.T) {
			dir, port := t.TempDir(), natsFreePort(t)
			s := natsTestServer(t, dir, port, nil)
			cfg := NATSConfig{URL: s.ClientURL(), JetStream: js, Timeout: 500 * time.Millisecond}
			if js {
				cfg.Stream = &StreamConfig{Name: "INCS"}
			}
			n := newTestNATS(t, cfg)
			require.NoError(t, n.Deliver(context.Background(), newConformanceEvent(t, 1, 1)))

			s.Shutdown()
			s.WaitForShutdown()
			begin := time.Now()
			err := n.Deliver(context.Background(), newConformanceEvent(t, 1, 2))
			require.Error(t, err)
			assert.Less(t, time.Since(begin), 2*time.Second)
			kind, _ := classifyFailure(err)
			assert.Equal(t, failRetryable, kind, "%v", err)

			// The same server comes back; the sink reconnects.
			s2 := natsTestServer(t, dir, port, nil)
			require.Eventually(t, func() bool {
				return n.Deliver(context.Background(), newConformanceEvent(t, 1, 2)) == nil
			}, 10*time.Second, 20*time.Millisecond)
			if js {
				rc := &natsStreamReceiver{js: must(jetstream.New(natsTestConn(t, s2))), stream: "INCS"}
				assert.Len(t, rc.Msgs(t, 2), 2)
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestNATS_CloseWhileUnreachable(t *testing.T) {
	n, err := NewNATS(context.Background(), NATSConfig{Name: "bus", URL: "nats://127.0.0.1:" + strconv.Itoa(natsFreePort(t)),
		JetStream: true, Stream: &StreamConfig{Name: "INCS"}, Timeout: 200 * time.Millisecond})
	require.NoError(t, err, "an unreachable server is not fatal at start")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	assert.NoError(t, n.Close(ctx))
	assert.NoError(t, n.Close(ctx))
}

func TestNATS_FlushCoalescing(t *testing.T) {
	s := natsTestServer(t, t.TempDir(), -1, nil)
	rc := newNATSCoreReceiver(t, natsTestConn(t, s), ">")
	n := newTestNATS(t, NATSConfig{URL: s.ClientURL()})
	const workers, each = 16, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				assert.NoError(t, n.Deliver(context.Background(), newConformanceEvent(t, int64(w), int64(w*each+i+1))))
			}
		}()
	}
	wg.Wait()
	msgs := rc.Msgs(t, workers*each)
	assert.Len(t, msgs, workers*each)
	// Per publisher order holds on one connection.
	last := map[string]int{}
	for _, m := range msgs {
		task := strings.Split(m.Subject, ".")[2]
		id, err := strconv.Atoi(strings.TrimPrefix(m.Header.Get("Nats-Msg-Id"), "log-"))
		require.NoError(t, err)
		assert.Greater(t, id, last[task])
		last[task] = id
	}
}

func TestStartEmbeddedNATS(t *testing.T) {
	t.Run("random port", func(t *testing.T) {
		s, err := StartEmbeddedNATS(EmbeddedOptions{Port: -1, StoreDir: t.TempDir()})
		require.NoError(t, err)
		defer func() { s.Shutdown(); s.WaitForShutdown() }()
		assert.True(t, strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:"))
		assert.True(t, s.JetStreamEnabled())
	})
	t.Run("port taken", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		port := l.Addr().(*net.TCPAddr).Port
		_, err = StartEmbeddedNATS(EmbeddedOptions{Port: port, StoreDir: t.TempDir()})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "embedded nats: listen 127.0.0.1:"+strconv.Itoa(port))

		s, err := StartEmbeddedNATS(EmbeddedOptions{Port: port, StoreDir: t.TempDir(), FallbackRandomPort: true})
		require.NoError(t, err)
		defer func() { s.Shutdown(); s.WaitForShutdown() }()
		assert.NotEqual(t, port, s.Addr().(*net.TCPAddr).Port)
	})
	t.Run("no store dir", func(t *testing.T) {
		_, err := StartEmbeddedNATS(EmbeddedOptions{Port: -1})
		assert.ErrorContains(t, err, "no store dir")
	})
}

func TestNATS_Embedded(t *testing.T) {
	n := newTestNATS(t, NATSConfig{URL: NATSEmbedded, JetStream: true, Stream: &StreamConfig{Name: "INCS"},
		Embedded: EmbeddedOptions{Port: -1, StoreDir: t.TempDir()}})
	url := n.ClientURL()
	require.NotEmpty(t, url)
	require.NoError(t, n.Deliver(context.Background(), newConformanceEvent(t, 1, 1)))
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	js := must(jetstream.New(nc))
	assert.Len(t, (&natsStreamReceiver{js: js, stream: "INCS"}).Msgs(t, 1), 1)
	nc.Close()
	require.NoError(t, n.Close(context.Background()))
	_, err = nats.Connect(url, nats.Timeout(200*time.Millisecond))
	assert.Error(t, err, "Close stops the embedded server")
}

// TestNATS_Dispatcher delivers through a dispatcher into a stream and
// checks every task's events are stored in offset order.
func TestNATS_Dispatcher(t *testing.T) {
	forEachOutbox(t, func(t *testing.T, ob dispatchTestOutbox) {
		s := natsTestServer(t, t.TempDir(), -1, nil)
		n := newTestNATS(t, NATSConfig{URL: s.ClientURL(), JetStream: true, Stream: &StreamConfig{Name: "INCS"}})
		evs := ob.Append(t, dispatchTestEvents(500, 40, 1, rand.New(rand.NewPCG(6, 6)))...)
		_, stop := startDispatcher(t, DispatcherConfig{Sink: n, Outbox: ob})
		rc := &natsStreamReceiver{js: must(jetstream.New(natsTestConn(t, s))), stream: "INCS"}
		msgs := rc.Msgs(t, len(evs))
		require.NoError(t, stop())
		byID := map[string]diff.Event{}
		for _, ev := range evs {
			byID[ev.ID] = ev
		}
		var got []diff.Event
		for _, m := range msgs {
			ev, ok := byID[m.Header.Get("Nats-Msg-Id")]
			require.True(t, ok)
			assert.Equal(t, string(ev.Body), string(m.Data))
			got = append(got, ev)
		}
		assertTaskOrder(t, evs, got)
	})
}

// TestNATSSubjectsCover pins what the stream check accepts: every wanted
// subject must fall under some subject the stream has, wildcards on both
// sides.
func TestNATSSubjectsCover(t *testing.T) {
	tests := []struct {
		have, want []string
		ok         bool
	}{
		{[]string{"incs.>"}, []string{"incs.tasks.*.*"}, true},
		{[]string{"incs.tasks.*.*"}, []string{"incs.tasks.*.*"}, true},
		{[]string{"incs.*.*.*"}, []string{"incs.tasks.*.*"}, true},
		{[]string{"incs.tasks.*"}, []string{"incs.tasks.*.*"}, false},
		{[]string{"incs.tasks.*.*"}, []string{"incs.>"}, false},
		{[]string{"incs.tasks.1.*"}, []string{"incs.tasks.*.*"}, false},
		{[]string{">"}, []string{"a", "b.c"}, true},
		{[]string{"a.>"}, []string{"a"}, false},
		{[]string{"a", "b.*"}, []string{"a", "b.c"}, true},
		{[]string{"a"}, []string{"a", "b.c"}, false},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.ok, natsSubjectsCover(tc.have, tc.want), "%v covers %v", tc.have, tc.want)
	}
}
