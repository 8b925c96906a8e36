package config

// Checking the config's values. A rule that belongs to a package (a NATS
// subject, a chat locale, a status filter, a guard network, the poll
// defaults and limits, a rule's fields) is asked of that package; what is
// left here is the config's own vocabulary.

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/sink"
)

// Error is an invalid configuration: it names the file, the key and
// what is wrong, on one line. Commands exit 2 on it.
type Error struct {
	File string
	Key  string // e.g. "sinks[1].secret"; empty when the file as a whole is wrong
	Line int    // 0 when unknown
	Msg  string
}

// Error returns "file:line: key: problem".
func (e *Error) Error() string {
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

// KeyError returns an *Error naming c's file and the dotted key, for a
// setting found wrong after validation (a sink's template, a missing
// file).
func (c *Config) KeyError(key, msg string) *Error {
	return &Error{File: c.path, Key: key, Msg: msg}
}

// Validate checks every value and fills derived ones. Its errors are
// *Error values naming the key.
func (c *Config) Validate() error {
	if c.Log.Format == "" {
		c.Log.Format = "auto"
	}
	bad := func(key, format string, args ...any) error {
		return &Error{File: c.path, Key: key, Msg: fmt.Sprintf(format, args...)}
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
	if u.PageSize < 1 || u.PageSize > poller.MaxPageSize {
		return bad("upstream.page_size", "must be 1 to %d, got %d", poller.MaxPageSize, u.PageSize)
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
	if most := poller.MaxBudget(u.RateLimit, p.Interval.D()); float64(p.Budget) > most+1e-9 {
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
		if err := s.validate(key, c.KnownEventType, bad); err != nil {
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
		if !set || slices.Contains(types, s.Type) {
			return nil
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
	switch s.Start {
	case "", StartNow:
		s.Start = StartNow
	case StartEarliest:
	default:
		n, ok := parseStartOffset(s.Start)
		if !ok {
			return bad(key+".start", "want now, earliest or an offset ≥ 1, got %q", s.Start)
		}
		s.Start = strconv.FormatUint(n, 10)
	}
	if s.MaxInFlight < 0 || s.MaxInFlight > 4096 {
		return bad(key+".max_in_flight", "must be 1 to 4096, got %d", s.MaxInFlight)
	}
	// owned reports a *sink.FieldError under the sink's key.
	owned := func(err error) error {
		var fe *sink.FieldError
		if errors.As(err, &fe) {
			return bad(key+"."+fe.Field, "%s", fe.Msg)
		}
		return bad(key, "%v", err)
	}
	if err := sink.CheckStatuses(s.Statuses); err != nil {
		return owned(err)
	}
	if r := s.Retry; r != nil {
		if r.Initial > 0 && r.Max > 0 && r.Max < r.Initial {
			return bad(key+".retry.max", "must be at least retry.initial (%s)", r.Initial.D())
		}
	}
	if err := sink.CheckNetworks(s.DenyNetworks, s.AllowNetworks); err != nil {
		return owned(err)
	}
	switch s.Type {
	case SinkNATS:
		if s.URL == "" {
			return bad(key+".url", "required: a nats:// URL or \"embedded\"")
		}
		if s.URL != sink.NATSEmbedded {
			if err := checkNATSURLs(s.URL); err != nil {
				return bad(key+".url", "%v", err)
			}
		}
		if s.Subject == "" {
			s.Subject = sink.DefaultNATSSubject
		}
		if _, err := sink.ParseSubject(s.Subject); err != nil {
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
			if _, err := sink.ParseWebhookSecret(sec); err != nil {
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
		cc := s.ChatConfig(zerolog.Nop())
		cc.RateLimit = rate.Limit(s.RateLimit) // ChatConfig passes only a positive one on
		if err := sink.CheckChatConfig(cc); err != nil {
			return owned(err)
		}
	case "":
		return bad(key+".type", "required: nats, webhook, slack or feishu")
	default:
		return bad(key+".type", "unknown sink type %q (want nats, webhook, slack or feishu)", s.Type)
	}
	return nil
}

// parseStartOffset reads a sink's start offset: decimal digits only, at
// least 1.
func parseStartOffset(v string) (uint64, bool) {
	if v == "" || strings.Trim(v, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	return n, err == nil && n >= 1
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

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
