package main

// The preview command: what a sink would send for sample events (log
// types and the configured rules' derived events) or a given one.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/diff/rules"
	"github.com/incs-relay/incs-relay/sink"
)

// PreviewCommand prints exactly what a sink would send for a sample event
// (one per type) or a given event, so a template can be checked before it
// reaches a channel. Nothing is sent.
type PreviewCommand struct{ m *Main }

// Run renders and prints.
func (c *PreviewCommand) Run(ctx context.Context, args []string) error {
	fs := c.m.newFlagSet("preview")
	path := fs.String("config", "", "config file")
	name := fs.String("sink", "", "sink to preview")
	evFile := fs.String("event", "", "an event JSON file (as printed by `incs-relay events`); default: one sample per event type")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := c.m.loadConfig(*path)
	if err != nil {
		return err
	}
	var sc *config.SinkConfig
	for i := range cfg.Sinks {
		if cfg.Sinks[i].Name == *name {
			sc = &cfg.Sinks[i]
		}
	}
	if sc == nil {
		return &usageError{msg: fmt.Sprintf("preview: --sink: no sink %q in %s", *name, *path)}
	}
	var evs []diff.Event
	if *evFile != "" {
		b, err := os.ReadFile(*evFile)
		if err != nil {
			return &usageError{msg: "preview: --event: " + err.Error()}
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		for dec.More() {
			var ev diff.Event
			if err := dec.Decode(&ev); err != nil {
				return &usageError{msg: fmt.Sprintf("preview: --event %s: not an event JSON: %v", *evFile, err)}
			}
			if diff.IsEdit(ev.Type) && ev.Data.Edit == nil {
				// A task.deleted's JSON has no member that sets it.
				ev.Data.Edit = &diff.Edit{}
			}
			ev.Body, _ = json.Marshal(ev)
			evs = append(evs, ev)
		}
	} else {
		evs = append(diff.SampleEvents(), sampleRuleEvents(cfg)...)
	}
	var s sink.Sink
	if sc.Type == config.SinkNATS {
		s = nil // no connection needed to show a NATS message
	} else if s, err = relay.BuildSink(ctx, cfg, *sc, zerolog.Nop()); err != nil {
		return err
	}
	if s != nil {
		defer s.Close(ctx)
	}
	filter, _ := relay.BuildFilter(*sc)
	for i := range evs {
		ev := &evs[i]
		fmt.Fprintf(c.m.Stdout, "# %s %s (task %d)", ev.Type, ev.ID, ev.Data.TaskID)
		if filter != nil && !filter(ev) {
			fmt.Fprintln(c.m.Stdout, ": filtered out, not sent to this sink")
			continue
		}
		fmt.Fprintln(c.m.Stdout)
		var body []byte
		switch r := s.(type) {
		case relay.Renderer:
			body, err = r.Render(ev)
			if err != nil {
				return fmt.Errorf("preview: %s: %w", sc.Name, err)
			}
		default:
			if sc.Redact != nil {
				ev = sink.Redact(ev, *sc.Redact)
			}
			body = ev.Body
			if sc.Type == config.SinkWebhook {
				if body, err = printWebhookHeaders(c.m.Stdout, sc.Format, ev); err != nil {
					return fmt.Errorf("preview: %s: %w", sc.Name, err)
				}
			}
			if sc.Type == config.SinkNATS {
				subj, err := sink.NATSSubject(sc.Subject, ev)
				if err != nil {
					return fmt.Errorf("preview: %s: %w", sc.Name, err)
				}
				fmt.Fprintf(c.m.Stdout, "subject: %s\n", subj)
			}
		}
		var pretty bytes.Buffer
		if json.Indent(&pretty, body, "", "  ") == nil {
			body = pretty.Bytes()
		}
		fmt.Fprintf(c.m.Stdout, "%s\n\n", body)
	}
	return nil
}

// printWebhookHeaders prints the headers that carry a webhook sink's format
// (Content-Type, and the ce-* attributes in binary mode), one "name: value"
// line each, and returns the body the sink sends.
func printWebhookHeaders(w io.Writer, format string, ev *diff.Event) ([]byte, error) {
	h, body, err := sink.WebhookMessage(format, ev)
	if err != nil {
		return nil, err
	}
	for _, k := range slices.Sorted(maps.Keys(h)) {
		fmt.Fprintf(w, "%s: %s\n", strings.ToLower(k), h.Get(k))
	}
	return body, nil
}

// sampleRuleEvents are what preview shows of derived events: a firing of
// each configured rule (and its resolving event with resolve: true), or of
// a stalled rule when none is configured.
func sampleRuleEvents(cfg *config.Config) []diff.Event {
	rs := cfg.ValidRules()
	if len(rs) == 0 {
		return []diff.Event{
			diff.SampleDerivedEvent("stalled", "task.stalled", rules.SinceLastLog, 4*time.Hour, false),
			diff.SampleDerivedEvent("stalled", "task.stalled", rules.SinceLastLog, 4*time.Hour, true),
		}
	}
	var out []diff.Event
	for _, r := range rs {
		out = append(out, diff.SampleDerivedEvent(r.Name, r.Event, r.Since, r.After, false))
		if r.Resolve {
			out = append(out, diff.SampleDerivedEvent(r.Name, r.Event, r.Since, r.After, true))
		}
	}
	return out
}
