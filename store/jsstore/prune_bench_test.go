// Benchmark: pruning a large, fully delivered outbox while the leader keeps
// committing, and how long a commit waits meanwhile.

package jsstore

import (
	"context"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/incs-relay/incs-relay/store"
)

// BenchmarkPruneWhileCommitting fills a single-node store with
// INCS_PRUNE_EVENTS events (default 100,000; rounded up to whole pages of
// 400), delivers them all (cursor "hook" at head), then runs a committer
// that Ingests small pages of fresh tasks (the first 10 tasks of a
// benchPage, 4 logs each) back to back, timing each call. After about a
// second of baseline it prunes every delivered event once, then keeps
// committing about a second more. It uses only the store's exported API.
//
// The whole measurement runs once whatever b.N is; run it with
// -benchtime=1x. Metrics:
//
//   - prune-s: Prune's wall time.
//   - pruned: events Prune deleted.
//   - max-commit-ms, p99-commit-ms, p50-commit-ms, commits: the longest,
//     p99 and median Ingest wall time of the commits that overlapped
//     Prune, and their number.
//   - base-max-ms, base-p99-ms, base-p50-ms: the same for the commits
//     that ended before Prune started (the baseline).
//   - after-max-ms: the longest Ingest after Prune returned.
//   - fill-s: time to fill the store (not part of the measurement).
func BenchmarkPruneWhileCommitting(b *testing.B) {
	total := 100_000
	if v := os.Getenv("INCS_PRUNE_EVENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("INCS_PRUNE_EVENTS=%q: want a positive integer", v)
		}
		total = n
	}
	const (
		perCall    = 8  // pages an Ingest while filling
		smallTasks = 10 // tasks a committer page (benchPage's first ones)
		baseline   = time.Second
		after      = time.Second
		fillMax    = 15 * time.Minute
		pruneMax   = 10 * time.Minute
		commitMax  = 2 * time.Minute // one committer Ingest
	)

	srv := runServer(b)
	// leadingStore's cleanups stop Run and close the store.
	s := leadingStore(b, srv.ClientURL(), Options{ReplicaID: "bench", Lease: 10 * time.Second})

	// Fill: page 0 alone gives the events a page (400), then perCall
	// pages an Ingest up to the whole pages that hold total.
	fillCtx, fillCancel := context.WithTimeout(context.Background(), fillMax)
	defer fillCancel()
	fillStart := time.Now()
	first, err := s.Ingest(fillCtx, benchPage(0), benchLoc, true)
	if err != nil || first.Events <= 0 {
		b.Fatalf("fill: page 0: %v, %+v", err, first)
	}
	perPage := first.Events
	pages := (total + perPage - 1) / perPage
	for p := 1; p < pages; p += perCall {
		tasks := benchPage(p)
		for q := p + 1; q < min(p+perCall, pages); q++ {
			tasks = append(tasks, benchPage(q)...)
		}
		if _, err := s.Ingest(fillCtx, tasks, benchLoc, true); err != nil {
			b.Fatalf("fill: page %d of %d: %v", p, pages, err)
		}
	}
	fill := time.Since(fillStart)
	head, err := s.Head()
	if err != nil {
		b.Fatal(err)
	}
	if want := uint64(pages * perPage); head != want {
		b.Fatalf("fill: head %d, want %d", head, want)
	}
	if err := s.SetCursor("hook", head); err != nil {
		b.Fatal(err)
	}
	b.Logf("filled %d events in %v (%.0f events/s)", head, fill.Round(time.Millisecond), float64(head)/fill.Seconds())

	// Committer: small pages of fresh tasks (page indexes beyond the
	// fill, the first smallTasks tasks of each), back to back.
	type commit struct{ start, end time.Time }
	var (
		mu        sync.Mutex
		commits   []commit
		commitErr error
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	b.ResetTimer()
	go func() {
		defer close(done)
		for k := pages; ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			page := benchPage(k)[:smallTasks]
			ctx, cancel := context.WithTimeout(context.Background(), commitMax)
			t0 := time.Now()
			_, err := s.Ingest(ctx, page, benchLoc, true)
			t1 := time.Now()
			cancel()
			mu.Lock()
			commits = append(commits, commit{t0, t1})
			if err != nil && commitErr == nil {
				commitErr = err
			}
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	stopCommitter := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		select {
		case <-done:
		case <-time.After(commitMax + 10*time.Second):
			b.Error("committer did not stop")
		}
	}
	defer stopCommitter()

	time.Sleep(baseline)
	pruneCtx, pruneCancel := context.WithTimeout(context.Background(), pruneMax)
	defer pruneCancel()
	p0 := time.Now()
	res, perr := s.Prune(pruneCtx, store.PruneOptions{Retention: time.Nanosecond, Sinks: []string{"hook"}, Now: time.Now().Add(time.Hour)})
	p1 := time.Now()
	time.Sleep(after)
	stopCommitter()
	b.StopTimer()

	if perr != nil {
		b.Errorf("prune: %v (after %v, %d events)", perr, p1.Sub(p0), res.Events)
	}
	mu.Lock()
	defer mu.Unlock()
	if commitErr != nil {
		b.Errorf("committer: %v", commitErr)
	}

	// Split the commits: before Prune started, overlapping it, after it.
	var base, during, post []time.Duration
	var worst commit // the longest commit overlapping Prune
	for _, c := range commits {
		d := c.end.Sub(c.start)
		switch {
		case !c.end.After(p0):
			base = append(base, d)
		case c.start.Before(p1):
			during = append(during, d)
			if d > worst.end.Sub(worst.start) {
				worst = c
			}
		default:
			post = append(post, d)
		}
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	baseMax, baseP99, baseP50 := pruneBenchQuantiles(base)
	durMax, durP99, durP50 := pruneBenchQuantiles(during)
	postMax, _, _ := pruneBenchQuantiles(post)

	b.ReportMetric(p1.Sub(p0).Seconds(), "prune-s")
	b.ReportMetric(float64(res.Events), "pruned")
	b.ReportMetric(ms(durMax), "max-commit-ms")
	b.ReportMetric(ms(durP99), "p99-commit-ms")
	b.ReportMetric(ms(durP50), "p50-commit-ms")
	b.ReportMetric(float64(len(during)), "commits")
	b.ReportMetric(ms(baseMax), "base-max-ms")
	b.ReportMetric(ms(baseP99), "base-p99-ms")
	b.ReportMetric(ms(baseP50), "base-p50-ms")
	b.ReportMetric(ms(postMax), "after-max-ms")
	b.ReportMetric(fill.Seconds(), "fill-s")
	b.Logf("prune-while-committing: %d events filled in %.1fs; prune %.3fs deleted %d; "+
		"commits during prune: %d, max %.1fms (started at %+.3fs of prune), p99 %.1fms, p50 %.1fms; baseline: %d, max %.1fms, p99 %.1fms, p50 %.1fms; after: %d, max %.1fms",
		head, fill.Seconds(), p1.Sub(p0).Seconds(), res.Events,
		len(during), ms(durMax), worst.start.Sub(p0).Seconds(), ms(durP99), ms(durP50), len(base), ms(baseMax), ms(baseP99), ms(baseP50), len(post), ms(postMax))
}

// pruneBenchQuantiles returns the longest, the 99th and the 50th percentile
// (nearest rank) of ds; zeros if ds is empty. With fewer than 100 values
// the p99 is the longest.
func pruneBenchQuantiles(ds []time.Duration) (longest, p99, p50 time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(q int) time.Duration { // ceil(q% of n), 1-based
		return s[min(max((len(s)*q+99)/100-1, 0), len(s)-1)]
	}
	return s[len(s)-1], rank(99), rank(50)
}
