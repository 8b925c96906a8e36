package rules

import (
	"runtime"
	"testing"
	"time"

	"github.com/incs-relay/incs-relay/diff"
)

// BenchmarkRules measures one poll cycle's rule evaluation over 100,000
// open tasks, in pages of 100 as the poller hands them over, with three
// rules (one with a calendar). "unchanged" is the steady state with tiered
// polling: every task read and found unchanged (decoding skipped), a few
// due; "decoded" reads every task decoded but unchanged (poll.strategy:
// full). It reports the heap held per tracked task.
func BenchmarkRules(b *testing.B) {
	const n, page = 100_000, 100
	cal, err := NewCalendar("office", "Asia/Shanghai", map[string][]string{"mon-fri": {"09:00-12:00", "13:30-18:30"}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	newRules := func() []*Rule {
		stalled := stalledRule(4 * time.Hour)
		stalled.Calendar = cal
		stalled.Repeat = Repeat{Every: 4 * time.Hour, Max: 3}
		return []*Rule{
			stalled,
			{Name: "late", Event: "task.late", When: When{Status: []int{0, 1}}, Since: SinceCreated, After: 24 * time.Hour, Resolve: true},
			{Name: "unassigned", Event: "task.unassigned", When: When{Assignee: Assignee{Absent: true}, Status: []int{0, 1}}, Since: SinceCreated, After: 30 * time.Minute},
		}
	}
	start := at("2026-04-08 09:00:00")
	tasks := make([]diff.Task, n)
	ids := make([]int64, n)
	for i := range tasks {
		id := int64(i + 1)
		ts := start.Add(time.Duration(i) * time.Second).Format(diff.TimeLayout)
		tasks[i] = buildTask(id, 1, logSpec{1, 0, ts, ""}, logSpec{2, 0, ts, "incs_1"}, logSpec{3, 1, ts, ""}, logSpec{4, 1, ts, ""})
		ids[i] = id
	}
	load := func() *Engine {
		e := NewEngine(newRules(), shanghai)
		if err := CheckSet(e.rules); err != nil {
			b.Fatal(err)
		}
		for i := 0; i < n; i += page {
			e.Commit(e.Evaluate(tasks[i:i+page], nil, start.Add(time.Minute)))
		}
		return e
	}
	now := start.Add(2 * time.Hour) // some "unassigned"-free, nothing due yet

	b.Run("unchanged", func(b *testing.B) {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		e := load()
		runtime.GC()
		runtime.ReadMemStats(&after)
		if e.Len() != n {
			b.Fatalf("tracked %d tasks, want %d", e.Len(), n)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			e.Due(now)
			for i := 0; i < n; i += page {
				e.Commit(e.Evaluate(nil, ids[i:i+page], now))
			}
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/task")
		runtime.KeepAlive(e)
	})
	b.Run("decoded", func(b *testing.B) {
		e := load()
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			e.Due(now)
			for i := 0; i < n; i += page {
				e.Commit(e.Evaluate(tasks[i:i+page], nil, now))
			}
		}
	})
}
