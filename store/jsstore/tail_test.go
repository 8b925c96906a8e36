// Tests of the tail's errors: a message it cannot read is skipped,
// counted and logged, and only a run of them makes the tail broken.

package jsstore

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store/storetest"
)

// TestTail_BadEventMessage: the tail does not read event messages; a
// read that meets one it cannot parse fails naming it, without its body.
func TestTail_BadEventMessage(t *testing.T) {
	srv := runServer(t)
	s := leadingStore(t, srv.ClientURL(), Options{Name: "badev", ReplicaID: "r1", Partitions: 1})
	ctx := context.Background()
	_, err := s.Ingest(ctx, []diff.Task{storetest.Task(1, 10)}, time.UTC, true)
	require.NoError(t, err)
	js, err := jetstream.New(connect(t, srv.ClientURL()))
	require.NoError(t, err)
	ack, err := js.Publish(ctx, s.subj+"ev.0", []byte("secret-body"))
	require.NoError(t, err)
	_, err = s.Ingest(ctx, []diff.Task{storetest.Task(2, 20)}, time.UTC, true)
	require.NoError(t, err)
	_, err = s.Partition(0).Read(ctx, 0, 10)
	require.Error(t, err)
	assert.Contains(t, err.Error(), fmt.Sprintf("event message %d", ack.Sequence))
	assert.NotContains(t, err.Error(), "secret-body")
	assert.Zero(t, s.TailErrors().Errors, "the tail never read it")
}

// TestTail_Errors: malformed messages published onto the store's
// subjects are skipped, counted, and logged at warn with subject and
// sequence but not their body; one is not Broken, three in a row are,
// and a message read without error clears the run.
func TestTail_Errors(t *testing.T) {
	srv := runServer(t)
	var logs bytes.Buffer // read once the store closed
	s := leadingStore(t, srv.ClientURL(), Options{Name: "tailerr", ReplicaID: "r1",
		Logger: zerolog.New(zerolog.SyncWriter(&logs)).Level(zerolog.WarnLevel)})
	require.Zero(t, s.TailErrors(), "a sound stream reads without error")
	js, err := jetstream.New(connect(t, srv.ClientURL()))
	require.NoError(t, err)
	ctx := context.Background()
	publish := func(subj, body string) uint64 {
		t.Helper()
		ack, err := js.Publish(ctx, s.subj+subj, []byte(body))
		require.NoError(t, err)
		require.NoError(t, s.v.waitApplied(ctx, ack.Sequence))
		return ack.Sequence
	}

	seq := publish("seen.not-a-task", "secret-body-1")
	st := s.TailErrors()
	assert.Equal(t, uint64(1), st.Errors)
	assert.Equal(t, 1, st.Consecutive)
	assert.False(t, st.Broken(), "one bad message is skipped, not a broken tail")
	assert.Contains(t, st.LastError, fmt.Sprintf("%sseen.not-a-task seq %d", s.subj, seq))
	assert.WithinDuration(t, time.Now(), st.LastErrorAt, 10*time.Second)

	loc := time.UTC
	_, err = s.Ingest(ctx, []diff.Task{storetest.Task(1, 10)}, loc, true)
	require.NoError(t, err)
	assert.Zero(t, s.TailErrors().Consecutive, "a message read clears the run")
	assert.Equal(t, uint64(1), s.TailErrors().Errors)

	publish("epoch", "secret-body-2")
	publish("seen.99x", "secret-body-3")
	require.False(t, s.TailErrors().Broken())
	last := publish("rule.x", "secret-body-4")
	st = s.TailErrors()
	assert.Equal(t, uint64(4), st.Errors)
	assert.True(t, st.Broken(), "three in a row")
	assert.Contains(t, st.LastError, fmt.Sprintf("seq %d", last))

	require.NoError(t, s.Close())
	out := logs.String()
	assert.Contains(t, out, `"level":"warn"`)
	assert.Contains(t, out, fmt.Sprintf(`"subject":"%sepoch"`, s.subj))
	assert.Contains(t, out, fmt.Sprintf(`"seq":%d`, last))
	assert.NotContains(t, out, "secret-body", "never a message body")
}
