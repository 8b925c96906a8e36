package relay

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/poller/sim"
	"github.com/incs-relay/incs-relay/sink"
)

// pauseProbe is an Observer that hears only of pauses.
type pauseProbe struct {
	sink.NopObserver
	paused func(sink string, err error)
}

func (p pauseProbe) Paused(s string, err error) { p.paused(s, err) }

// runHookRelay runs a relay on a simulated API of tasks tasks with one
// webhook sink "hooks" whose receiver answers status() to every delivery;
// opened, if not nil, gets the relay before it runs.
func runHookRelay(t *testing.T, tasks int, status func() int, opts Options, opened func(*Relay)) *config.Config {
	t.Helper()
	api := httptest.NewServer(sim.New(sim.Options{Token: "tok", Tasks: tasks, Seed: 5}))
	t.Cleanup(api.Close)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if code := status(); code/100 != 2 {
			http.Error(w, "no", code)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hook.Close)
	cfg := config.Default()
	cfg.Upstream.BaseURL, cfg.Upstream.Token, cfg.Upstream.RateLimit = api.URL, "tok", 500
	cfg.Poll.Interval, cfg.Poll.FullSweep, cfg.Poll.Initial = config.Duration(100*time.Millisecond), config.Duration(time.Second), "replay"
	cfg.Store.Path = filepath.Join(t.TempDir(), "relay.db")
	cfg.Admin.Addr = ""
	cfg.Sinks = []config.SinkConfig{{Name: "hooks", Type: config.SinkWebhook, URL: hook.URL, Secret: testSecret, MaxInFlight: 4,
		Retry: &config.RetryConfig{Initial: config.Duration(10 * time.Millisecond), Max: config.Duration(100 * time.Millisecond), MaxElapsed: config.Duration(time.Minute)}}}
	require.NoError(t, cfg.Validate())
	ctx, cancel := context.WithCancel(context.Background())
	r, err := Open(ctx, &cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel), opts)
	if err != nil {
		cancel()
		require.NoError(t, err)
	}
	if opened != nil {
		opened(r)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(20 * time.Second):
			t.Error("relay did not stop within 20s")
		}
	})
	return &cfg
}

// TestSinkState_SavedWhenReported runs the relay on a real store: a
// failing sink's last error reaches the store while the relay runs, and a
// pause is there as soon as the dispatcher reports it (before any other
// observer hears of it), so `status` of a relay that is down, say after a
// crash, shows it with no save interval in between.
func TestSinkState_SavedWhenReported(t *testing.T) {
	var code atomic.Int64
	code.Store(http.StatusServiceUnavailable)

	type seen struct {
		s   SinkStatus
		err error
	}
	var r *Relay
	var sc config.SinkConfig
	atPause := make(chan seen, 4)
	probe := pauseProbe{paused: func(_ string, _ error) {
		// What `status` reads from the store, the moment the pause is
		// reported.
		s, err := StoreSinkStatus(r.Store(), sc)
		atPause <- seen{s, err}
	}}
	cfg := runHookRelay(t, 5, func() int { return int(code.Load()) }, Options{Observer: probe}, func(opened *Relay) {
		r, sc = opened, opened.Config().Sinks[0]
	})
	require.Equal(t, "hooks", cfg.Sinks[0].Name)

	require.Eventually(t, func() bool {
		s, err := StoreSinkStatus(r.Store(), sc)
		require.NoError(t, err)
		return s.LastError != "" && s.LastErrorAt != nil
	}, 10*time.Second, 20*time.Millisecond, "the last error reaches the store while the relay runs")
	s, err := StoreSinkStatus(r.Store(), sc)
	require.NoError(t, err)
	assert.Contains(t, s.LastError, "503")
	assert.False(t, s.Paused)

	code.Store(http.StatusGone)
	var got seen
	select {
	case got = <-atPause:
	case <-time.After(10 * time.Second):
		t.Fatal("the sink did not pause on 410")
	}
	require.NoError(t, got.err)
	assert.True(t, got.s.Paused, "the pause is in the store when it is reported")
	assert.Contains(t, got.s.PauseReason, "HTTP 410")
	assert.Contains(t, got.s.LastError, "410", "with the error that paused it")
}
