package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"net/http/httptest"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/admin"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/poller/sim"
	"github.com/incs-relay/incs-relay/store"
)

// TestRelay_BadAPI runs the relay against an API that answers every request
// with one kind of failure: the seen-set and the outbox stay untouched, the
// relay keeps polling and reports itself not ready; once the API recovers,
// every log becomes an event.
func TestRelay_BadAPI(t *testing.T) {
	kinds := []sim.FaultKind{sim.Status401, sim.Status429, sim.Status429RetryAfter, sim.Status500, sim.Status503,
		sim.ErrorEnvelope, sim.Truncated, sim.NotJSON, sim.Slow}
	for _, kind := range kinds {
		t.Run(kind.String(), func(t *testing.T) {
			t.Parallel()
			world := sim.New(sim.Options{Token: "tok", Tasks: 30, Seed: int64(kind)})
			world.SetFaults(sim.Faults{Rate: 1, Kinds: []sim.FaultKind{kind}, SlowDelay: 600 * time.Millisecond})
			api := httptest.NewServer(world)
			defer api.Close()

			cfg := config.Default()
			cfg.SetFile("badapi")
			cfg.Upstream.BaseURL = api.URL
			cfg.Upstream.Token = "tok"
			cfg.Upstream.RateLimit = 100
			cfg.Upstream.Timeout = config.Duration(300 * time.Millisecond)
			cfg.Poll.Interval = config.Duration(100 * time.Millisecond)
			cfg.Poll.FullSweep = config.Duration(time.Second)
			cfg.Poll.Initial = "replay"
			cfg.Store.Path = filepath.Join(t.TempDir(), "relay.db")
			cfg.Admin.Addr = ""
			require.NoError(t, cfg.Validate())

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r, err := admin.Open(ctx, &cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel), relay.Options{})
			require.NoError(t, err)
			done := make(chan error, 1)
			go func() { done <- r.Run(ctx) }()

			require.Eventually(t, func() bool { return r.PollStatus().ConsecutiveFailures >= 2 }, 20*time.Second, 20*time.Millisecond,
				"the relay keeps polling through failures")
			st, err := r.Store().Stats()
			require.NoError(t, err)
			assert.Zero(t, st.Tasks, "no log marked seen")
			assert.Zero(t, st.Head, "no event stored")
			assert.Contains(t, r.NotReady(time.Now()), "no poll has succeeded yet")
			assert.NotContains(t, r.PollStatus().LastError, "tok", "the token never appears in errors")

			world.SetFaults(sim.Faults{})
			want := uint64(len(world.Logs()))
			require.Eventually(t, func() bool {
				head, err := r.Store().Head()
				return err == nil && head == want
			}, 20*time.Second, 20*time.Millisecond, "after recovery every log becomes an event")
			require.Eventually(t, func() bool { return r.NotReady(time.Now()) == "" }, 10*time.Second, 20*time.Millisecond)
			cancel()
			require.NoError(t, <-done)
			db, err := store.Open(cfg.Store.Path, store.Options{})
			require.NoError(t, err)
			defer db.Close()
			evs, err := db.Events(context.Background(), store.EventQuery{From: 1, Limit: int(want) + 10})
			require.NoError(t, err)
			ids := map[string]bool{}
			for _, ev := range evs {
				assert.False(t, ids[ev.ID], "one event per log: %s", ev.ID)
				ids[ev.ID] = true
			}
			assert.Len(t, ids, int(want))
		})
	}
}
