package main

import (
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/sink"
)

// pauseProbe is an Observer that hears only of pauses.
type pauseProbe struct {
	sink.NopObserver
	paused func(sink string, err error)
}

func (p pauseProbe) Paused(s string, err error) { p.paused(s, err) }

// TestSinkState_SavedWhenReported runs the relay on a real store: a
// failing sink's last error reaches the store while the relay runs, and a
// pause is there as soon as the dispatcher reports it (before any other
// observer hears of it), so `status` of a relay that is down, say after a
// crash, shows it with no save interval in between.
func TestSinkState_SavedWhenReported(t *testing.T) {
	f := newRelayFixture(t, 5, "{initial: 10ms, max: 100ms, max_elapsed: 1m}", "")
	f.hooks.setStatus(func(string) int { return http.StatusServiceUnavailable })
	cfg, err := config.ReadFile(f.cfgPath, os.LookupEnv)
	require.NoError(t, err)
	sc := cfg.Sinks[0]

	type seen struct {
		s   relay.SinkStatus
		err error
	}
	var r *relay.Relay
	atPause := make(chan seen, 4)
	probe := pauseProbe{paused: func(_ string, _ error) {
		// What `status` reads from the store, the moment the pause is
		// reported.
		s, err := relay.StoreSinkStatus(r.Store(), sc)
		atPause <- seen{s, err}
	}}
	startInProcWith(t, f.cfgPath, relay.Options{Observer: probe}, func(opened *relay.Relay) { r = opened })

	require.Eventually(t, func() bool {
		s, err := relay.StoreSinkStatus(r.Store(), sc)
		require.NoError(t, err)
		return s.LastError != "" && s.LastErrorAt != nil
	}, 10*time.Second, 20*time.Millisecond, "the last error reaches the store while the relay runs")
	s, err := relay.StoreSinkStatus(r.Store(), sc)
	require.NoError(t, err)
	assert.Contains(t, s.LastError, "503")
	assert.False(t, s.Paused)

	f.hooks.setStatus(func(string) int { return http.StatusGone })
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
