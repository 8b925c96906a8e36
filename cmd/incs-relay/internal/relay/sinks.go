package relay

// Building each configured sink, its filter and its delivery settings.

import (
	"context"
	"fmt"
	"net/http"
	"slices"

	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/sink"
)

// DefaultStream is the JetStream stream created for a jetstream sink
// without a stream setting, when no stream covers its subjects yet.
const DefaultStream = "INCS"

// BuildSink constructs the sink of sc; NATS sinks connect (or start the
// embedded server) here.
func BuildSink(ctx context.Context, cfg *config.Config, sc config.SinkConfig, log zerolog.Logger) (sink.Sink, error) {
	slog := log // sinks add their own "sink" field
	var (
		s   sink.Sink
		err error
	)
	switch sc.Type {
	case config.SinkNATS:
		nc := sink.NATSConfig{
			Name:      sc.Name,
			URL:       sc.URL,
			Subject:   sc.Subject,
			JetStream: sc.JetStream,
			Timeout:   sc.Timeout.D(),
			Embedded:  sink.EmbeddedOptions{StoreDir: embeddedDir(cfg, sc), FallbackRandomPort: false},
			Logger:    slog,
		}
		i := slices.IndexFunc(cfg.Sinks, func(s config.SinkConfig) bool { return s.Name == sc.Name })
		if nc.Options, err = cfg.NATSOptions(fmt.Sprintf("sinks[%d]", i), sc.NATSAuth); err != nil {
			return nil, err
		}
		if st := sc.Stream; st != nil {
			nc.Stream = &sink.StreamConfig{Name: st.Name, Subjects: st.Subjects, MaxAge: st.MaxAge.D(), Replicas: st.Replicas}
		} else if sc.JetStream {
			// Without a stream JetStream acknowledges nothing: use a stream
			// that covers the subjects, or create one named INCS.
			nc.Stream = &sink.StreamConfig{Name: DefaultStream}
		}
		s, err = sink.NewNATS(ctx, nc)
	case config.SinkWebhook:
		var g *sink.Guard
		if g, err = sink.NewGuard(sc.DenyNetworks, sc.AllowNetworks); err != nil {
			break
		}
		s, err = sink.NewWebhook(sink.WebhookConfig{
			Name:        sc.Name,
			URL:         sc.URL,
			Secrets:     sc.AllSecrets(),
			Format:      sc.Format,
			Timeout:     sc.Timeout.D(),
			MaxInFlight: maxInFlight(sc),
			Transport:   g.WebhookTransport(maxInFlight(sc)),
			Logger:      slog,
		})
	case config.SinkSlack, config.SinkFeishu:
		var g *sink.Guard
		if g, err = sink.NewGuard(sc.DenyNetworks, sc.AllowNetworks); err != nil {
			break
		}
		cc := sc.ChatConfig(slog)
		cc.HTTPClient = g.HTTPClient()
		if sc.Type == config.SinkSlack {
			s, err = sink.NewSlack(cc)
		} else {
			s, err = sink.NewFeishu(cc)
		}
		if err == nil {
			s = &closingIdle{Sink: s, client: cc.HTTPClient}
		}
	default:
		return nil, cfg.KeyError("sinks."+sc.Name+".type", "unknown sink type "+sc.Type)
	}
	if err != nil {
		return nil, sinkError(cfg, sc, err)
	}
	if sc.Redact != nil && len(*sc.Redact) > 0 && (sc.Type == config.SinkNATS || sc.Type == config.SinkWebhook) {
		s = sink.Redacting(s, *sc.Redact)
	}
	return s, nil
}

// sinkError names the sink's config key in construction errors caused by
// its settings (templates, secrets), so they exit 2 like other bad input.
func sinkError(cfg *config.Config, sc config.SinkConfig, err error) error {
	if sc.Type == config.SinkNATS {
		return fmt.Errorf("sink %s: %w", sc.Name, err)
	}
	i := slices.IndexFunc(cfg.Sinks, func(s config.SinkConfig) bool { return s.Name == sc.Name })
	return cfg.KeyError(fmt.Sprintf("sinks[%d]", i), err.Error())
}

// BuildFilter is the sink's filter, applied by its dispatcher (chat sinks
// do not filter again): event types, and the statuses, assignees and task
// types of chat sinks.
func BuildFilter(sc config.SinkConfig) (sink.Filter, error) {
	fc := sink.FilterConfig{Events: sc.Events, Statuses: sc.Statuses, Assignees: sc.Assignees, TaskTypes: sc.TaskTypes}
	if err := fc.Validate(); err != nil {
		return nil, err
	}
	return fc.Filter(), nil
}

// CheckSinks constructs every sink that can be built without a network
// (webhook and chat sinks: secrets and templates are checked), as
// check-config does.
func CheckSinks(cfg *config.Config) error {
	for _, sc := range cfg.Sinks {
		if sc.Type == config.SinkNATS {
			continue
		}
		s, err := BuildSink(context.Background(), cfg, sc, zerolog.Nop())
		if err != nil {
			return err
		}
		_ = s.Close(context.Background())
	}
	return nil
}

// Renderer is a sink that can show the request body it would send, for
// `preview`: the chat sinks.
type Renderer interface {
	Render(ev *diff.Event) ([]byte, error)
}

// closingIdle closes a chat sink's guarded HTTP client's idle connections
// when the sink closes (a chat sink leaves a client it was given open).
type closingIdle struct {
	sink.Sink
	client *http.Client
}

func (c *closingIdle) Close(ctx context.Context) error {
	err := c.Sink.Close(ctx)
	c.client.CloseIdleConnections()
	return err
}

// Render passes through to the chat sink, for `preview`.
func (c *closingIdle) Render(ev *diff.Event) ([]byte, error) {
	r, ok := c.Sink.(Renderer)
	if !ok {
		return nil, fmt.Errorf("sink %s cannot render", c.Sink.Name())
	}
	return r.Render(ev)
}
