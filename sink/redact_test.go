package sink

// Tests of the Redacting wrapper (redact.go).

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

// TestRedacting_KeepsAsync: a NATS sink with redact set still publishes
// through DeliverAsync (JetStream's pipelined acks, no goroutine per
// message), and what it publishes is masked. A sink without DeliverAsync
// gets a wrapper without it.
func TestRedacting_KeepsAsync(t *testing.T) {
	s := natsTestServer(t, t.TempDir(), -1, nil)
	n := newTestNATS(t, NATSConfig{URL: s.ClientURL(), JetStream: true, Stream: &StreamConfig{Name: "INCS"}})
	r := Redacting(n, []string{"user_phone"})
	as, ok := r.(AsyncSink)
	require.True(t, ok, "the redacting NATS sink keeps the async path")

	ev := diff.SampleEvents()[0]
	require.Contains(t, string(ev.Body), "6281519140316")
	done := make(chan error, 1)
	as.DeliverAsync(context.Background(), &ev, func(err error) { done <- err })
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("no ack")
	}
	js, err := jetstream.New(natsTestConn(t, s))
	require.NoError(t, err)
	st, err := js.Stream(context.Background(), "INCS")
	require.NoError(t, err)
	m, err := st.GetMsg(context.Background(), 1)
	require.NoError(t, err)
	assert.NotContains(t, string(m.Data), "6281519140316")
	assert.Contains(t, string(m.Data), "6281****0316")
	assert.Equal(t, ev.ID, m.Header.Get("Nats-Msg-Id"))

	sync := Redacting(syncOnly{n}, []string{"user_phone"})
	_, ok = sync.(AsyncSink)
	assert.False(t, ok, "no DeliverAsync where the sink has none")
	assert.Same(t, Sink(n), Redacting(n, nil), "no fields: the sink itself")
}

// syncOnly hides a sink's DeliverAsync.
type syncOnly struct{ Sink }
