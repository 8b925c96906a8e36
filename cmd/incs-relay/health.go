package main

// The health command: one check of a running relay's /healthz or
// /readyz, for the container's HEALTHCHECK.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// HealthCommand asks a running relay's /healthz (or /readyz with --ready)
// and exits 0 when it answers 200: the container HEALTHCHECK, where no curl
// exists.
type HealthCommand struct{ m *Main }

// Run performs one check.
func (c *HealthCommand) Run(ctx context.Context, args []string) error {
	fs := c.m.newFlagSet("health")
	addr := fs.String("addr", "127.0.0.1:8086", "admin address of the relay")
	ready := fs.Bool("ready", false, "check /readyz instead of /healthz")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	path := "/healthz"
	if *ready {
		path = "/readyz"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+*addr+path, nil)
	if err != nil {
		return &usageError{msg: "health: --addr: " + err.Error()}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("health: %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Fprint(c.m.Stdout, string(body))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health: %s: HTTP %d", path, resp.StatusCode)
	}
	return nil
}
