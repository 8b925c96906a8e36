package sink

// Tests that the NATS sink's messages read as CloudEvents with the
// CloudEvents SDK's NATS protocol, equal to the stored events.

import (
	"context"
	"testing"
	"time"

	cenats "github.com/cloudevents/sdk-go/protocol/nats/v2"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

// sdkNATSReceiver starts a receiver built on the CloudEvents SDK's NATS
// binding, subscribed to subject on s, and returns the events it decodes.
// It is subscribed when it returns; it stops at cleanup.
func sdkNATSReceiver(t *testing.T, s *server.Server, subject string) <-chan cloudevents.Event {
	t.Helper()
	nc := natsTestConn(t, s)
	consumer, err := cenats.NewConsumerFromConn(nc, subject)
	require.NoError(t, err)
	c, err := cloudevents.NewClient(consumer)
	require.NoError(t, err)
	events := make(chan cloudevents.Event, 100)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() {
		stopped <- c.StartReceiver(ctx, func(ev cloudevents.Event) { events <- ev })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-stopped:
			require.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Error("the SDK receiver did not stop")
		}
	})
	require.Eventually(t, func() bool { return nc.NumSubscriptions() > 0 }, 5*time.Second, time.Millisecond, "the SDK receiver subscribes")
	require.NoError(t, nc.Flush(), "the server has the subscription")
	return events
}

// receiveCloudEvents waits for n events, failing after 5s.
func receiveCloudEvents(t *testing.T, events <-chan cloudevents.Event, n int) []cloudevents.Event {
	t.Helper()
	timeout := time.After(5 * time.Second)
	var got []cloudevents.Event
	for len(got) < n {
		select {
		case ev := <-events:
			got = append(got, ev)
		case <-timeout:
			require.FailNow(t, "SDK receiver", "got %d events, want %d", len(got), n)
		}
	}
	return got
}

// assertSameCloudEvents checks that got are the stored events, each once,
// in any order (the SDK's client hands events to the callback from several
// goroutines).
func assertSameCloudEvents(t *testing.T, stored []diff.Event, got []cloudevents.Event) {
	t.Helper()
	byID := map[string]*diff.Event{}
	for i := range stored {
		byID[stored[i].ID] = &stored[i]
	}
	for _, ev := range got {
		want, ok := byID[ev.ID()]
		if !assert.True(t, ok, "%s: unexpected or repeated", ev.ID()) {
			continue
		}
		delete(byID, ev.ID())
		assertSameCloudEvent(t, want, ev)
	}
	assert.Empty(t, byID, "not received")
}

// TestNATS_CloudEventsSDK reads the relay's NATS deliveries of stored
// events with the CloudEvents SDK's NATS binding, from core NATS and as a
// JetStream consumer delivers them from the stream the relay's jetstream
// sink published to, and gets the stored events: id, type, subject, time,
// the offset extension and data.
func TestNATS_CloudEventsSDK(t *testing.T) {
	stored := storedEvents(t, 5)
	ctx := context.Background()
	s := natsTestServer(t, t.TempDir(), -1, nil)

	t.Run("core", func(t *testing.T) {
		events := sdkNATSReceiver(t, s, "incs.tasks.>")
		n := newTestNATS(t, NATSConfig{URL: s.ClientURL()})
		for i := range stored {
			require.NoError(t, n.Deliver(ctx, &stored[i]))
		}
		assertSameCloudEvents(t, stored, receiveCloudEvents(t, events, len(stored)))
	})

	t.Run("jetstream", func(t *testing.T) {
		n := newTestNATS(t, NATSConfig{URL: s.ClientURL(), Subject: "incs.js.{task_id}.{event}", JetStream: true,
			Stream: &StreamConfig{Name: "INCS_JS"}})
		for i := range stored {
			require.NoError(t, n.Deliver(ctx, &stored[i]), "acknowledged by the stream")
		}
		require.NoError(t, n.Deliver(ctx, &stored[2]), "a redelivery, deduplicated by JetStream")
		events := sdkNATSReceiver(t, s, "sdk.deliver")
		js, err := jetstream.New(natsTestConn(t, s))
		require.NoError(t, err)
		_, err = js.CreatePushConsumer(ctx, "INCS_JS", jetstream.ConsumerConfig{
			Name: "sdk", DeliverSubject: "sdk.deliver", AckPolicy: jetstream.AckNonePolicy,
		})
		require.NoError(t, err)
		assertSameCloudEvents(t, stored, receiveCloudEvents(t, events, len(stored)))
		select {
		case ev := <-events:
			t.Fatalf("an extra delivery: %s", ev.ID())
		case <-time.After(100 * time.Millisecond):
		}
	})
}
