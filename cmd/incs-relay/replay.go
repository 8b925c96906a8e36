package main

// The replay command: rewind a sink, in the store or through a running
// relay's admin API.

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/admin"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/store"
)

// ReplayCommand rewinds one sink so its events are delivered again, with
// their original ids and offsets.
type ReplayCommand struct{ m *Main }

// Run rewinds --sink to --from OFFSET or --since RFC3339.
func (c *ReplayCommand) Run(ctx context.Context, args []string) error {
	fs := c.m.newFlagSet("replay")
	path := fs.String("config", "", "config file")
	name := fs.String("sink", "", "sink to rewind")
	from := fs.String("from", "", "first offset to deliver again")
	since := fs.String("since", "", "deliver again every event stored at or after this RFC 3339 time")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := c.m.loadConfig(*path)
	if err != nil {
		return err
	}
	if *name == "" {
		return &usageError{msg: "replay: --sink NAME is required"}
	}
	if !slices.ContainsFunc(cfg.Sinks, func(s config.SinkConfig) bool { return s.Name == *name }) {
		return &usageError{msg: fmt.Sprintf("replay: --sink: no sink %q in %s", *name, *path)}
	}
	if (*from == "") == (*since == "") {
		return &usageError{msg: "replay: give exactly one of --from OFFSET or --since RFC3339"}
	}
	db, ac, err := admin.StoreOrClient(ctx, cfg)
	if err != nil {
		return err
	}
	if db != nil {
		defer db.Close()
		off, err := admin.ReplayFrom(db, *from, *since)
		if err != nil {
			return &usageError{msg: "replay: --" + err.Error()}
		}
		if err := db.Rewind(*name, off); err != nil {
			return err
		}
		head, _ := db.Head()
		fmt.Fprintf(c.m.Stdout, "%s rewound: events %d to %d %s\n", *name, off, head, redeliveredBy(ctx, db))
		return nil
	}
	q := url.Values{}
	if *from != "" {
		q.Set("from", *from)
	} else {
		q.Set("since", *since)
	}
	var res struct {
		From uint64 `json:"from"`
		Head uint64 `json:"head"`
	}
	if err := ac.Do(ctx, http.MethodPost, "/v1/sinks/"+url.PathEscape(*name)+"/replay", q, &res); err != nil {
		return err
	}
	fmt.Fprintf(c.m.Stdout, "%s rewound: events %d to %d are being delivered again\n", *name, res.From, res.Head)
	return nil
}

// redeliveredBy says who delivers a rewound sink's events again, the
// store opened here: a bbolt store is opened only while no relay holds it;
// a jetstream store is shared, and its live replicas deliver at once.
func redeliveredBy(ctx context.Context, db store.Store) string {
	js, ok := db.(*relay.JetStream)
	if !ok {
		return "will be delivered again when the relay runs"
	}
	js.Refresh(ctx) // the live replicas as the store holds them now
	if members := js.Role().Members; len(members) > 0 {
		return "are being delivered again by the live replicas (" + strings.Join(members, ", ") + ")"
	}
	return "will be delivered again once a replica runs (none is live)"
}
