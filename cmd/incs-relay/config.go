package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/incs-relay/incs-relay/diff"
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

	path  string // file the config was read from, for error messages
	loc   *time.Location
	rules []*rules.Rule // built from Rules by Validate
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

	pathSet bool // the file sets store.path (ParseConfig)
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

// Duration is a time.Duration written as a Go duration string ("10s").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML accepts only Go duration strings; a bare number is an error
// because its unit would be a guess.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &durationError{line: n.Line, value: "", msg: "want a duration string such as 10s"}
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return &durationError{line: n.Line, value: n.Value, msg: "want a Go duration such as 10s, 5m or 72h"}
	}
	if v < 0 {
		return &durationError{line: n.Line, value: n.Value, msg: "must not be negative"}
	}
	*d = Duration(v)
	return nil
}

type durationError struct {
	line  int
	value string
	msg   string
}

func (e *durationError) Error() string {
	return fmt.Sprintf("line %d: bad duration %q: %s", e.line, e.value, e.msg)
}

// ConfigError is an invalid configuration: it names the file, the key and
// what is wrong, on one line. Commands exit 2 on it.
type ConfigError struct {
	File string
	Key  string // e.g. "sinks[1].secret"; empty when the file as a whole is wrong
	Line int    // 0 when unknown
	Msg  string
}

// Error returns "file:line: key: problem".
func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// DefaultConfig returns the configuration every file is laid over.
func DefaultConfig() Config {
	return Config{
		Upstream: UpstreamConfig{
			BaseURL:   "https://api.incsapp.com",
			Timezone:  "Asia/Shanghai",
			PageSize:  100,
			RateLimit: 5,
			Timeout:   Duration(10 * time.Second),
		},
		Poll: PollConfig{
			Interval:  Duration(10 * time.Second),
			Lookback:  Duration(720 * time.Hour),
			Initial:   "snapshot",
			FullSweep: Duration(10 * time.Minute),
			Strategy:  "tiered",
		},
		Store: StoreConfig{
			Path:      "./data/incs-relay.db",
			Retention: Duration(168 * time.Hour),
		},
		Admin: AdminConfig{Addr: "127.0.0.1:8086"},
	}
}

// ReadConfigFile reads, expands and validates the config at path.
func ReadConfigFile(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		msg := err.Error()
		var pe *os.PathError
		if errors.As(err, &pe) {
			msg = "cannot read: " + pe.Err.Error()
		}
		return nil, &ConfigError{File: path, Msg: msg}
	}
	return ParseConfig(path, b, os.LookupEnv)
}

var yamlFieldErr = regexp.MustCompile(`line (\d+): field (\S+) not found in type main\.(\w+)`)
var yamlLineErr = regexp.MustCompile(`line (\d+): (.*)`)

// ParseConfig decodes YAML laid over DefaultConfig, expands ${VAR} inside
// string values with lookup, and validates the result. Unknown keys are
// errors. The file name is only used in messages.
func ParseConfig(file string, data []byte, lookup func(string) (string, bool)) (*Config, error) {
	cfg := DefaultConfig()
	cfg.path = file
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(file, &root, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlError(file, &root, err)
	}
	if err := expandEnv(reflect.ValueOf(&cfg).Elem(), "", lookup); err != nil {
		err.File = file
		err.Line = lineOfKey(&root, err.Key)
		return nil, err
	}
	cfg.Store.pathSet = lineOfKey(&root, "store.path") != 0
	if err := cfg.Validate(); err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			ce.File = file
			if ce.Line == 0 {
				ce.Line = lineOfKey(&root, ce.Key)
			}
		}
		return nil, err
	}
	return &cfg, nil
}

