package main

// The events command: stored events as JSON lines, from the store or a
// running relay's admin API.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/admin"
)

// EventsCommand prints stored events as JSON lines.
type EventsCommand struct{ m *Main }

// Run prints events from --from, at most --limit, of --type if given.
func (c *EventsCommand) Run(ctx context.Context, args []string) error {
	fs := c.m.newFlagSet("events")
	path := fs.String("config", "", "config file")
	from := fs.String("from", "1", "first offset")
	limit := fs.String("limit", "100", "most events to print")
	typ := fs.String("type", "", "only events of this type, e.g. task.status_changed")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := c.m.loadConfig(*path)
	if err != nil {
		return err
	}
	q, err := admin.ParseEventQuery(*from, *limit, *typ, cfg.KnownEventType)
	if err != nil {
		return &usageError{msg: "events: --" + err.Error()}
	}
	db, ac, err := admin.StoreOrClient(ctx, cfg)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(c.m.Stdout)
	defer w.Flush()
	if db != nil {
		defer db.Close()
		evs, err := db.Events(ctx, q)
		if err != nil {
			return err
		}
		for i := range evs {
			w.Write(admin.RedactedBody(&evs[i], cfg.Admin.Redact))
			w.WriteByte('\n')
		}
		return nil
	}
	var body struct {
		Events []json.RawMessage `json:"events"`
	}
	v := url.Values{"from": {strconv.FormatUint(q.From, 10)}, "limit": {strconv.Itoa(q.Limit)}}
	if q.Type != "" {
		v.Set("type", q.Type)
	}
	if err := ac.Do(ctx, http.MethodGet, "/v1/events", v, &body); err != nil {
		return err
	}
	// The admin API indents its answer, events included; compacting gives
	// back the stored bytes (compact, HTML-escaped JSON), one line each.
	var line bytes.Buffer
	for _, ev := range body.Events {
		line.Reset()
		if err := json.Compact(&line, ev); err != nil {
			return fmt.Errorf("events: admin API: bad event: %w", err)
		}
		line.WriteByte('\n')
		w.Write(line.Bytes())
	}
	return nil
}
