package sink

// Tests of the stream a JetStream NATS sink makes sure of (nats_stream.go).

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNATS_StreamCheckedOnceReachable(t *testing.T) {
	dir, port := t.TempDir(), natsFreePort(t)
	n := newTestNATS(t, NATSConfig{URL: "nats://127.0.0.1:" + strconv.Itoa(port), JetStream: true,
		Stream: &StreamConfig{Name: "INCS"}, Timeout: 500 * time.Millisecond})
	err := n.Deliver(context.Background(), newConformanceEvent(t, 1, 1))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not connected")

	s := natsTestServer(t, dir, port, nil)
	require.Eventually(t, func() bool {
		return n.Deliver(context.Background(), newConformanceEvent(t, 1, 1)) == nil
	}, 10*time.Second, 20*time.Millisecond)
	js := must(jetstream.New(natsTestConn(t, s)))
	st, err := js.Stream(context.Background(), "INCS")
	require.NoError(t, err)
	assert.Equal(t, []string{"incs.tasks.*.*"}, st.CachedInfo().Config.Subjects)
}

func TestNATS_Stream(t *testing.T) {
	tests := []struct {
		name     string
		existing []jetstream.StreamConfig
		stream   StreamConfig
		wantErr  string
		// wantStream receives the events.
		wantStream string
	}{
		{name: "created", stream: StreamConfig{Name: "INCS", MaxAge: time.Hour}, wantStream: "INCS"},
		{name: "same stream again", existing: []jetstream.StreamConfig{{Name: "INCS", Subjects: []string{"incs.tasks.*.*"}}},
			stream: StreamConfig{Name: "INCS"}, wantStream: "INCS"},
		{name: "covered by another stream", existing: []jetstream.StreamConfig{{Name: "ALL", Subjects: []string{"incs.>"}}},
			stream: StreamConfig{Name: "INCS"}, wantStream: "ALL"},
		{name: "name taken by other subjects", existing: []jetstream.StreamConfig{{Name: "INCS", Subjects: []string{"orders.>"}}},
			stream: StreamConfig{Name: "INCS"}, wantErr: "nats bus: stream INCS: exists with subjects [orders.>], which do not cover [incs.tasks.*.*]"},
		{name: "overlap", existing: []jetstream.StreamConfig{{Name: "ONE", Subjects: []string{"incs.tasks.1.*"}}},
			stream: StreamConfig{Name: "INCS"}, wantErr: "overlap stream ONE"},
		{name: "explicit subjects", stream: StreamConfig{Name: "INCS", Subjects: []string{"incs.>"}}, wantStream: "INCS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := natsTestServer(t, t.TempDir(), -1, nil)
			js := must(jetstream.New(natsTestConn(t, s)))
			ctx := context.Background()
			for _, sc := range tc.existing {
				_, err := js.CreateStream(ctx, sc)
				require.NoError(t, err)
			}
			sc := tc.stream
			n, err := NewNATS(ctx, NATSConfig{Name: "bus", URL: s.ClientURL(), JetStream: true, Stream: &sc})
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			defer n.Close(ctx)
			require.NoError(t, n.Deliver(ctx, newConformanceEvent(t, 1, 1)))
			rc := &natsStreamReceiver{js: js, stream: tc.wantStream}
			assert.Len(t, rc.Msgs(t, 1), 1)
			names := js.StreamNames(ctx)
			var all []string
			for name := range names.Name() {
				all = append(all, name)
			}
			require.NoError(t, names.Err())
			assert.Len(t, all, max(len(tc.existing), 1), "no extra stream")
		})
	}
}
