// Benchmarks: Ingest on a single node and on a cluster, Read, and
// delivery.

package jsstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store/storetest"
)

const (
	benchTasks = 100 // tasks per page, as store's BenchmarkIngest
	benchLogs  = 4   // new logs per task
)

var benchLoc = time.FixedZone("CST", 8*3600)

// benchPage returns page i: benchTasks new tasks of benchLogs new logs.
func benchPage(i int) []diff.Task {
	tasks := make([]diff.Task, benchTasks)
	for j := range tasks {
		id := int64(1 + i*benchTasks + j)
		logs := make([]int64, benchLogs)
		for k := range logs {
			logs[k] = id*benchLogs + int64(k)
		}
		tasks[j] = storetest.Task(id, logs...)
	}
	return tasks
}

// BenchmarkIngest measures Ingest of pages of 100 tasks with 4 new logs
// each (400 events a page) into a single-node JetStream server in this
// process (file storage, replicas 1), as store's BenchmarkIngest does for
// bbolt (which also decodes the API page; here the tasks are built):
//
//   - page: one Ingest a page; a page is one atomic batch (500 messages).
//   - batch8: 8 pages in one call: 3,200 events in batches of whole
//     tasks, at most 1,000 messages each.
//   - idle: Ingest of a page of 100 unchanged tasks (the in-memory
//     seen-set; no round trip).
func BenchmarkIngest(b *testing.B) {
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		pages int
	}{{"page", 1}, {"batch8", 8}} {
		b.Run(c.name, func(b *testing.B) {
			srv := runServer(b)
			benchIngest(b, leadingStore(b, srv.ClientURL(), Options{ReplicaID: "bench", Lease: 10 * time.Second}), c.pages)
		})
	}
	b.Run("idle", func(b *testing.B) {
		srv := runServer(b)
		s := leadingStore(b, srv.ClientURL(), Options{ReplicaID: "bench", Lease: 10 * time.Second})
		page := benchPage(0)
		if _, err := s.Ingest(ctx, page, benchLoc, true); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for range b.N {
			res, err := s.Ingest(ctx, page, benchLoc, true)
			if err != nil || res.Skipped != benchTasks {
				b.Fatal(res, err)
			}
		}
		b.ReportMetric(float64(b.N*benchTasks)/b.Elapsed().Seconds(), "tasks/s")
	})
}

// BenchmarkRead measures reading and decoding 100 stored events as a sink
// does, from the whole outbox and from one partition's.
func BenchmarkRead(b *testing.B) {
	ctx := context.Background()
	srv := runServer(b)
	s := leadingStore(b, srv.ClientURL(), Options{ReplicaID: "bench", Lease: 10 * time.Second, Partitions: 4})
	for i := range 10 {
		if _, err := s.Ingest(ctx, benchPage(i), benchLoc, true); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		read func(ctx context.Context, from uint64, limit int) ([]diff.Event, error)
	}{{"outbox", s.Read}, {fmt.Sprintf("partition1of%d", s.Partitions()), s.Partition(1).Read}} {
		b.Run(c.name, func(b *testing.B) {
			n := 0
			for range b.N {
				evs, err := c.read(ctx, 1, 100)
				if err != nil || len(evs) != 100 {
					b.Fatal(len(evs), err)
				}
				n += len(evs)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkIngestCluster is BenchmarkIngest/page on a three-node cluster
// in this process, the stream replicated three times (the server stages
// a replicated batch in memory; raft makes it durable).
func BenchmarkIngestCluster(b *testing.B) {
	nodes := runCluster(b, 3).nodes
	benchIngest(b, leadingStore(b, nodes[0].ClientURL(), Options{ReplicaID: "bench", Replicas: 3, Lease: 10 * time.Second}), 1)
}

// benchIngest ingests b.N calls of perCall pages each into s and reports
// events/s.
func benchIngest(b *testing.B, s *Store, perCall int) {
	ctx := context.Background()
	pages := make([][]diff.Task, b.N)
	for i := range pages {
		for j := range perCall {
			pages[i] = append(pages[i], benchPage(i*perCall+j)...)
		}
	}
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.Ingest(ctx, pages[i], benchLoc, true); err != nil {
			b.Fatal(err)
		}
	}
	head, _ := s.Head()
	b.ReportMetric(float64(head)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkDeliver measures what a dispatcher costs the store: read 100
// events of a partition and persist the cursor, over and over, on a
// follower (the reads come from its view; the cursor is a KV put).
func BenchmarkDeliver(b *testing.B) {
	ctx := context.Background()
	srv := runServer(b)
	lead := leadingStore(b, srv.ClientURL(), Options{ReplicaID: "lead", Lease: 10 * time.Second, Partitions: 1})
	for i := range 10 {
		if _, err := lead.Ingest(ctx, benchPage(i), benchLoc, true); err != nil {
			b.Fatal(err)
		}
	}
	s := openStore(b, srv.ClientURL(), Options{ReplicaID: "follower", Lease: 10 * time.Second, Partitions: 1})
	po := s.Partition(0)
	b.ResetTimer()
	n := 0
	cur := uint64(0)
	for range b.N {
		evs, err := po.Read(ctx, cur+1, 100)
		if err != nil || len(evs) == 0 {
			if cur = 0; err == nil {
				continue
			}
			b.Fatal(err)
		}
		cur = evs[len(evs)-1].Offset
		if err := po.SetCursor("hook", cur); err != nil {
			b.Fatal(err)
		}
		n += len(evs)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}
