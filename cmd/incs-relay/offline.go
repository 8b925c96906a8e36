package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/store"
)

// storeOrAdmin opens the config's store for a one-off command. When a
// running relay holds it, it returns an admin client instead: events,
// status and replay then go through that relay's admin API.
func storeOrAdmin(ctx context.Context, cfg *config.Config) (store.Store, *adminClient, error) {
	if cfg.JetStream() {
		// Replicas share the store and nobody locks it: read it directly,
		// from any replica or none.
		return openStoreOnce(cfg)
	}
	db, err := openStore(cfg, store.Options{Timeout: 500 * time.Millisecond})
	if err == nil {
		return db, nil, nil
	}
	if !errors.Is(err, store.ErrLocked) {
		return nil, nil, err
	}
	if cfg.Admin.Addr == "" {
		return nil, nil, fmt.Errorf("store %s is in use by a running relay and admin.addr is not set, so its admin API cannot be asked", cfg.Store.Path)
	}
	ac := &adminClient{base: "http://" + cfg.Admin.Addr, token: cfg.Admin.Token, http: &http.Client{Timeout: 30 * time.Second}}
	if err := ac.do(ctx, http.MethodGet, "/healthz", nil, nil); err != nil {
		return nil, nil, fmt.Errorf("store %s is in use by a running relay, and its admin API at %s does not answer: %w", cfg.Store.Path, cfg.Admin.Addr, err)
	}
	return nil, ac, nil
}

// openStore opens the store the config names. Every command opens its
// store here; a new store backend is added here and in config.go's store
// section.
func openStore(cfg *config.Config, opts store.Options) (store.Store, error) {
	if cfg.JetStream() {
		h, err := openJetStream(cfg, opts.Logger, "")
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return h, nil
	}
	db, err := store.Open(cfg.Store.Path, opts)
	if err != nil {
		return nil, err
	}
	return db, nil
}

// adminClient calls a running relay's admin API.
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

// do sends a request and decodes a JSON answer into out (if not nil). A
// non-2xx answer is an error carrying the API's message.
func (c *adminClient) do(ctx context.Context, method, path string, q url.Values, out any) error {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin API: %s %s: %w", method, path, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("admin API: %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		msg := e.Error
		if msg == "" {
			msg = strings.TrimSpace(string(body))
		}
		err := fmt.Errorf("admin API: %s %s: HTTP %d: %s", method, path, resp.StatusCode, msg)
		if resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusNotFound {
			return &usageError{msg: err.Error()}
		}
		return err
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
}
