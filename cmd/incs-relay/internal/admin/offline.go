package admin

// What a one-off command reads: the store, or a running relay's admin
// API when the relay holds the store.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/store"
)

// StoreOrClient opens the config's store for a one-off command. When a
// running relay holds it (a bbolt file is locked), it returns a client of
// that relay's admin API instead: events, status and replay then go
// through it. A jetstream store is opened directly: replicas share it and
// nobody locks it.
func StoreOrClient(ctx context.Context, cfg *config.Config) (store.Store, *Client, error) {
	if cfg.JetStream() {
		// Replicas share the store and nobody locks it: read it directly,
		// from any replica or none.
		h, err := relay.OpenJetStreamReader(cfg, zerolog.Nop())
		if err != nil {
			return nil, nil, err
		}
		return h, nil, nil
	}
	db, err := relay.OpenStore(cfg, store.Options{Timeout: 500 * time.Millisecond})
	if err == nil {
		return db, nil, nil
	}
	if !errors.Is(err, store.ErrLocked) {
		return nil, nil, err
	}
	if cfg.Admin.Addr == "" {
		return nil, nil, fmt.Errorf("store %s is in use by a running relay and admin.addr is not set, so its admin API cannot be asked", cfg.Store.Path)
	}
	ac := NewClient(cfg.Admin.Addr, cfg.Admin.Token, 30*time.Second)
	if err := ac.Do(ctx, http.MethodGet, "/healthz", nil, nil); err != nil {
		return nil, nil, fmt.Errorf("store %s is in use by a running relay, and its admin API at %s does not answer: %w", cfg.Store.Path, cfg.Admin.Addr, err)
	}
	return nil, ac, nil
}

// ClusterView is the cluster as a one-off command sees it: a
// replica's own view from its admin API (admin.addr) when one answers;
// else the lease, the live replicas and the partition assignment as the
// store holds them.
func ClusterView(ctx context.Context, cfg *config.Config, h *relay.JetStream) *relay.ClusterView {
	if cfg.Admin.Addr != "" {
		ac := NewClient(cfg.Admin.Addr, cfg.Admin.Token, 3*time.Second)
		var v relay.ClusterView
		if err := ac.Do(ctx, http.MethodGet, "/v1/cluster", nil, &v); err == nil && v.Name == cfg.Store.Name {
			return &v
		}
	}
	h.Refresh(ctx)
	v := relay.NewClusterView(cfg, h)
	v.Self, v.Leading = "", false
	return v
}
