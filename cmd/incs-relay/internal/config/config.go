package config

// The config's schema: the types YAML decodes into and the defaults every
// file is laid over. Reading and positioning the YAML is config_yaml.go;
// checking the values is config_validate.go, which asks the package that
// owns each rule (sink, poller, diff/rules).

import (
	"net/url"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
	"gopkg.in/yaml.v3"

	"github.com/incs-relay/incs-relay/diff/rules"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/sink"
)

// Config is the whole relay configuration as read from YAML.
type Config struct {
	Upstream UpstreamConfig `yaml:"upstream"`
	Poll     PollConfig     `yaml:"poll"`
	Store    StoreConfig    `yaml:"store"`
	Admin    AdminConfig    `yaml:"admin"`
	Log      LogConfig      `yaml:"log"`
	Sinks    []SinkConfig   `yaml:"sinks"`

	Calendars map[string]CalendarConfig `yaml:"calendars"`
	Rules     []RuleConfig              `yaml:"rules"`

	path   string // file the config was read from, for error messages
	loc    *time.Location
	rules  []*rules.Rule // built from Rules by Validate
	digest string        // Digest: of the YAML as read, before expansion
	root   *yaml.Node    // the YAML as read, for the lines of keys (Compare)
	files  []string      // FileRefs
}

// UpstreamConfig is the incsapp API.
type UpstreamConfig struct {
	BaseURL   string   `yaml:"base_url"`
	Token     string   `yaml:"token" secret:"true"`
	Timezone  string   `yaml:"timezone"`
	PageSize  int      `yaml:"page_size"`
	RateLimit float64  `yaml:"rate_limit"`
	Timeout   Duration `yaml:"timeout"`
}

// PollConfig says how and how far back the API is polled.
type PollConfig struct {
	Interval Duration `yaml:"interval"`
	Lookback Duration `yaml:"lookback"`
	Initial  string   `yaml:"initial"`
	// FullSweep is the longest period over which every finished task in the
	// lookback window is read again (tiered polling).
	FullSweep Duration `yaml:"full_sweep"`
	// OpenSweep is how often every open task (not started, in progress)
	// is read; 0 means twice the interval.
	OpenSweep Duration `yaml:"open_sweep"`
	// Strategy is "tiered" (open tasks often, finished ones in slices) or
	// "full" (every task in the window every cycle).
	Strategy string `yaml:"strategy"`
	// Budget is the API requests per interval the tiered strategy aims to
	// spend on average; 0 means 80 % of upstream.rate_limit × interval
	// (see Config.EffectiveBudget).
	Budget int `yaml:"budget"`
}

// EffectiveBudget is poll.budget, or its default when it is not set.
func (c *Config) EffectiveBudget() int {
	if c.Poll.Budget > 0 {
		return c.Poll.Budget
	}
	return poller.DefaultBudget(c.Upstream.RateLimit, c.Poll.Interval.D())
}

// StoreConfig is the store: a bbolt file, or replicas on a JetStream
// cluster (config_store.go).
type StoreConfig struct {
	Path      string   `yaml:"path"`
	Retention Duration `yaml:"retention"`

	JetStreamStoreConfig `yaml:",inline"`

	pathSet bool // the file sets store.path (Parse)
}

// AdminConfig is the admin HTTP API.
type AdminConfig struct {
	Addr  string `yaml:"addr"`
	Token string `yaml:"token" secret:"true"`
	// Hosts are the host names a request's Host may carry besides IP
	// addresses, localhost and the host of Addr: exact names, any case.
	Hosts []string `yaml:"hosts"`
	// Redact lists the event fields masked, as a chat sink's redact does,
	// in the events the admin API, its page and `events` show.
	Redact []string `yaml:"redact"`
}

// LogConfig sets the log output; the --log-level and --log-format flags
// override it.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// RetryConfig is a sink's exponential backoff.
type RetryConfig struct {
	Initial    Duration `yaml:"initial"`
	Max        Duration `yaml:"max"`
	MaxElapsed Duration `yaml:"max_elapsed"`
}

// StreamConfig asks the NATS sink to create or check a JetStream stream.
type StreamConfig struct {
	Name     string   `yaml:"name"`
	Subjects []string `yaml:"subjects"`
	MaxAge   Duration `yaml:"max_age"`
	Replicas int      `yaml:"replicas"`
}

// SinkConfig is one destination. Which keys apply depends on Type.
type SinkConfig struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"`
	URL  string `yaml:"url"`

	Events []string `yaml:"events"`

	// Start is where a sink the store has never seen begins: "now" (the
	// default; empty means now), "earliest", or a decimal offset ≥ 1.
	// See StartAt.
	Start string `yaml:"start"`

	// nats
	Subject   string        `yaml:"subject"`
	JetStream bool          `yaml:"jetstream"`
	Stream    *StreamConfig `yaml:"stream"`

	// webhook: json (default), cloudevents or binary; see sink.WebhookFormats
	Format string `yaml:"format"`

	// webhook, slack, feishu
	Secret      string       `yaml:"secret" secret:"true"`
	Secrets     []string     `yaml:"secrets" secret:"true"`
	Timeout     Duration     `yaml:"timeout"`
	MaxInFlight int          `yaml:"max_in_flight"`
	Retry       *RetryConfig `yaml:"retry"`

	// redaction and chat rendering
	Redact    *[]string `yaml:"redact"`
	Locale    string    `yaml:"locale"`
	Link      string    `yaml:"link"`
	Template  string    `yaml:"template"`
	Statuses  []int     `yaml:"statuses"`
	Assignees []string  `yaml:"assignees"`
	TaskTypes []int     `yaml:"task_types"`
	RateLimit float64   `yaml:"rate_limit"`
	Burst     int       `yaml:"burst"`

	// outbound guard for webhook and chat targets
	DenyNetworks  []string `yaml:"deny_networks"`
	AllowNetworks []string `yaml:"allow_networks"`

	// nats: authentication and the embedded server's data directory
	NATSSinkOptions `yaml:",inline"`
}

