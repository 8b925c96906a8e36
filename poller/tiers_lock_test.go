package poller

// Tests that Tiered holds no lock across StateStore I/O (issue 21): a
// save that blocks must not block Status, Stats, Unchanged, Forget or
// Fetch, and saves made out of order must not leave an older state in the
// store.

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lockWait bounds how long a call that must not wait for a save may take.
const lockWait = 2 * time.Second

// gatedState is a StateStore whose first SetMeta blocks until release is
// closed; it keeps every value written, in order.
type gatedState struct {
	entered chan struct{} // closed when the first SetMeta starts
	release chan struct{} // the first SetMeta returns once closed
	mu      sync.Mutex
	calls   int
	written [][]byte
}

func newGatedState() *gatedState {
	return &gatedState{entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gatedState) Meta(string) ([]byte, error) { return nil, errors.New("no state") }

func (g *gatedState) SetMeta(_ string, v []byte) error {
	g.mu.Lock()
	g.calls++
	first := g.calls == 1
	g.mu.Unlock()
	if first {
		close(g.entered)
		<-g.release
	}
	g.mu.Lock()
	g.written = append(g.written, append([]byte(nil), v...))
	g.mu.Unlock()
	return nil
}

func (g *gatedState) values() [][]byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([][]byte(nil), g.written...)
}

// savedCycle reads the cycle number a saved state was made at.
func savedCycle(t *testing.T, b []byte) uint64 {
	t.Helper()
	d := stateDecoder{b: b}
	require.True(t, d.prefix(stateMagic))
	d.string()
	c := d.uvarint()
	require.NoError(t, d.err)
	return c
}

// within runs f and reports whether it returned within lockWait; f goes on
// running in the background if not.
func within(f func()) bool {
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
		return true
	case <-time.After(lockWait):
		return false
	}
}

// wait fails t unless ch is closed within 10 s.
func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestTiered_NoLockAcrossSave: while End's save of the state blocks in the
// StateStore, what /readyz and /metrics call (Poller.Status, which calls
// Tiered.Stats) and what the ingester calls (Unchanged, Forget, Fetch)
// return at once.
func TestTiered_NoLockAcrossSave(t *testing.T) {
	st := newGatedState()
	now := time.Date(2026, 4, 8, 9, 0, 0, 0, time.UTC)
	cfg := Config{Location: time.UTC, RateLimit: -1, Now: func() time.Time { return now }}
	tr := NewTiered(cfg, st, zerolog.Nop())
	p := New(nil, cfg, nil, zerolog.Nop())
	p.Strategy = tr

	tr.Cycle(now)
	ended := make(chan struct{})
	go func() { defer close(ended); tr.End(nil) }() // the first End saves
	wait(t, st.entered, "the save")

	assert.True(t, within(func() { assert.True(t, p.Status().Tiers.Ready) }), "Poller.Status waits for the save")
	assert.True(t, within(func() { tr.Stats() }), "Stats waits for the save")
	assert.True(t, within(func() { tr.Unchanged(&TaskHead{ID: 1}) }), "Unchanged waits for the save")
	assert.True(t, within(func() { tr.Forget(1) }), "Forget waits for the save")
	assert.True(t, within(func() { tr.Fetch(1) }), "Fetch waits for the save")

	close(st.release)
	wait(t, ended, "End")
	require.Len(t, st.values(), 1)
	assert.Equal(t, uint64(1), savedCycle(t, st.values()[0]))
}

