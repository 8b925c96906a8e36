package jsstore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store"
	"github.com/incs-relay/incs-relay/store/storetest"
)

// TestRegistryReplicas: two replicas sync the same new sinks at the same
// moment while the leader appends events, so each sees its own head: for
// every sink both end with the same entry (one replica's, created
// first), and every partition's cursor record at its Start-1, as both
// replicas read it.
func TestRegistryReplicas(t *testing.T) {
	srv := runServer(t)
	o := Options{Name: "reg", Partitions: 4, ReplicaID: "a"}
	a := leadingStore(t, srv.ClientURL(), o)
	ctx := context.Background()
	ingestPage := func(id int64) error {
		_, err := a.Ingest(ctx, []diff.Task{storetest.Task(id, 10*id, 10*id+1)}, time.UTC, true)
		return err
	}
	for id := range int64(5) {
		require.NoError(t, ingestPage(id+1))
	}
	t0 := time.Date(2026, 4, 8, 9, 0, 0, 0, time.UTC)
	_, err := a.SyncSinks(nil, t0) // the first sync: sinks new from now on are not adopted
	require.NoError(t, err)
	o.ReplicaID = "b"
	b := openStore(t, srv.ClientURL(), o)
	require.Eventually(t, func() bool { h, _ := b.Head(); return h == 10 }, 5*time.Second, 10*time.Millisecond)

	var specs []store.SinkSpec
	for i := range 12 {
		sp := store.SinkSpec{Name: fmt.Sprintf("sink%02d", i), Start: store.StartMode(i % 3), Offset: uint64(i)}
		specs = append(specs, sp)
	}
	results := make([][]store.RegisteredSink, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() { // the leader appends meanwhile
		for id := int64(6); ; id++ {
			select {
			case <-stop:
				return
			default:
			}
			assert.NoError(t, ingestPage(id))
		}
	})
	var syncs sync.WaitGroup
	for i, s := range []*Store{a, b} {
		syncs.Go(func() { results[i], errs[i] = s.SyncSinks(specs, t0.Add(time.Duration(i+1)*time.Second)) })
	}
	syncs.Wait()
	close(stop)
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	require.Len(t, results[0], len(specs))
	require.Equal(t, results[0], results[1], "both replicas return the same entries")
	winners := map[time.Time]int{}
	for _, e := range results[0] {
		winners[e.Added]++
		assert.False(t, e.Adopted, e.Name)
		assert.NotZero(t, e.Start, e.Name)
		for p := range o.Partitions {
			for _, s := range []*Store{a, b} {
				off, _, owner, gen, err := s.CursorOf(e.Name, p)
				require.NoError(t, err)
				assert.Equal(t, e.Start-1, off, "%s partition %d on %s", e.Name, p, s.o.ReplicaID)
				assert.Zero(t, gen)
				assert.Empty(t, owner)
			}
		}
	}
	all, err := b.Sinks()
	require.NoError(t, err)
	require.Equal(t, results[0], all)
	t.Logf("entries created by replica a / b: %d / %d", winners[t0.Add(time.Second)], winners[t0.Add(2*time.Second)])

	// A third replica that syncs later finds the entries and the records.
	o.ReplicaID = "c"
	c := openStore(t, srv.ClientURL(), o)
	got, err := c.SyncSinks(specs, t0.Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, results[0], got)
}
