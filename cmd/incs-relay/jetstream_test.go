package main

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/admin"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/poller/sim"
)

// TestRelay_JetStreamWithoutStreamSetting: a jetstream sink with no
// `stream:` creates a stream named INCS over its subjects, so the events are
// acknowledged instead of failing with "no response from stream".
func TestRelay_JetStreamWithoutStreamSetting(t *testing.T) {
	world := sim.New(sim.Options{Token: "tok", Tasks: 20, Seed: 5})
	api := httptest.NewServer(world)
	defer api.Close()
	ns := runNATS(t)

	cfg := config.Default()
	cfg.SetFile("js")
	cfg.Upstream.BaseURL, cfg.Upstream.Token, cfg.Upstream.RateLimit = api.URL, "tok", 100
	cfg.Poll.Interval, cfg.Poll.FullSweep, cfg.Poll.Initial = config.Duration(100*time.Millisecond), config.Duration(time.Second), "replay"
	cfg.Store.Path = filepath.Join(t.TempDir(), "relay.db")
	cfg.Admin.Addr = ""
	cfg.Sinks = []config.SinkConfig{{Name: "bus", Type: config.SinkNATS, URL: ns.ClientURL(), JetStream: true}}
	require.NoError(t, cfg.Validate())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := admin.Open(ctx, &cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel), relay.Options{})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	want := uint64(len(world.Logs()))
	require.Eventually(t, func() bool {
		s, err := js.Stream(ctx, "INCS")
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == want
	}, 20*time.Second, 20*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
}
