package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/admin"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/poller/sim"
)

// TestPollStatus_MetricsAndStatus checks that the relay reports how many
// requests each cycle took, by tier, and how old the oldest unseen change
// could be, in /metrics, GET /v1/poll and `incs-relay status`.
func TestPollStatus_MetricsAndStatus(t *testing.T) {
	world := sim.New(sim.Options{Token: "tok", Tasks: 400, Seed: 3})
	api := httptest.NewServer(world)
	defer api.Close()
	dir := t.TempDir()
	y := "upstream: {base_url: \"" + api.URL + "\", token: tok, rate_limit: 200}\n" +
		"poll: {interval: 150ms, full_sweep: 2s, initial: replay}\n" +
		"store: {path: \"" + filepath.Join(dir, "relay.db") + "\"}\n" +
		"admin: {addr: \"127.0.0.1:0\"}\n"
	path := filepath.Join(dir, "relay.yaml")
	require.NoError(t, os.WriteFile(path, []byte(y), 0o600))
	cfg, err := config.ReadFile(path, os.LookupEnv)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := admin.Open(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel), relay.Options{})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	require.Eventually(t, func() bool { return r.PollStatus().Cycles >= 4 && r.PollStatus().Tiers.Ready }, 30*time.Second, 20*time.Millisecond)

	get := func(p string) string {
		resp, err := http.Get("http://" + r.AdminAddr() + p)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
		return string(b)
	}
	metrics := get("/metrics")
	age := metricValue(t, metrics, "incs_relay_poll_max_unseen_age_seconds")
	assert.GreaterOrEqual(t, age, 0.0)
	assert.Less(t, age, 5.0, "every task was read within the last full sweep period")
	reqs := metricValue(t, metrics, "incs_relay_poll_cycle_requests")
	assert.Greater(t, reqs, 0.0)
	// 80 % of 200 requests/s over 150 ms: the 4 pages of 400 tasks fit,
	// so the whole world is read every cycle, within the budget.
	assert.Equal(t, 24.0, metricValue(t, metrics, "incs_relay_poll_budget_requests"))
	assert.LessOrEqual(t, reqs, 24.0, "within the budget")
	assert.Equal(t, 0.0, metricValue(t, metrics, "incs_relay_poll_budget_short"))
	assert.Equal(t, 0.0, metricValue(t, metrics, "incs_relay_poll_full_sweep_missed"))
	assert.Greater(t, metricValue(t, metrics, "incs_relay_poll_ceiling_requests"), 0.0)
	assert.Contains(t, metrics, `incs_relay_poll_cycle_tier_requests{tier="open"}`)
	assert.Contains(t, metrics, `incs_relay_poll_cycle_tier_requests{tier="budget"}`)
	fresh := metricValue(t, metrics, `incs_relay_poll_tier_freshness_seconds{tier="finished"}`)
	assert.Less(t, fresh, 1.0, "finished tasks are read every cycle or two when the budget pays for it")

	pv := get("/v1/poll")
	assert.Contains(t, pv, `"strategy": "tiered"`)
	assert.Contains(t, pv, `"budget": 24`)
	assert.Contains(t, pv, `"finished_freshness_seconds"`)

	// status while running goes through the admin API; the admin address
	// of the config says port 0, so point a copy at the real one.
	y2 := strings.Replace(y, "127.0.0.1:0", r.AdminAddr(), 1)
	require.NoError(t, os.WriteFile(path, []byte(y2), 0o600))
	var out, errb bytes.Buffer
	m := &Main{Stdout: &out, Stderr: &errb, Getenv: os.LookupEnv}
	require.Equal(t, 0, m.Run(ctx, []string{"status", "--config", path}), errb.String())
	assert.Contains(t, out.String(), "running relay at")
	assert.Regexp(t, `poll: tiered, last success .* ago, \d+ requests last cycle \(scan \d+, newest \d+, open \d+, sweep \d+ of which budget \d+, fetch \d+; 400 tasks`, out.String())
	assert.Regexp(t, `budget: 24 requests per interval, the ceilings need [\d.]+; freshness: open tasks \d+s, finished tasks \d+s`, out.String())
	assert.Contains(t, out.String(), "oldest unseen change at most")

	cancel()
	require.NoError(t, <-done)
}

// metricValue returns the value of the first sample of name in a
// Prometheus text exposition.
func metricValue(t *testing.T, exposition, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(exposition, "\n") {
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			require.NoError(t, err, line)
			return v
		}
	}
	t.Fatalf("metric %s not exposed", name)
	return 0
}
