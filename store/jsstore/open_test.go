package jsstore

// Opening a replica reads the stream's records, never its events.

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store/storetest"
)

// TestOpenReadsNoEvents: a replica opened on a stream of 2,000 events
// makes no request for an event message (it watches every message get,
// direct get and consumer creation on the server's API: no consumer
// over the whole stream), and its view
// holds the head and the seen-set; its first read of an event then asks
// for event messages.
func TestOpenReadsNoEvents(t *testing.T) {
	srv := runServer(t)
	ctx := context.Background()
	s := leadingStore(t, srv.ClientURL(), Options{ReplicaID: "a", Partitions: 4})
	for i := range int64(20) {
		var tasks []diff.Task
		for j := range int64(25) {
			id := i*25 + j + 1
			tasks = append(tasks, storetest.Task(id, 10*id, 10*id+1, 10*id+2, 10*id+3))
		}
		_, err := s.Ingest(ctx, tasks, time.UTC, true)
		require.NoError(t, err)
	}
	head, err := s.Head()
	require.NoError(t, err)
	require.Equal(t, uint64(2000), head)

	spy := connect(t, srv.ClientURL())
	var mu sync.Mutex
	var asked []string // API requests that name an event subject
	direct := "$JS.API.DIRECT.GET." + s.name
	// Direct gets on the outbox's stream only: the leading replica's
	// lease and membership KV reads are direct gets on their own buckets.
	_, err = spy.Subscribe("$JS.API.>", func(m *nats.Msg) {
		body := string(m.Data)
		// A consumer over the whole prefix reads the events too.
		// (JSON from Go escapes '>'.)
		whole := strings.Contains(m.Subject, "CONSUMER.CREATE") &&
			(strings.Contains(body, `"`+s.subj+`>"`) || strings.Contains(body, `"`+s.subj+`\u003e"`))
		if whole || strings.Contains(body, s.subj+"ev.") || m.Subject == direct || strings.HasPrefix(m.Subject, direct+".") {
			mu.Lock()
			asked = append(asked, m.Subject+" "+string(m.Data))
			mu.Unlock()
		}
	})
	require.NoError(t, err)
	require.NoError(t, spy.Flush())

	r := openStore(t, srv.ClientURL(), Options{ReplicaID: "r", Partitions: 4})
	rh, err := r.Head()
	require.NoError(t, err)
	require.Equal(t, head, rh)
	r.v.mu.RLock()
	require.Len(t, r.v.seen, 500)
	r.v.mu.RUnlock()
	require.NoError(t, spy.Flush())
	mu.Lock()
	require.Empty(t, asked, "opening asked for event messages")
	mu.Unlock()

	// The first read does.
	ev, err := r.Event(1234)
	require.NoError(t, err)
	require.Equal(t, uint64(1234), ev.Offset)
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(asked) > 0 }, 5*time.Second, 10*time.Millisecond)
}

// TestOpenReader: a store opened for a one-off command reads no seen
// record (what only a leader diffs against), reads events and cursors as
// any replica does, and takes no part in the cluster.
func TestOpenReader(t *testing.T) {
	srv := runServer(t)
	ctx := context.Background()
	s := leadingStore(t, srv.ClientURL(), Options{ReplicaID: "a"})
	page := make([]diff.Task, 50)
	for i := range page {
		page[i] = storetest.Task(int64(i+1), int64(10*i+1), int64(10*i+2))
	}
	_, err := s.Ingest(ctx, page, benchLoc, true)
	require.NoError(t, err)
	require.NoError(t, s.SetCursor("hooks", 40))

	r := openStore(t, srv.ClientURL(), Options{ReplicaID: "reader", Reader: true})
	head, err := r.Head()
	require.NoError(t, err)
	require.Equal(t, uint64(100), head)
	r.v.mu.RLock()
	require.Empty(t, r.v.seen, "no seen record read")
	r.v.mu.RUnlock()
	st, err := r.Stats()
	require.NoError(t, err)
	require.Equal(t, uint64(100), st.Head)
	require.Zero(t, st.Tasks)
	c, err := r.Cursor("hooks")
	require.NoError(t, err)
	require.Equal(t, uint64(40), c)
	evs, err := r.Read(ctx, 41, 5)
	require.NoError(t, err)
	require.Len(t, evs, 5)
	require.Equal(t, uint64(41), evs[0].Offset)
	require.ErrorContains(t, r.Run(ctx), "Reader")
}

// TestOpenReadsLastRecords: a replica's tail starts with the last record
// of each subject (the server's per-subject index) rather than reading
// the stream through its filter: after three leaders (three epoch
// records, the older two superseded) and tasks stored again, a new
// replica's view holds the last epoch, the head and every task's last
// seen record, as its leader's does.
func TestOpenReadsLastRecords(t *testing.T) {
	srv := runServer(t)
	ctx := context.Background()
	var lead *Store
	for i := range int64(3) {
		if lead != nil {
			lead.Close() // releases the lease
		}
		lead = leadingStore(t, srv.ClientURL(), Options{ReplicaID: fmt.Sprintf("l%d", i), Partitions: 4})
		// Task 1 gains logs under every leader; task i+2 is new.
		logs := []int64{1}
		for j := range i {
			logs = append(logs, 10+j)
		}
		_, err := lead.Ingest(ctx, []diff.Task{storetest.Task(1, logs...), storetest.Task(i+2, 100*(i+2))}, time.UTC, true)
		require.NoError(t, err)
	}

	spy := connect(t, srv.ClientURL())
	var mu sync.Mutex
	var creates []string
	_, err := spy.Subscribe("$JS.API.CONSUMER.CREATE."+lead.name+".>", func(m *nats.Msg) {
		mu.Lock()
		creates = append(creates, string(m.Data))
		mu.Unlock()
	})
	require.NoError(t, err)
	require.NoError(t, spy.Flush())

	r := openStore(t, srv.ClientURL(), Options{ReplicaID: "r", Partitions: 4})
	require.NoError(t, spy.Flush())
	mu.Lock()
	require.NotEmpty(t, creates)
	require.Contains(t, creates[0], `"deliver_policy":"last_per_subject"`, "the tail starts from the per-subject index")
	mu.Unlock()

	lead.v.mu.RLock()
	want := struct {
		head  uint64
		epoch epochRec
		seen  map[int64]seenEnt
	}{lead.v.head, lead.v.epoch, maps.Clone(lead.v.seen)}
	lead.v.mu.RUnlock()
	r.v.mu.RLock()
	defer r.v.mu.RUnlock()
	require.Equal(t, uint64(6), r.v.head, "3 logs of task 1, one each of tasks 2-4")
	require.Equal(t, want.head, r.v.head)
	require.Equal(t, "l2", r.v.epoch.Leader)
	require.Equal(t, want.epoch.Epoch, r.v.epoch.Epoch)
	require.Len(t, r.v.seen, 4)
	for id, e := range want.seen {
		require.Equal(t, e.seq, r.v.seen[id].seq, "task %d's last seen record", id)
	}
}
