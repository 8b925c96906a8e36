// Tests of pruning: a purge the server refuses is counted and retried by
// the next prune, while the floor already hides the pruned events; a
// large purge goes in strides.

package jsstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store"
	"github.com/incs-relay/incs-relay/store/storetest"
)

// TestPruneRetriesFailedPurge: the relay's user may not purge (a real
// permission of the server's): the prune raises the floor, so no event
// at or below it is read, but the purge fails, is counted, and the
// messages stay; once the permission is granted (a config reload of the
// server), the next prune purges them without raising the floor again.
func TestPruneRetriesFailedPurge(t *testing.T) {
	opts := &server.Options{
		ServerName: "p1", Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir(),
		Users: []*server.User{{Username: "relay", Password: "pw", Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"$JS.API.STREAM.PURGE.>"}},
		}}},
	}
	srv, err := server.NewServer(opts)
	require.NoError(t, err)
	srv.Start()
	require.True(t, srv.ReadyForConnections(10*time.Second))
	t.Cleanup(srv.Shutdown)
	url := fmt.Sprintf("nats://relay:pw@%s", srv.Addr().String())

	defer func(n uint64) { purgeStride = n }(purgeStride)
	purgeStride = 2 // several requests for the retry too
	s := leadingStore(t, url, Options{ReplicaID: "a", Partitions: 1, Lease: 2 * time.Second})
	ctx := context.Background()
	for i := range int64(6) {
		_, err := s.Ingest(ctx, []diff.Task{storetest.Task(i+1, 10*(i+1), 10*(i+1)+1)}, time.UTC, true)
		require.NoError(t, err)
	}
	msgs := func() uint64 {
		info, err := s.stream.Info(ctx)
		require.NoError(t, err)
		return info.State.Msgs
	}
	before := msgs()
	require.NoError(t, s.SetCursor("hook", 8))
	prune := func() (store.PruneResult, error) {
		return s.Prune(ctx, store.PruneOptions{Retention: time.Nanosecond, Sinks: []string{"hook"}, Now: time.Now().Add(time.Hour)})
	}
	res, err := prune()
	require.Error(t, err, "the purge is refused")
	require.Equal(t, 8, res.Events, "the floor rose")
	require.Equal(t, uint64(1), s.PruneStatus().PurgeFailures)
	require.Equal(t, uint64(8), s.PruneStatus().Floor)
	require.Equal(t, before+1, msgs(), "nothing purged (one message more: the floor note)")
	first, err := s.First()
	require.NoError(t, err)
	require.Equal(t, uint64(9), first, "events at or below the floor are not read")
	evs, err := s.Read(ctx, 0, 100)
	require.NoError(t, err)
	require.Len(t, evs, 4)

	granted := *opts
	granted.Users = []*server.User{{Username: "relay", Password: "pw"}}
	require.NoError(t, srv.ReloadOptions(&granted))
	res, err = prune()
	require.NoError(t, err, "the next prune retries the purge")
	require.Zero(t, res.Events, "no event pruned twice")
	require.Equal(t, uint64(1), s.PruneStatus().PurgeFailures)
	require.Equal(t, before+1-4, msgs(), "the four event messages wholly at or below the floor purged")
	evs, err = s.Read(ctx, 0, 100)
	require.NoError(t, err)
	require.Len(t, evs, 4)
	require.Equal(t, uint64(9), evs[0].Offset)
}
