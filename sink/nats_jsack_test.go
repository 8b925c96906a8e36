package sink

// Tests of the JetStream ack tracker (nats_jsack.go).

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNATS_AsyncAcks drives DeliverAsync against a responder standing in
// for a stream on a real server: each way an ack can go wrong calls done
// exactly once with a retryable error, and an ack that arrives calls it
// with nil.
func TestNATS_AsyncAcks(t *testing.T) {
	s := natsTestServer(t, t.TempDir(), -1, nil)
	nc := natsTestConn(t, s)
	answers := map[string]string{ // task id in the subject -> the answer
		"1": `{"stream":"FAKE","seq":1}`,
		"2": `{"stream":"FAKE","seq":2,"duplicate":true}`,
		"3": `{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}`,
		"4": `not json`,
		// 5: no answer at all
	}
	_, err := nc.Subscribe("incs.tasks.*.*", func(m *nats.Msg) {
		if a, ok := answers[strings.Split(m.Subject, ".")[2]]; ok {
			_ = m.Respond([]byte(a))
		}
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	n := newTestNATS(t, NATSConfig{URL: s.ClientURL(), JetStream: true, Timeout: 300 * time.Millisecond})

	deliver := func(ctx context.Context, taskID int64) error {
		done := make(chan error, 2)
		n.DeliverAsync(ctx, newConformanceEvent(t, taskID, taskID), func(err error) { done <- err })
		err := <-done
		assert.Never(t, func() bool { return len(done) > 0 }, 50*time.Millisecond, 10*time.Millisecond, "done called twice")
		return err
	}
	ctx := context.Background()
	require.NoError(t, deliver(ctx, 1))
	require.NoError(t, deliver(ctx, 2), "a duplicate counts as delivered")
	err = deliver(ctx, 3)
	assert.ErrorContains(t, err, "maximum messages exceeded")
	err = deliver(ctx, 4)
	assert.ErrorIs(t, err, jetstream.ErrInvalidJSAck)
	start := time.Now()
	err = deliver(ctx, 5)
	assert.ErrorIs(t, err, nats.ErrTimeout)
	assert.Less(t, time.Since(start), 2*time.Second)
	kind, _ := classifyFailure(err)
	assert.Equal(t, failRetryable, kind, "a missing ack is retried")

	// An attempt whose ctx ends while it waits ends soon after.
	ctx2, cancel := context.WithCancel(ctx)
	time.AfterFunc(50*time.Millisecond, cancel)
	assert.ErrorIs(t, deliver(ctx2, 5), context.Canceled)

	// Close fails what still waits for its ack.
	done := make(chan error, 1)
	long := newTestNATS(t, NATSConfig{URL: s.ClientURL(), JetStream: true, Timeout: time.Minute})
	long.DeliverAsync(ctx, newConformanceEvent(t, 5, 5), func(err error) { done <- err })
	require.NoError(t, long.Close(ctx))
	select {
	case err := <-done:
		assert.ErrorContains(t, err, "closed before the ack")
	case <-time.After(5 * time.Second):
		t.Fatal("done not called at Close")
	}
}

// TestJSAcks_PublishAfterClose: acks closed before their first use never
// subscribe nor start the sweeper; a publish then fails at once.
func TestJSAcks_PublishAfterClose(t *testing.T) {
	s := natsTestServer(t, t.TempDir(), -1, nil)
	nc := natsTestConn(t, s)
	a := jsAcks{sink: "bus", timeout: time.Second}
	a.close()
	var got error
	a.publish(context.Background(), nc, &nats.Msg{Subject: "incs.tasks.1.created"}, "log-1", func(err error) { got = err })
	assert.ErrorContains(t, got, "nats bus: closed")
	assert.Nil(t, a.sub, "no inbox subscription")
}

func TestParsePubAck(t *testing.T) {
	tests := []struct {
		data string
		dup  bool
		err  string
	}{
		{data: `{"stream":"INCS","seq":12}`},
		{data: `{"stream":"INCS","seq":12,"duplicate":true}`, dup: true},
		{data: `{"stream":"INCS","domain":"hub","seq":3,"duplicate":false}`},
		{data: `{ "stream": "INCS", "seq": 4, "duplicate": true }`, dup: true},
		{data: `{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"INCS","seq":0}`, err: "maximum messages exceeded"},
		{data: `{"stream":"INCS","error":{"code":400,"description":"bad"}}`, err: "bad"},
		{data: `{"stream":"","seq":1}`, err: jetstream.ErrInvalidJSAck.Error()},
		{data: `{"stream":"INCS","seq":`, err: jetstream.ErrInvalidJSAck.Error()},
		{data: ``, err: jetstream.ErrInvalidJSAck.Error()},
		{data: `+OK`, err: jetstream.ErrInvalidJSAck.Error()},
	}
	for _, tt := range tests {
		dup, err := parsePubAck([]byte(tt.data))
		if tt.err != "" {
			assert.ErrorContains(t, err, tt.err, tt.data)
			continue
		}
		assert.NoError(t, err, tt.data)
		assert.Equal(t, tt.dup, dup, tt.data)
	}
}
