package store

// This file owns BenchmarkOpenStatus: the cost of opening a large store
// after a restart and of the reads the status command makes.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// statusSinks are the sinks of the stores BenchmarkOpenStatus builds.
var statusSinks = []string{"bus", "hook", "archive"}

// BenchmarkOpenStatus builds stores of 100,000 and 1,000,000 events (once
// per run, in b.TempDir(), or in $INCS_BENCH_DIR to share them between
// runs of different builds) and measures, per iteration: Open, the reads
// the status command makes for three sinks (Stats, Cursor, DeadLetters,
// SinkState, the event after the cursor), and then a full Check. It
// reports the milliseconds of each and the growth of the process's
// RssAnon and VmHWM over Open and the status reads, in MB and in bytes
// per stored event.
func BenchmarkOpenStatus(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		path := benchStore(b, n)
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			var openT, statusT, checkT time.Duration
			var anon, hwm int64
			for range b.N {
				runtime.GC()
				debug.FreeOSMemory()
				resetHWM(b)
				before := procStatus(b)
				start := time.Now()
				db, err := Open(path, Options{Logger: zerolog.Nop()})
				if err != nil {
					b.Fatal(err)
				}
				opened := time.Now()
				openT += opened.Sub(start)
				statusReads(b, db)
				statusT += time.Since(opened)
				after := procStatus(b)
				anon += after["RssAnon"] - before["RssAnon"]
				hwm += after["VmHWM"] - before["VmRSS"]
				start = time.Now()
				if err := db.Check(); err != nil {
					b.Fatal(err)
				}
				checkT += time.Since(start)
				if err := db.Close(); err != nil {
					b.Fatal(err)
				}
			}
			per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 / float64(b.N) }
			b.ReportMetric(per(openT), "open-ms")
			b.ReportMetric(per(statusT), "status-ms")
			b.ReportMetric(per(checkT), "check-ms")
			b.ReportMetric(float64(anon)/float64(b.N)/1e6, "anon-MB")
			b.ReportMetric(float64(anon)/float64(b.N)/float64(n), "anon-B/event")
			b.ReportMetric(float64(hwm)/float64(b.N)/1e6, "hwm-MB")
		})
	}
}

// statusReads makes the store reads of the status command for every sink.
func statusReads(tb testing.TB, db *DB) {
	for _, sink := range statusSinks {
		st, err := db.Stats()
		if err != nil {
			tb.Fatal(err)
		}
		cur, err := db.Cursor(sink)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := db.DeadLetters(sink); err != nil {
			tb.Fatal(err)
		}
		if _, err := db.SinkState(sink); err != nil {
			tb.Fatal(err)
		}
		if st.Head > cur {
			if _, err := db.Event(max(cur+1, st.First)); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

// benchStore returns the path of a closed store of n events in 100-task
// pages of 4 logs each, with three sinks at different cursors, ten dead
// letters and a sink state.
func benchStore(b *testing.B, n int) string {
	dir := os.Getenv("INCS_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	path := filepath.Join(dir, fmt.Sprintf("events-%d", n), "relay.db")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	start := time.Now()
	db, err := Open(path+".tmp", Options{NoSync: true, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	const perPage = benchTasks * benchLogs
	for p := 0; p < n/perPage; p += 8 {
		tasks := decodePage(b, pageJSON(int64(1+p*benchTasks), benchTasks, benchLogs, int64(1+p*perPage)))
		for j := 1; j < 8 && p+j < n/perPage; j++ {
			q := p + j
			tasks = append(tasks, decodePage(b, pageJSON(int64(1+q*benchTasks), benchTasks, benchLogs, int64(1+q*perPage)))...)
		}
		if _, err := db.Ingest(ctx, tasks, shanghai, true); err != nil {
			b.Fatal(err)
		}
	}
	for i, sink := range statusSinks {
		if err := db.SetCursor(sink, uint64(n/(i+2))); err != nil {
			b.Fatal(err)
		}
	}
	for off := range 10 {
		if err := db.DeadLetter("bus", uint64(1+off*n/10), 5, "HTTP 500"); err != nil {
			b.Fatal(err)
		}
	}
	if err := db.SetSinkState("hook", SinkState{LastError: "timeout", LastErrorAt: time.Now()}); err != nil {
		b.Fatal(err)
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		b.Fatal(err)
	}
	b.Logf("built %d events in %s: %d MiB", n, time.Since(start).Round(time.Millisecond), fileSize(b, path)>>20)
	return path
}

// resetHWM resets the process's VmHWM to its current resident set.
func resetHWM(tb testing.TB) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		tb.Skip("cannot reset VmHWM:", err)
	}
}

// procStatus returns the kB figures of /proc/self/status, in bytes.
func procStatus(tb testing.TB) map[string]int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Skip("no /proc/self/status:", err)
	}
	out := make(map[string]int64)
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		name, rest, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		f := bytes.Fields(rest)
		if !ok || len(f) != 2 || string(f[1]) != "kB" {
			continue
		}
		if v, err := strconv.ParseInt(string(f[0]), 10, 64); err == nil {
			out[string(name)] = v << 10
		}
	}
	return out
}
