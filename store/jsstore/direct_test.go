package jsstore

// Tests of reading event messages by direct gets.

import (
	"context"
	"fmt"
	"sync/atomic"
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

// TestRequest_UnansweredReadAskedAgain: a read whose request a server
// took and never answered (it died meanwhile) is sent again after
// requestWait, though the caller's context has no deadline (a
// dispatcher's read): in a chaos run such a read, sent as a NATS node was
// killed, stopped two partitions' delivery for good. A caller's deadline
// still ends a read nobody answers.
func TestRequest_UnansweredReadAskedAgain(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	require.NoError(t, err)
	srv.Start()
	require.True(t, srv.ReadyForConnections(10*time.Second))
	t.Cleanup(srv.Shutdown)
	nc := connect(t, srv.ClientURL())
	// The direct get's responder swallows the first request, as a server
	// that died with it, and answers the next; the leader's never answers.
	var asked atomic.Int32
	_, err = nc.Subscribe("$JS.API.DIRECT.GET.flaky", func(m *nats.Msg) {
		if asked.Add(1) == 1 {
			return
		}
		r := nats.NewMsg(m.Reply)
		r.Header.Set(jetstream.SequenceHeader, "7")
		r.Header.Set(jetstream.SubjectHeader, "x")
		r.Data = []byte("event")
		_ = m.RespondMsg(r)
	})
	require.NoError(t, err)
	_, err = nc.Subscribe("$JS.API.STREAM.MSG.GET.silent", func(*nats.Msg) {})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())

	old := requestWait
	requestWait = 200 * time.Millisecond
	t.Cleanup(func() { requestWait = old })

	s := &Store{nc: nc, name: "flaky", log: zerolog.Nop()}
	done := make(chan error, 1)
	go func() {
		m, err := s.getNext(context.Background(), 1, "x")
		if err == nil && (m.Sequence != 7 || string(m.Data) != "event") {
			err = fmt.Errorf("got %d %q", m.Sequence, m.Data)
		}
		done <- err
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
		require.EqualValues(t, 2, asked.Load(), "asked again after requestWait")
	case <-time.After(10 * time.Second):
		t.Fatal("a read whose request was lost still waits after 10s")
	}

	s = &Store{nc: nc, name: "silent", log: zerolog.Nop()}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = s.getMsg(ctx, msgReq{Seq: 1})
	require.ErrorIs(t, err, context.DeadlineExceeded, "the caller's deadline ends a read nobody answers")
}
