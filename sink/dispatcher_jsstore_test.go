package sink

// jsOutbox, a partition of the JetStream store as an Outbox for the
// dispatcher tests (forEachOutbox in dispatcher_test.go).

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store/jsstore"
)

// jsOutbox runs the dispatcher tests on the JetStream store as the relay
// does in jetstream mode: a dispatcher reads one partition
// (jsstore.PartitionOutbox, which reads the stream, not memory); the
// store has one partition, so every event is in it. Its cache is off, so
// every read fetches from the stream.
type jsOutbox struct {
	*jsstore.PartitionOutbox
	s *jsstore.Store
}

func newJSOutbox(t testing.TB) dispatchTestOutbox {
	srv := natsTestServer(t, t.TempDir(), -1, nil)
	nc, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	s, err := jsstore.Open(context.Background(), nc, jsstore.Options{ReplicaID: "d", Partitions: 1, CacheBytes: -1})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		assert.NoError(t, s.Close())
	})
	require.Eventually(t, s.IsLeader, 10*time.Second, 10*time.Millisecond)
	return jsOutbox{PartitionOutbox: s.Partition(0), s: s}
}

var _ Outbox = jsOutbox{}

// Append ingests a task per event (appendByIngest) and reads the events
// back from the partition.
func (o jsOutbox) Append(t testing.TB, evs ...diff.Event) []diff.Event {
	return appendByIngest(t, o.s, o.PartitionOutbox, evs)
}

// DeadLetters returns the store's dead letters of sink, in offset order.
func (o jsOutbox) DeadLetters(t testing.TB, sink string) []dispatchDeadLetter {
	dls, err := o.s.DeadLetters(sink)
	require.NoError(t, err)
	return deadLettersOf(dls)
}
