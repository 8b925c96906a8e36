package main

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/poller/sim"
	"github.com/incs-relay/incs-relay/store"
)

// TestCheckConfig_BudgetBelowCeilings: once a store knows its world,
// check-config estimates what poll.open_sweep and poll.full_sweep need
// per cycle and says when poll.budget is below it; it says nothing of a
// store that does not exist, and never creates one.
func TestCheckConfig_BudgetBelowCeilings(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "relay.db")
	write := func(rate string) string {
		p := filepath.Join(dir, "relay-"+rate+".yaml")
		writeFileT(t, p, "upstream: {token: t, rate_limit: "+rate+"}\n"+
			"poll: {interval: 10s, open_sweep: 10s}\n"+
			"store: {path: \""+dbPath+"\"}\n")
		return p
	}
	low, high := write("1"), write("50")

	code, out, errb := runMain("check-config", "--config", low)
	require.Equal(t, exitOK, code, errb)
	assert.NotContains(t, out, "ceilings", "no store yet: nothing to estimate")
	_, err := os.Stat(dbPath)
	require.True(t, os.IsNotExist(err), "check-config creates no store")

	// A relay's first sweeps leave the tier state of 3,000 tasks, 30 % open.
	world := sim.New(sim.Options{Tasks: 3000, Seed: 4})
	api := httptest.NewServer(world)
	defer api.Close()
	db, err := store.Open(dbPath, store.Options{NoSync: true})
	require.NoError(t, err)
	cfg := poller.Config{BaseURL: api.URL, RateLimit: -1, Interval: 10 * time.Second, OpenSweep: 10 * time.Second}
	ing := relay.NewIngester(db, poller.DefaultLocation(), zerolog.Nop())
	p := poller.New(poller.NewClient(cfg, zerolog.Nop()), cfg, ing, zerolog.Nop())
	p.Strategy = poller.NewTiered(cfg, db, zerolog.Nop())
	require.NoError(t, p.RunOnce(context.Background()))
	require.NoError(t, db.Close())

	// 8 requests per interval cannot read ~900 open tasks every cycle.
	code, out, errb = runMain("check-config", "--config", low)
	require.Equal(t, exitOK, code, errb)
	assert.Regexp(t, `budget 8 requests per interval`, out)
	assert.Regexp(t, `warning: poll.budget \(8\) below what the ceilings need \(1\d requests per cycle`, out)

	code, out, errb = runMain("check-config", "--config", high)
	require.Equal(t, exitOK, code, errb)
	assert.Regexp(t, `the ceilings need about 1\d requests per cycle .*; \d+ are left for finished tasks`, out)
	assert.NotContains(t, out, "warning")
}