// yamlError turns a yaml.v3 error into a one-line ConfigError.
func yamlError(file string, root *yaml.Node, err error) error {
	var de *durationError
	if errors.As(err, &de) {
		return &ConfigError{File: file, Line: de.line, Key: keyAtLine(root, de.line), Msg: fmt.Sprintf("bad duration %q: %s", de.value, de.msg)}
	}
	msg := err.Error()
	if m := yamlFieldErr.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		key := keyAtLine(root, line)
		return &ConfigError{File: file, Line: line, Key: key, Msg: fmt.Sprintf("unknown key %q", m[2])}
	}
	msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n")
	msg = strings.TrimSpace(strings.SplitN(msg, "\n", 2)[0])
	msg = strings.TrimPrefix(msg, "yaml: ")
	if m := yamlLineErr.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		inner := m[2]
		inner = strings.Replace(inner, "cannot unmarshal !!", "wrong type: got a YAML ", 1)
		inner = strings.ReplaceAll(inner, "`", "")
		return &ConfigError{File: file, Line: line, Key: keyAtLine(root, line), Msg: inner}
	}
	return &ConfigError{File: file, Msg: msg}
}

// keyAtLine returns the dotted path of the mapping key or value on line.
func keyAtLine(root *yaml.Node, line int) string {
	var best string
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				if k.Line == line {
					best = p
				}
				walk(v, p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				if c.Line == line && c.Kind == yaml.ScalarNode {
					best = p
				}
				walk(c, p)
			}
		}
	}
	walk(root, "")
	return best
}

// lineOfKey returns the line of the dotted key path in root, or 0.
func lineOfKey(root *yaml.Node, key string) int {
	if key == "" {
		return 0
	}
	found := 0
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		if found != 0 {
			return
		}
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := n.Content[i].Value
				if path != "" {
					p = path + "." + p
				}
				if p == key {
					found = n.Content[i].Line
					return
				}
				walk(n.Content[i+1], p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				if p == key {
					found = c.Line
					return
				}
				walk(c, p)
			}
		}
	}
	walk(root, "")
	return found
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandEnv replaces ${VAR} in every string value below v. A reference to
// an unset variable is an error naming the key and the variable; the
// variable's value is never quoted back.
func expandEnv(v reflect.Value, path string, lookup func(string) (string, bool)) *ConfigError {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		return expandEnv(v.Elem(), path, lookup)
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			tag := strings.Split(f.Tag.Get("yaml"), ",")
			name := tag[0]
			p := name
			switch {
			case name == "" && slices.Contains(tag[1:], "inline"):
				p = path
			case name == "":
				continue
			case path != "":
				p = path + "." + name
			}
			if err := expandEnv(v.Field(i), p, lookup); err != nil {
				return err
			}
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			if err := expandEnv(v.Index(i), fmt.Sprintf("%s[%d]", path, i), lookup); err != nil {
				return err
			}
		}
	case reflect.String:
		s := v.String()
		if !strings.Contains(s, "${") {
			return nil
		}
		var missing string
		out := envRef.ReplaceAllStringFunc(s, func(ref string) string {
			name := ref[2 : len(ref)-1]
			val, ok := lookup(name)
			if !ok && missing == "" {
				missing = name
			}
			return val
		})
		if missing != "" {
			return &ConfigError{Key: path, Msg: fmt.Sprintf("environment variable %s is not set", missing)}
		}
		v.SetString(out)
	}
	return nil
}

// Location returns the API's time zone; valid after Validate.
func (c *Config) Location() *time.Location { return c.loc }

