package jsstore

// Tests of reading event messages by direct gets.

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store/storetest"
)

// TestDirectGets: a stream made without allow_direct (as older versions
// made it) gets it at open; reads by direct get and reads through the
// leader's API return the same events; a direct get that finds nothing
// is not taken for the end without asking the leader.
func TestDirectGets(t *testing.T) {
	srv := runServer(t)
	ctx := context.Background()
	js, err := jetstream.New(connect(t, srv.ClientURL()))
	require.NoError(t, err)
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "old", Subjects: []string{SubjectPrefix("old") + ">"}, Storage: jetstream.FileStorage,
		AllowRollup: true, AllowAtomicPublish: true, Metadata: map[string]string{"incs.partitions": "2"},
	})
	require.NoError(t, err)

	s := leadingStore(t, srv.ClientURL(), Options{Name: "old", ReplicaID: "a", Partitions: 2, CacheBytes: -1})
	info, err := s.stream.Info(ctx)
	require.NoError(t, err)
	require.True(t, info.Config.AllowDirect, "turned on at open")
	require.False(t, s.direct.off.Load())
	for i := range int64(10) {
		_, err := s.Ingest(ctx, []diff.Task{storetest.Task(i+1, 10*(i+1), 10*(i+1)+1, 10*(i+1)+2)}, time.UTC, true)
		require.NoError(t, err)
	}
	direct, err := s.Read(ctx, 0, 100)
	require.NoError(t, err)
	require.Len(t, direct, 30)

	// The same through the leader only.
	s.direct.off.Store(true)
	viaLeader, err := s.Read(ctx, 0, 100)
	require.NoError(t, err)
	require.Equal(t, direct, viaLeader)
	s.direct.off.Store(false)

	// Past the end a direct get finds nothing and the leader is asked:
	// still nothing, no error.
	last, err := s.lastMsg(ctx, s.subj+"head")
	require.NoError(t, err)
	m, err := s.getNext(ctx, last.Sequence+1, s.evSubject(-1))
	require.ErrorIs(t, err, jetstream.ErrMsgNotFound)
	require.Nil(t, m)
	_, err = s.directGet(ctx, last.Sequence+1, s.evSubject(0))
	require.ErrorIs(t, err, jetstream.ErrMsgNotFound)
	got, err := s.directGet(ctx, 1, s.evSubject(1))
	require.NoError(t, err)
	require.Equal(t, s.subj+"ev.1", got.Subject)
}

// TestDirectGetsNotAllowed: a user that may not update the stream opens
// an old one without allow_direct: the store reads through the leader.
func TestDirectGetsNotAllowed(t *testing.T) {
	srv, err := server.NewServer(&server.Options{
		ServerName: "d1", Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir(),
		Users: []*server.User{
			{Username: "admin", Password: "pw"},
			{Username: "relay", Password: "pw", Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"$JS.API.STREAM.UPDATE.>"}},
			}},
		},
	})
	require.NoError(t, err)
	srv.Start()
	require.True(t, srv.ReadyForConnections(10*time.Second))
	t.Cleanup(srv.Shutdown)
	ctx := context.Background()
	js, err := jetstream.New(connect(t, "nats://admin:pw@"+srv.Addr().String()))
	require.NoError(t, err)
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "old", Subjects: []string{SubjectPrefix("old") + ">"}, Storage: jetstream.FileStorage,
		AllowRollup: true, AllowAtomicPublish: true, Metadata: map[string]string{"incs.partitions": "2"},
	})
	require.NoError(t, err)

	s := leadingStore(t, "nats://relay:pw@"+srv.Addr().String(), Options{Name: "old", ReplicaID: "a", Partitions: 2, CacheBytes: -1})
	require.True(t, s.direct.off.Load(), "no direct gets")
	_, err = s.Ingest(ctx, []diff.Task{storetest.Task(1, 10, 11)}, time.UTC, true)
	require.NoError(t, err)
	evs, err := s.Partition(1).Read(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, evs, 2)
}

// TestRequest_UnansweredReadEnds: a read whose request a server took and
// never answered (it died meanwhile) ends with an error after requestWait,
// though the caller's context has no deadline (a dispatcher's read): in a
// chaos run such a read, sent as a NATS node was killed, stopped two
// partitions' delivery for good.
func TestRequest_UnansweredReadEnds(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	require.NoError(t, err)
	srv.Start()
	require.True(t, srv.ReadyForConnections(10*time.Second))
	t.Cleanup(srv.Shutdown)
	nc := connect(t, srv.ClientURL())
	// Responders that take every request and never answer.
	for _, subj := range []string{"$JS.API.DIRECT.GET.silent", "$JS.API.STREAM.MSG.GET.silent"} {
		_, err := nc.Subscribe(subj, func(*nats.Msg) {})
		require.NoError(t, err)
	}
	require.NoError(t, nc.Flush())

	old := requestWait
	requestWait = 200 * time.Millisecond
	t.Cleanup(func() { requestWait = old })
	s := &Store{nc: nc, name: "silent", log: zerolog.Nop()}
	done := make(chan error, 1)
	go func() {
		_, err := s.getNext(context.Background(), 1, "x")
		done <- err
	}()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(10 * time.Second):
		t.Fatal("a read nobody answers still waits after 10s")
	}
}
