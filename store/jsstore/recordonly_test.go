package jsstore

// Partition reads across batches that carry records but no events.

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store/storetest"
)

// TestPartitionReads_RecordOnlyBatches: batches holding only seen records
// (a snapshot's, no events) interleaved with batches of events, while
// every partition is read as a dispatcher reads it (on the leader, whose
// reads follow its own batches in the cache, and on a follower): every
// event is read once, in offset order. An earlier design's record-only
// batches left a partition undelivered in the chaos test, a cause never
// found; this pins the behaviour.
func TestPartitionReads_RecordOnlyBatches(t *testing.T) {
	srv := runServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	loc := time.FixedZone("CST", 8*3600)
	const parts = 3
	lead := leadingStore(t, srv.ClientURL(), Options{ReplicaID: "a", Partitions: parts})
	follower := openStore(t, srv.ClientURL(), Options{ReplicaID: "b", Partitions: parts})

	type got struct {
		mu   sync.Mutex
		offs map[int][]uint64
	}
	read := func(s *Store, g *got, stop <-chan struct{}) {
		var wg sync.WaitGroup
		for p := range parts {
			wg.Go(func() {
				po := s.Partition(p)
				notify := s.Notify(ctx)
				next := uint64(1)
				for {
					evs, err := po.Read(ctx, next, 7)
					if err != nil {
						t.Errorf("partition %d: %v", p, err)
						return
					}
					for _, ev := range evs {
						g.mu.Lock()
						g.offs[p] = append(g.offs[p], ev.Offset)
						g.mu.Unlock()
						next = ev.Offset + 1
					}
					if len(evs) > 0 {
						continue
					}
					select {
					case <-stop:
						return
					case <-notify:
					case <-time.After(20 * time.Millisecond):
					}
				}
			})
		}
		wg.Wait()
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	onLead, onFollower := &got{offs: map[int][]uint64{}}, &got{offs: map[int][]uint64{}}
	readers.Go(func() { read(lead, onLead, stop) })
	readers.Go(func() { read(follower, onFollower, stop) })

	id, evTasks := int64(1), 0
	for round := range 60 {
		// Record-only: tasks seen for the first time in a snapshot.
		var snap []diff.Task
		for range 1 + round%3 {
			snap = append(snap, storetest.Task(id, 1000*id))
			id++
		}
		_, err := lead.Ingest(ctx, snap, loc, false)
		require.NoError(t, err)
		// Events: new tasks (their logs), in one partition or several.
		var tasks []diff.Task
		for range 1 + round%4 {
			tasks = append(tasks, storetest.Task(id, 1000*id, 1000*id+1))
			id++
		}
		_, err = lead.Ingest(ctx, tasks, loc, true)
		require.NoError(t, err)
		evTasks += len(tasks)
	}
	head, err := lead.Head()
	require.NoError(t, err)
	require.EqualValues(t, 2*evTasks, head, "the snapshot batches stored no event")
	all, err := lead.Read(ctx, 0, int(head)+10)
	require.NoError(t, err)
	require.Len(t, all, int(head))
	want := map[int][]uint64{}
	for _, ev := range all {
		p := lead.partition(ev.Data.TaskID)
		want[p] = append(want[p], ev.Offset)
	}
	for name, g := range map[string]*got{"leader": onLead, "follower": onFollower} {
		require.Eventually(t, func() bool {
			g.mu.Lock()
			defer g.mu.Unlock()
			for p := range parts {
				if len(g.offs[p]) < len(want[p]) {
					return false
				}
			}
			return true
		}, 20*time.Second, 10*time.Millisecond, "%s: every event read", name)
		g.mu.Lock()
		for p := range parts {
			require.Equal(t, want[p], g.offs[p], fmt.Sprintf("%s partition %d: each event once, in order", name, p))
		}
		g.mu.Unlock()
	}
	close(stop)
	readers.Wait()
}
