package store

import (
	"context"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/incs-relay/incs-relay/diff"
)

const (
	benchTasks = 100 // tasks per page
	benchLogs  = 4   // logs per task
)

// benchPages returns n distinct API pages of new tasks.
func benchPages(n int) [][]byte {
	pages := make([][]byte, n)
	for i := range pages {
		pages[i] = pageJSON(int64(1+i*benchTasks), benchTasks, benchLogs, int64(1+i*benchTasks*benchLogs))
	}
	return pages
}

// BenchmarkIngest measures decode → diff → store of API pages of 100 tasks
// with 4 new logs each (400 events a page), fsync'd commits.
//
//   - page: one goroutine, decode a page then Ingest it: one commit a page.
//   - prefetch: one goroutine decodes the next page while another ingests
//     the current one, as the poller's sweep does.
//   - pipelined: GOMAXPROCS goroutines each decoding and ingesting pages;
//     concurrent Ingest calls share commits (group commit).
//   - batch8: one goroutine decodes 8 pages and ingests them in one call.
//   - idle: Ingest of a decoded page of 100 unchanged tasks.
func BenchmarkIngest(b *testing.B) {
	ctx := context.Background()
	b.Run("page", func(b *testing.B) {
		db := mustOpen(b)
		pages := benchPages(b.N)
		b.SetBytes(int64(len(pages[0])))
		b.ResetTimer()
		cpu := cpuTime()
		for i := range b.N {
			tasks := decodePage(b, pages[i])
			if _, err := db.Ingest(ctx, tasks, shanghai, true); err != nil {
				b.Fatal(err)
			}
		}
		reportEvents(b, db)
		reportCPU(b, cpu, b.N*benchTasks*benchLogs)
	})
	b.Run("pipelined", func(b *testing.B) {
		db := mustOpen(b)
		pages := benchPages(b.N)
		b.SetBytes(int64(len(pages[0])))
		var next atomic.Int64
		b.ResetTimer()
		cpu := cpuTime()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				tasks := decodePage(b, pages[next.Add(1)-1])
				if _, err := db.Ingest(ctx, tasks, shanghai, true); err != nil {
					b.Error(err)
					return
				}
			}
		})
		reportEvents(b, db)
		reportCPU(b, cpu, b.N*benchTasks*benchLogs)
	})
	b.Run("prefetch", func(b *testing.B) {
		db := mustOpen(b)
		pages := benchPages(b.N)
		b.SetBytes(int64(len(pages[0])))
		b.ResetTimer()
		cpu := cpuTime()
		decoded := make(chan []diff.Task, 1)
		go func() {
			defer close(decoded)
			for i := range b.N {
				decoded <- decodePage(b, pages[i])
			}
		}()
		for tasks := range decoded {
			if _, err := db.Ingest(ctx, tasks, shanghai, true); err != nil {
				b.Fatal(err)
			}
		}
		reportEvents(b, db)
		reportCPU(b, cpu, b.N*benchTasks*benchLogs)
	})
	b.Run("batch8", func(b *testing.B) {
		db := mustOpen(b)
		pages := benchPages(b.N * 8)
		b.SetBytes(int64(len(pages[0])) * 8)
		b.ResetTimer()
		cpu := cpuTime()
		var tasks []diff.Task
		for i := range b.N {
			tasks = tasks[:0]
			for j := range 8 {
				tasks = append(tasks, decodePage(b, pages[i*8+j])...)
			}
			if _, err := db.Ingest(ctx, tasks, shanghai, true); err != nil {
				b.Fatal(err)
			}
		}
		reportEvents(b, db)
		reportCPU(b, cpu, 8*b.N*benchTasks*benchLogs)
	})
	b.Run("idle", func(b *testing.B) {
		db := mustOpen(b)
		// A realistic seen-set: 50 pages of tasks already ingested.
		var tasks []diff.Task
		for _, p := range benchPages(50) {
			tasks = decodePage(b, p)
			if _, err := db.Ingest(ctx, tasks, shanghai, true); err != nil {
				b.Fatal(err)
			}
		}
		b.ResetTimer()
		cpu := cpuTime()
		for range b.N {
			res, err := db.Ingest(ctx, tasks, shanghai, true)
			if err != nil || res.Skipped != benchTasks {
				b.Fatal(res, err)
			}
		}
		b.ReportMetric(float64(b.N*benchTasks)/b.Elapsed().Seconds(), "tasks/s")
		b.ReportMetric(float64((cpuTime()-cpu).Nanoseconds())/float64(b.N*benchTasks), "cpu-ns/task")
	})
}

func reportEvents(b *testing.B, db *DB) {
	b.Helper()
	head, err := db.Head()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(head)/b.Elapsed().Seconds(), "events/s")
}

// cpuTime returns the CPU time (user and system) the process used so far.
// Benchmarks report it per event, which other load on the machine hardly
// affects, unlike events/s.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, start time.Duration, events int) {
	b.ReportMetric(float64((cpuTime()-start).Nanoseconds())/float64(events), "cpu-ns/event")
}

// BenchmarkRead measures reading and decoding stored events as a sink does.
func BenchmarkRead(b *testing.B) {
	db := mustOpen(b, noSync)
	for _, p := range benchPages(10) {
		if _, err := db.Ingest(context.Background(), decodePage(b, p), shanghai, true); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	n := 0
	for range b.N {
		evs, err := db.Read(context.Background(), 1, 100)
		if err != nil {
			b.Fatal(err)
		}
		n += len(evs)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkRetention1M relays 1,000,000 events through a store with
// retention pruning (every sink caught up, commit times older than the
// retention) and reports the final file size, which stays bounded.
func BenchmarkRetention1M(b *testing.B) {
	for range b.N {
		clock := newClock()
		db := mustOpen(b, withClock(clock))
		start := time.Now()
		sizes := relayWithRetention(b, db, clock, 1_000_000, 10_000)
		b.ReportMetric(1e6/time.Since(start).Seconds(), "events/s")
		b.ReportMetric(float64(sizes[len(sizes)/2])/(1<<20), "MiB-half")
		b.ReportMetric(float64(sizes[len(sizes)-1])/(1<<20), "MiB-end")
		var ru syscall.Rusage
		if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
			b.ReportMetric(float64(ru.Maxrss)/1024, "MiB-peak-rss")
		}
	}
}

func fileSize(tb testing.TB, path string) int64 {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	return fi.Size()
}