// Sink types.
const (
	SinkNATS    = "nats"
	SinkWebhook = "webhook"
	SinkSlack   = "slack"
	SinkFeishu  = "feishu"
)

// Where a sink new to the store starts (SinkConfig.StartAt).
const (
	// StartNow: the events stored from when the sink was added.
	StartNow = "now"
	// StartEarliest: every event the store still keeps.
	StartEarliest = "earliest"
	// StartOffset: the events from a given offset on.
	StartOffset = "offset"
)

// StartAt says where the sink begins when the store has never seen it (a
// sink added at runtime or between restarts): mode StartNow, StartEarliest,
// or StartOffset with offset ≥ 1. A sink the store knows keeps its cursor:
// changing start later does nothing (rewinding is replay). Valid after
// Validate, which refuses any other value; an empty or invalid start is
// StartNow.
func (s SinkConfig) StartAt() (mode string, offset uint64) {
	switch s.Start {
	case StartEarliest:
		return StartEarliest, 0
	case "", StartNow:
		return StartNow, 0
	}
	if n, ok := parseStartOffset(s.Start); ok {
		return StartOffset, n
	}
	return StartNow, 0
}

// Duration is a time.Duration written as a Go duration string ("10s").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Default returns the configuration every file is laid over.
func Default() Config {
	return Config{
		Upstream: UpstreamConfig{
			BaseURL:   poller.DefaultBaseURL,
			Timezone:  poller.DefaultTimezone,
			PageSize:  poller.DefaultPageSize,
			RateLimit: poller.DefaultRateLimit,
			Timeout:   Duration(poller.DefaultTimeout),
		},
		Poll: PollConfig{
			Interval:  Duration(poller.DefaultInterval),
			Lookback:  Duration(poller.DefaultLookback),
			Initial:   "snapshot",
			FullSweep: Duration(poller.DefaultFullSweep),
			Strategy:  "tiered",
		},
		Store: StoreConfig{
			Path:      "./data/incs-relay.db",
			Retention: Duration(168 * time.Hour),
		},
		Admin: AdminConfig{Addr: "127.0.0.1:8086"},
	}
}

// File is the name of the file c was read from, as error messages give it.
func (c *Config) File() string { return c.path }

// SetFile sets the name error messages give for a config built in code
// (the demo's).
func (c *Config) SetFile(name string) { c.path = name }

// Location returns the API's time zone; valid after Validate.
func (c *Config) Location() *time.Location { return c.loc }

// PollerConfig is the poller's view of the config.
func (c *Config) PollerConfig() poller.Config {
	return poller.Config{
		BaseURL:   c.Upstream.BaseURL,
		Token:     c.Upstream.Token,
		Location:  c.Location(),
		PageSize:  c.Upstream.PageSize,
		RateLimit: c.Upstream.RateLimit,
		Timeout:   c.Upstream.Timeout.D(),
		Lookback:  c.Poll.Lookback.D(),
		Interval:  c.Poll.Interval.D(),
		FullSweep: c.Poll.FullSweep.D(),
		OpenSweep: c.Poll.OpenSweep.D(),
		Budget:    c.EffectiveBudget(),
	}
}

// ChatConfig is the chat sink's (slack, feishu) view of s; its
// rate_limit is passed on only when positive.
func (s SinkConfig) ChatConfig(log zerolog.Logger) sink.ChatConfig {
	cc := sink.ChatConfig{
		Name:     s.Name,
		URL:      s.URL,
		Secret:   s.Secret,
		Locale:   s.Locale,
		Link:     s.Link,
		Template: s.Template,
		Timeout:  s.Timeout.D(),
		Logger:   log,
	}
	if s.Redact != nil {
		cc.Redact = *s.Redact
		if cc.Redact == nil {
			cc.Redact = []string{}
		}
	}
	if s.RateLimit > 0 {
		cc.RateLimit = rate.Limit(s.RateLimit)
	}
	cc.Burst = s.Burst
	return cc
}

// HostOf returns the host of a URL, never its path, query or user info:
// what messages and logs may show of a URL.
func HostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "?"
	}
	return u.Host
}

// AllSecrets returns the webhook secrets, newest first.
func (s *SinkConfig) AllSecrets() []string {
	if len(s.Secrets) > 0 {
		return s.Secrets
	}
	if s.Secret != "" {
		return []string{s.Secret}
	}
	return nil
}
