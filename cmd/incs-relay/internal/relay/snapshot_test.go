package relay

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/poller/sim"
	"github.com/incs-relay/incs-relay/store"
)

// TestSnapshot_BoundaryHolds is poll.initial: snapshot in the worst case:
// the API lists tasks by updated_at, the world changes with every request
// of the first sweep (so tasks jump to the head of the list and pages
// shift), pages hold 25 tasks, and the relay is stopped in the middle of
// its first sweep and started again. No log that existed when the first
// poll began may become an event; every log made after it must.
func TestSnapshot_BoundaryHolds(t *testing.T) {
	for _, strategy := range []string{"full", "tiered"} {
		t.Run(strategy, func(t *testing.T) {
			sm := sim.New(sim.Options{Tasks: 300, Seed: 17, Order: sim.UpdatedDesc, OpenFraction: 0.4})
			var requests, stopAfter atomic.Int64
			var quiet atomic.Bool
			stopAfter.Store(5)
			var stop atomic.Pointer[context.CancelFunc]
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := requests.Add(1)
				if !quiet.Load() {
					sm.Step(1) // the world moves under every page
				}
				if n == stopAfter.Load() {
					if c := stop.Load(); c != nil {
						(*c)() // the relay stops mid-sweep
					}
				}
				sm.ServeHTTP(w, r)
			}))
			t.Cleanup(srv.Close)

			// The first poll begins in a second of its own: no log of the
			// world before it shares its second (the boundary's slack).
			time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 50*time.Millisecond)))
			existing := sm.LogCount()
			path := t.TempDir() + "/relay.db"

			run := func(cycles int, stopAt int64) (stopped bool) {
				db, err := store.Open(path, store.Options{NoSync: true})
				require.NoError(t, err)
				defer db.Close()
				initialized, err := db.Initialized()
				require.NoError(t, err)
				boundary, err := snapshotBoundary(db, initialized, time.Now())
				require.NoError(t, err)
				ing := &Ingester{db: db, loc: poller.DefaultLocation(), log: zerolog.Nop(), boundary: boundary}
				cfg := poller.Config{BaseURL: srv.URL, PageSize: 25, RateLimit: -1, Interval: time.Second, Budget: 100}
				p := poller.New(poller.NewClient(cfg, zerolog.Nop()), cfg, ing, zerolog.Nop())
				if strategy == "tiered" {
					tr := poller.NewTiered(cfg, db, zerolog.Nop())
					p.Strategy, ing.tiers = tr, tr
				}
				for k := range cycles {
					if k > 0 && !quiet.Load() {
						sm.Step(20) // changes between cycles
					}
					ctx, cancel := context.WithCancel(context.Background())
					stop.Store(&cancel)
					stopAfter.Store(stopAt)
					err := p.RunOnce(ctx)
					stop.Store(nil)
					cancel()
					_ = ing.flush()
					if errors.Is(err, context.Canceled) {
						return true
					}
					require.NoError(t, err)
				}
				return false
			}
			require.True(t, run(1, 5), "stopped in the middle of the first sweep")
			require.False(t, run(6, -1))
			quiet.Store(true) // then the relay catches up with the last changes
			require.False(t, run(3, -1))

			db, err := store.Open(path, store.Options{NoSync: true})
			require.NoError(t, err)
			defer db.Close()
			evs, err := db.Read(context.Background(), 1, 1_000_000)
			require.NoError(t, err)
			got := make(map[int64]bool, len(evs))
			for _, ev := range evs {
				if diff.IsEdit(ev.Type) {
					// An edit without a log, found on a task the relay
					// had seen: after the boundary by construction (the
					// first sight of a task records its values and
					// emits nothing).
					continue
				}
				id, err := strconv.ParseInt(strings.TrimPrefix(ev.ID, "log-"), 10, 64)
				require.NoError(t, err)
				require.False(t, got[id], "one event per log: %s", ev.ID)
				got[id] = true
			}
			logs := sm.Logs()
			before, after, missing := 0, 0, 0
			for i, l := range logs {
				switch {
				case i < existing && got[l.LogID]:
					before++
					t.Errorf("log %d of task %d existed before the first poll (created %s) and became an event", l.LogID, l.TaskID, l.CreatedAt)
				case i >= existing && !got[l.LogID]:
					missing++
					t.Errorf("log %d of task %d was made after the first poll began (created %s) and has no event", l.LogID, l.TaskID, l.CreatedAt)
				case i >= existing:
					after++
				}
			}
			t.Logf("%s: %d logs existed, %d made since, all with events; %d requests", strategy, existing, after, requests.Load())
			assert.Greater(t, after, 100, "the world changed")
			assert.Equal(t, len(logs)-existing, len(got), "one event per log made since")
		})
	}
}

// TestSnapshotBoundary_Kept: the boundary is decided once, on a store
// whose first sweep has not completed, and kept there, so a restart in a
// later second (the first sweep interrupted) keeps the first one; a store
// initialized before boundaries were kept has none.
func TestSnapshotBoundary_Kept(t *testing.T) {
	db, err := store.Open(t.TempDir()+"/relay.db", store.Options{NoSync: true})
	require.NoError(t, err)
	defer db.Close()
	start := time.Date(2026, 4, 8, 9, 30, 15, 700_000_000, time.UTC)
	b, err := snapshotBoundary(db, false, start)
	require.NoError(t, err)
	assert.Equal(t, start.Truncate(time.Second), b, "to the second")
	again, err := snapshotBoundary(db, false, start.Add(time.Hour))
	require.NoError(t, err)
	assert.True(t, b.Equal(again), "a restart keeps the first boundary, not %s", again)
	later, err := snapshotBoundary(db, true, start.Add(2*time.Hour))
	require.NoError(t, err)
	assert.True(t, b.Equal(later), "and so does a store whose first sweep completed")

	old, err := store.Open(t.TempDir()+"/old.db", store.Options{NoSync: true})
	require.NoError(t, err)
	defer old.Close()
	none, err := snapshotBoundary(old, true, start)
	require.NoError(t, err)
	assert.True(t, none.IsZero(), "an older initialized store has no boundary")
}
