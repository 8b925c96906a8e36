package poller_test

// Benchmarks of the poll path end to end: an idle page through each
// decoding path, and whole cycles of the naive and the tiered strategy.

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/poller/sim"
	"github.com/incs-relay/incs-relay/store"
)

// BenchmarkIdlePath measures fetch-decode-skip of one page of 100
// unchanged tasks, excluding the network: the client, its HTTP machinery
// and an in-memory transport that answers with a fixed body.
//
//   - list+ingest: what the naive sweep pays per page: the strict decoder,
//     then the store's Ingest, which finds every log seen (a real bbolt
//     store in a temporary directory).
//   - list-skip: the tiered poller: the fast scan finds every task
//     unchanged, nothing is decoded and the handler is not called.
func BenchmarkIdlePath(b *testing.B) {
	s := sim.New(sim.Options{Tasks: 100, Seed: 1, Location: shanghai, Now: func() time.Time { return fixedNow }})
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, poller.TasksPath+"?page_size=100", nil))
	body := rec.Body.Bytes()
	fixed := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	cfg := poller.Config{BaseURL: "http://incsapp.invalid", Token: token, Location: shanghai, RateLimit: -1,
		HTTPClient: &http.Client{Transport: &inproc{h: fixed}}}
	c := poller.NewClient(cfg, zerolog.Nop())
	ctx := context.Background()
	q := poller.Query{StartAt: fixedNow.Add(-720 * time.Hour)}

	b.Run("list+ingest", func(b *testing.B) {
		db, err := store.Open(filepath.Join(b.TempDir(), "relay.db"), store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = db.Close() })
		p, err := c.List(ctx, q)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := db.Ingest(ctx, p.Tasks, shanghai, true); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		b.ResetTimer()
		cpu := cpuTime()
		for range b.N {
			p, err := c.List(ctx, q)
			if err != nil {
				b.Fatal(err)
			}
			res, err := db.Ingest(ctx, p.Tasks, shanghai, true)
			if err != nil || res.Skipped != 100 {
				b.Fatal(res, err)
			}
		}
		b.ReportMetric(float64((cpuTime()-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
	})
	b.Run("list-skip", func(b *testing.B) {
		tr := poller.NewTiered(cfg, nil, zerolog.Nop())
		p, err := c.List(ctx, q)
		if err != nil {
			b.Fatal(err)
		}
		tr.Observe(q, p) // handled once: known from now on
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		b.ResetTimer()
		cpu := cpuTime()
		for range b.N {
			p, err := c.ListSkip(ctx, q, tr)
			if err != nil || len(p.Tasks) != 0 || len(p.Heads) != 100 {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64((cpuTime()-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
	})
}

// cycleWorlds keeps the 100,000-task worlds of BenchmarkCycle across the
// runs the testing package makes with growing b.N.
var cycleWorlds = map[string]*relay{}

// BenchmarkCycle measures one whole poll cycle in a world of 100,000 tasks,
// 10 % open, after 50 random changes and 10 comments on finished tasks
// (one interval's worth); the changes are made with the timer stopped.
// tiered reads what the ceilings need (no budget), tiered-budget spends a
// budget of 100 requests (a tenth of a full sweep) on finished slices. It
// reports the process's CPU time per cycle, and the same without the time
// spent in the simulator serving pages (relay-cpu-ms). Setting up the world
// and the first full sweep takes several seconds.
//
//	go test ./poller -run '^$' -bench BenchmarkCycle -benchtime 20x
func BenchmarkCycle(b *testing.B) {
	for _, strategy := range []string{"tiered", "tiered-budget", "naive"} {
		b.Run(strategy, func(b *testing.B) {
			r := cycleWorlds[strategy]
			if r == nil {
				w := newWorld(b, sim.Options{Tasks: 100_000, Seed: 42, OpenFraction: 0.1}, fixedNow)
				var budget func(*poller.Config)
				if strategy == "tiered-budget" {
					budget = func(c *poller.Config) { c.Budget = 100 } // a tenth of a full sweep
				}
				r = newRelay(b, strategy, w, strategy != "naive", nil, budget)
				r.cycle(b) // the first, full sweep
				cycleWorlds[strategy] = r
			}
			w := r.w
			var served time.Duration
			r.srv = http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
				start := time.Now()
				w.sim.ServeHTTP(rw, req)
				served += time.Since(start)
			})
			b.ReportAllocs()
			b.ResetTimer()
			var cpu time.Duration
			requests := 0
			for range b.N {
				b.StopTimer()
				next := w.clock.Now().Truncate(interval).Add(interval)
				w.change(w.clock.Now(), next, 50, 10)
				w.clock.Set(next)
				b.StartTimer()
				start := cpuTime()
				r.cycle(b)
				cpu += cpuTime() - start
				requests += r.perCycle[len(r.perCycle)-1]
			}
			b.StopTimer()
			n := float64(b.N)
			b.ReportMetric(float64(cpu.Milliseconds())/n, "cpu-ms/cycle")
			b.ReportMetric(float64((cpu-served).Microseconds())/1000/n, "relay-cpu-ms/cycle")
			b.ReportMetric(float64(requests)/n, "requests/cycle")
			r.srv = w.sim
		})
	}
}