// Validate checks every value and fills derived ones. Its errors are
// *ConfigError values naming the key.
func (c *Config) Validate() error {
	if c.Log.Format == "" {
		c.Log.Format = "auto"
	}
	bad := func(key, format string, args ...any) error {
		return &ConfigError{File: c.path, Key: key, Msg: fmt.Sprintf(format, args...)}
	}
	u := c.Upstream
	if err := checkURL(u.BaseURL, "http", "https"); err != nil {
		return bad("upstream.base_url", "%v", err)
	}
	if strings.TrimSpace(u.Token) == "" {
		return bad("upstream.token", "required: the API's bearer token (write token: \"${INCS_TOKEN}\" to read it from the environment)")
	}
	loc, err := time.LoadLocation(u.Timezone)
	if err != nil || u.Timezone == "" {
		return bad("upstream.timezone", "unknown time zone %q (want an IANA name such as Asia/Shanghai)", u.Timezone)
	}
	c.loc = loc
	if u.PageSize < 1 || u.PageSize > 100 {
		return bad("upstream.page_size", "must be 1 to 100, got %d", u.PageSize)
	}
	if u.RateLimit <= 0 {
		return bad("upstream.rate_limit", "must be above 0 requests per second, got %v", u.RateLimit)
	}
	if u.Timeout <= 0 {
		return bad("upstream.timeout", "must be above 0")
	}
	p := c.Poll
	if p.Interval.D() < 100*time.Millisecond {
		return bad("poll.interval", "must be at least 100ms, got %s", p.Interval.D())
	}
	if p.Lookback.D() < time.Minute {
		return bad("poll.lookback", "must be at least 1m, got %s", p.Lookback.D())
	}
	if p.Initial != "snapshot" && p.Initial != "replay" {
		return bad("poll.initial", "must be snapshot or replay, got %q", p.Initial)
	}
	if p.Strategy != "tiered" && p.Strategy != "full" {
		return bad("poll.strategy", "must be tiered or full, got %q", p.Strategy)
	}
	if p.OpenSweep != 0 && p.OpenSweep.D() < p.Interval.D() {
		return bad("poll.open_sweep", "must be at least poll.interval (%s), got %s", p.Interval.D(), p.OpenSweep.D())
	}
	if p.FullSweep.D() < p.Interval.D() {
		return bad("poll.full_sweep", "must be at least poll.interval (%s), got %s", p.Interval.D(), p.FullSweep.D())
	}
	if p.Budget < 0 {
		return bad("poll.budget", "must be above 0 requests per interval, got %d", p.Budget)
	}
	if most := u.RateLimit * p.Interval.D().Seconds(); float64(p.Budget) > most+1e-9 {
		return bad("poll.budget", "%d requests per interval is more than upstream.rate_limit × poll.interval allows (%v/s × %s = %.0f)",
			p.Budget, u.RateLimit, p.Interval.D(), most)
	}
	if err := c.validateStore(bad); err != nil {
		return err
	}
	if c.Admin.Addr != "" {
		host, _, err := net.SplitHostPort(c.Admin.Addr)
		if err != nil {
			return bad("admin.addr", "want host:port, got %q", c.Admin.Addr)
		}
		if !isLoopback(host) && c.Admin.Token == "" {
			return bad("admin.token", "required when admin.addr is not a loopback address (%s)", c.Admin.Addr)
		}
	}
	if err := c.Admin.validate(bad); err != nil {
		return err
	}
	switch c.Log.Level {
	case "", "trace", "debug", "info", "warn", "error":
	default:
		return bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "", "auto", "json", "console":
	default:
		return bad("log.format", "must be auto, json or console, got %q", c.Log.Format)
	}
	if err := c.validateRules(bad); err != nil {
		return err
	}
	names := map[string]bool{}
	for i := range c.Sinks {
		s := &c.Sinks[i]
		key := fmt.Sprintf("sinks[%d]", i)
		if err := s.validate(key, c.knownEventType, bad); err != nil {
			return err
		}
		if err := c.validateNATSOptions(key, s, bad); err != nil {
			return err
		}
		if names[s.Name] {
			return bad(key+".name", "duplicate sink name %q: sink names are unique", s.Name)
		}
		names[s.Name] = true
	}
	return nil
}

