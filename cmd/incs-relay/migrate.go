package main

// The migrate command: a bbolt store carried over into the config's
// jetstream store.

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
)

// MigrateCommand carries a bbolt store over to the config's jetstream
// store: events with their offsets, ids and bodies, the seen-set, cursors,
// dead letters, sink and rule states. The jetstream store must be empty
// and no replica may run on it.
type MigrateCommand struct{ m *Main }

// Run migrates --from (default store.migrate_from) into the store.
func (c *MigrateCommand) Run(ctx context.Context, args []string) error {
	fs := c.m.newFlagSet("migrate")
	path := fs.String("config", "", "config file (store.type: jetstream)")
	from := fs.String("from", "", "the bbolt file to carry over (default store.migrate_from)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := c.m.loadConfig(*path)
	if err != nil {
		return err
	}
	if !cfg.JetStream() {
		return cfg.KeyError("store.type", "migrate carries a bbolt store over to a jetstream one: set store.type: jetstream")
	}
	src := cmp.Or(*from, cfg.Store.MigrateFrom)
	if src == "" {
		return &usageError{msg: "migrate: give --from BBOLT_FILE or set store.migrate_from"}
	}
	h, err := relay.OpenJetStream(cfg, zerolog.Nop(), "")
	if err != nil {
		return err
	}
	defer h.Close()
	empty, err := relay.StoreEmpty(h)
	if err != nil {
		return err
	}
	if !empty {
		return fmt.Errorf("migrate: store %s already holds events or a completed sweep: migrate only into a new store (or choose another store.name)", cfg.StoreLabel())
	}
	// Take the lease, so no replica polls while the events go over.
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- h.Run(runCtx) }()
	defer func() {
		stop()
		<-done
	}()
	wait := time.NewTimer(cfg.Store.Lease.D() + 5*time.Second)
	defer wait.Stop()
	for !h.IsLeader() {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("migrate: %w", err)
		case <-wait.C:
			return fmt.Errorf("migrate: replica %s holds the store's lease: stop every replica first", h.Role().Leader)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	res, err := relay.MigrateFile(ctx, cfg, h, src)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.m.Stdout, "migrated %s to %s: %d events (offsets up to %d), %d tasks seen, %d rule states, %d sinks, %d dead letters, %d values\n",
		src, cfg.StoreLabel(), res.Events, res.Head, res.Tasks, res.Rules, res.Sinks, res.DeadLetters, res.Meta)
	return nil
}