// TestTiered_SaveOrder: a cycle ends while the save of the one before is
// still blocked in the StateStore. The next cycle runs meanwhile, and the
// store ends up with the newer state, never overwritten by the older.
func TestTiered_SaveOrder(t *testing.T) {
	st := newGatedState()
	var mins atomic.Int64
	base := time.Date(2026, 4, 8, 9, 0, 0, 0, time.UTC)
	now := func() time.Time { return base.Add(time.Duration(mins.Load()) * time.Minute) }
	tr := NewTiered(Config{Location: time.UTC, RateLimit: -1, Now: now}, st, zerolog.Nop())

	tr.Cycle(now())
	first := make(chan struct{})
	go func() { defer close(first); tr.End(nil) }()
	wait(t, st.entered, "the first save")

	mins.Add(1) // the next save is due
	second := make(chan struct{})
	go func() {
		defer close(second)
		tr.Cycle(now())
		tr.End(nil)
	}()
	// The second cycle takes its snapshot while the first save is blocked.
	require.Eventually(t, func() bool {
		tr.mu.RLock()
		defer tr.mu.RUnlock()
		return tr.lastSave.Equal(now())
	}, lockWait, time.Millisecond, "the second cycle waits for the first save")

	close(st.release)
	wait(t, first, "the first End")
	wait(t, second, "the second End")
	vals := st.values()
	require.NotEmpty(t, vals)
	assert.Equal(t, uint64(2), savedCycle(t, vals[len(vals)-1]), "the newer state is the one stored")
	for i := 1; i < len(vals); i++ {
		assert.GreaterOrEqual(t, savedCycle(t, vals[i]), savedCycle(t, vals[i-1]), "save %d went back to an older state", i)
	}
}

// slowState is a StateStore whose writes take a random short time; it
// keeps every value written, in order.
type slowState struct {
	mu      sync.Mutex
	written []uint64
	t       *testing.T
}

func (s *slowState) Meta(string) ([]byte, error) { return nil, errors.New("no state") }

func (s *slowState) SetMeta(_ string, v []byte) error {
	time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
	c := savedCycle(s.t, v)
	s.mu.Lock()
	s.written = append(s.written, c)
	s.mu.Unlock()
	return nil
}

// TestTiered_ConcurrentEndSavesInOrder: cycles ended from many goroutines
// at once, each with a save due, never store an older state after a newer
// one, and the last stored is the newest.
func TestTiered_ConcurrentEndSavesInOrder(t *testing.T) {
	st := &slowState{t: t}
	var mins atomic.Int64
	base := time.Date(2026, 4, 8, 9, 0, 0, 0, time.UTC)
	now := func() time.Time { return base.Add(time.Duration(mins.Add(1)) * time.Minute) }
	tr := NewTiered(Config{Location: time.UTC, RateLimit: -1, Now: now}, st, zerolog.Nop())

	const n = 40
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			tr.Cycle(now())
			tr.End(nil)
		})
	}
	wg.Wait()
	require.NotEmpty(t, st.written)
	assert.True(t, isSorted(st.written), "saves out of order: %v", st.written)
	assert.Equal(t, uint64(n), st.written[len(st.written)-1], "the newest state is the one stored")
}

func isSorted(xs []uint64) bool {
	for i := 1; i < len(xs); i++ {
		if xs[i] < xs[i-1] {
			return false
		}
	}
	return true
}

// gatedWriter is a log writer whose first Write blocks until release is
// closed.
type gatedWriter struct {
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (w *gatedWriter) Write(p []byte) (int, error) {
	w.once.Do(func() {
		close(w.entered)
		<-w.release
	})
	return len(p), nil
}

// TestTiered_NoLockAcrossLog: while a line End logs (the first full sweep
// done) blocks in the log writer, Status and the ingester's calls return
// at once.
func TestTiered_NoLockAcrossLog(t *testing.T) {
	w := &gatedWriter{entered: make(chan struct{}), release: make(chan struct{})}
	now := time.Date(2026, 4, 8, 9, 0, 0, 0, time.UTC)
	cfg := Config{Location: time.UTC, RateLimit: -1, Now: func() time.Time { return now }}
	tr := NewTiered(cfg, nil, zerolog.New(w))
	p := New(nil, cfg, nil, zerolog.Nop())
	p.Strategy = tr

	tr.Cycle(now)
	ended := make(chan struct{})
	go func() { defer close(ended); tr.End(nil) }()
	wait(t, w.entered, "the log line")

	assert.True(t, within(func() { p.Status() }), "Poller.Status waits for the log writer")
	assert.True(t, within(func() { tr.Unchanged(&TaskHead{ID: 1}) }), "Unchanged waits for the log writer")
	assert.True(t, within(func() { tr.Forget(1) }), "Forget waits for the log writer")

	close(w.release)
	wait(t, ended, "End")
	assert.True(t, tr.Stats().Ready)
}