// adminHostName is a host name admin.hosts may list: DNS labels (with
// '_', as container names have), no port, no wildcard.
var adminHostName = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*$`)

func (a *AdminConfig) validate(bad func(key, format string, args ...any) error) error {
	for i, h := range a.Hosts {
		key := fmt.Sprintf("admin.hosts[%d]", i)
		switch {
		case strings.Contains(h, "*"):
			return bad(key, "%q: no wildcards; list each host name", h)
		case strings.Contains(h, "/"):
			return bad(key, "%q: a host name, not a URL", h)
		case strings.Contains(h, ":") && net.ParseIP(h) == nil:
			return bad(key, "%q: list the name without a port (any port is accepted)", h)
		case net.ParseIP(h) != nil:
			return bad(key, "%q: IP addresses are always accepted; list host names only", h)
		case !adminHostName.MatchString(h):
			return bad(key, "%q is not a host name such as relay.internal", h)
		}
	}
	for i, f := range a.Redact {
		if strings.TrimSpace(f) == "" {
			return bad(fmt.Sprintf("admin.redact[%d]", i), "empty field name")
		}
	}
	return nil
}

var sinkName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

func (s *SinkConfig) validate(key string, known func(eventType string) bool, bad func(key, format string, args ...any) error) error {
	if s.Name == "" {
		return bad(key+".name", "required")
	}
	if !sinkName.MatchString(s.Name) {
		return bad(key+".name", "%q: use letters, digits, '.', '_' and '-'", s.Name)
	}
	for j, e := range s.Events {
		if !known(e) {
			return bad(fmt.Sprintf("%s.events[%d]", key, j), "unknown event type %q (want one of %s, or a type a rule emits)", e, strings.Join(diff.Types, ", "))
		}
	}
	// keys that only apply to some types
	only := func(field string, set bool, types ...string) error {
		if !set {
			return nil
		}
		for _, t := range types {
			if s.Type == t {
				return nil
			}
		}
		return bad(key+"."+field, "not a setting of a %s sink (only %s)", s.Type, strings.Join(types, ", "))
	}
	chat := []string{SinkSlack, SinkFeishu}
	for _, c := range []struct {
		f     string
		set   bool
		types []string
	}{
		{"subject", s.Subject != "", []string{SinkNATS}},
		{"jetstream", s.JetStream, []string{SinkNATS}},
		{"stream", s.Stream != nil, []string{SinkNATS}},
		{"secrets", len(s.Secrets) > 0, []string{SinkWebhook}},
		{"format", s.Format != "", []string{SinkWebhook}},
		{"secret", s.Secret != "", []string{SinkWebhook, SinkFeishu}},
		{"locale", s.Locale != "", chat},
		{"link", s.Link != "", chat},
		{"template", s.Template != "", chat},
		{"burst", s.Burst != 0, chat},
		{"rate_limit", s.RateLimit != 0, chat},

		{"deny_networks", len(s.DenyNetworks) > 0, []string{SinkWebhook, SinkSlack, SinkFeishu}},
		{"allow_networks", len(s.AllowNetworks) > 0, []string{SinkWebhook, SinkSlack, SinkFeishu}},
	} {
		if err := only(c.f, c.set, c.types...); err != nil {
			return err
		}
	}
	if s.MaxInFlight < 0 || s.MaxInFlight > 4096 {
		return bad(key+".max_in_flight", "must be 1 to 4096, got %d", s.MaxInFlight)
	}
	for j, st := range s.Statuses {
		if st < 0 || st > 3 {
			return bad(fmt.Sprintf("%s.statuses[%d]", key, j), "%d is not a task status (0 not started, 1 in progress, 2 completed, 3 terminated)", st)
		}
	}
	if s.RateLimit < 0 {
		return bad(key+".rate_limit", "must not be negative")
	}
	if r := s.Retry; r != nil {
		if r.Initial > 0 && r.Max > 0 && r.Max < r.Initial {
			return bad(key+".retry.max", "must be at least retry.initial (%s)", r.Initial.D())
		}
	}
	for j, n := range append(append([]string(nil), s.DenyNetworks...), s.AllowNetworks...) {
		if _, _, err := net.ParseCIDR(n); err != nil {
			field := "deny_networks"
			idx := j
			if j >= len(s.DenyNetworks) {
				field, idx = "allow_networks", j-len(s.DenyNetworks)
			}
			return bad(fmt.Sprintf("%s.%s[%d]", key, field, idx), "%q is not a CIDR network such as 10.0.0.0/8", n)
		}
	}
	switch s.Type {
	case SinkNATS:
		if s.URL == "" {
			return bad(key+".url", "required: a nats:// URL or \"embedded\"")
		}
		if s.URL != "embedded" {
			for _, u := range strings.Split(s.URL, ",") {
				if err := checkURL(strings.TrimSpace(u), "nats", "tls", "ws", "wss"); err != nil {
					return bad(key+".url", "%v", err)
				}
			}
		}
		if s.Subject == "" {
			s.Subject = "incs.tasks.{task_id}.{event}"
		}
		if err := checkSubject(s.Subject); err != nil {
			return bad(key+".subject", "%v", err)
		}
		if s.Stream != nil && s.Stream.Name == "" {
			return bad(key+".stream.name", "required when stream is set")
		}
	case SinkWebhook:
		if err := checkURL(s.URL, "http", "https"); err != nil {
			return bad(key+".url", "%v", err)
		}
		secrets := s.AllSecrets()
		if len(secrets) == 0 {
			return bad(key+".secret", "required: a Standard Webhooks secret \"whsec_<base64>\" (or secrets: [new, old])")
		}
		if s.Secret != "" && len(s.Secrets) > 0 {
			return bad(key+".secrets", "set secret or secrets, not both")
		}
		for j, sec := range secrets {
			k := key + ".secret"
			if len(s.Secrets) > 0 {
				k = fmt.Sprintf("%s.secrets[%d]", key, j)
			}
			if strings.TrimSpace(sec) == "" {
				return bad(k, "empty secret")
			}
			if err := checkWebhookSecret(sec); err != nil {
				return bad(k, "%v", err)
			}
		}
		if s.Format == "" {
			s.Format = sink.WebhookJSON
		}
		if !slices.Contains(sink.WebhookFormats, s.Format) {
			return bad(key+".format", "unknown format %q (want %s)", s.Format, strings.Join(sink.WebhookFormats, ", "))
		}
	case SinkSlack, SinkFeishu:
		if err := checkURL(s.URL, "http", "https"); err != nil {
			return bad(key+".url", "%v", err)
		}
		switch s.Locale {
		case "", "zh", "en":
		default:
			return bad(key+".locale", "must be zh or en, got %q", s.Locale)
		}
	case "":
		return bad(key+".type", "required: nats, webhook, slack or feishu")
	default:
		return bad(key+".type", "unknown sink type %q (want nats, webhook, slack or feishu)", s.Type)
	}
	return nil
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

func knownType(t string) bool {
	for _, k := range diff.Types {
		if k == t {
			return true
		}
	}
	return false
}

// checkURL checks u is an absolute URL with one of the schemes. Its error
// never repeats the URL's query or user info, which may hold a secret.
func checkURL(u string, schemes ...string) error {
	if strings.TrimSpace(u) == "" {
		return errors.New("required")
	}
	p, err := url.Parse(u)
	if err != nil {
		return errors.New("not a valid URL")
	}
	for _, s := range schemes {
		if p.Scheme == s {
			if p.Host == "" {
				return fmt.Errorf("URL has no host")
			}
			return nil
		}
	}
	return fmt.Errorf("URL scheme %q not supported (want %s)", p.Scheme, strings.Join(schemes, " or "))
}

var subjectVar = regexp.MustCompile(`\{([^}]*)\}`)

func checkSubject(s string) error {
	for _, m := range subjectVar.FindAllStringSubmatch(s, -1) {
		switch m[1] {
		case "task_id", "event", "type":
		default:
			return fmt.Errorf("unknown placeholder {%s} (want {task_id}, {event} or {type})", m[1])
		}
	}
	if strings.ContainsAny(s, " \t\r\n") || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return fmt.Errorf("%q is not a valid NATS subject", s)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
