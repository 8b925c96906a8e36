package config

// Reloading: what differs between the config a relay runs and the one it
// rereads, sorted by what the runtime does with it, and the keys that
// cannot change while it runs.

import (
	"fmt"
	"reflect"
	"strings"
)

// Changes is what a reload would change: Compare's answer. It names sinks
// and keys, never values.
type Changes struct {
	// SinksAdded are the sinks only the new config has, in its order.
	SinksAdded []string
	// SinksRemoved are the sinks only the old config has, in its order.
	SinksRemoved []string
	// SinksChanged are the sinks of both whose keys differ, in the new
	// config's order; ChangedKeys names the keys.
	SinksChanged []string
	// SinksSame are the sinks of both that are the same, in the new
	// config's order (a sink moved in the list is the same).
	SinksSame []string
	// ChangedKeys are, per changed sink, the keys that differ, as the
	// YAML writes them ("url", "secret", "secrets", "retry").
	ChangedKeys map[string][]string
	// Poll: what polling reads differs: upstream's token, page_size,
	// rate_limit or timeout, a poll key, the rules or the calendars.
	Poll bool
	// LogLevel: log.level differs.
	LogLevel bool
	// AdminToken: admin.token differs.
	AdminToken bool
	// Admin: admin.hosts or admin.redact differs.
	Admin bool
}

// restartKeys are the keys that cannot change while a relay runs, besides
// every key of the store section.
var restartKeys = []struct {
	key     string
	differs func(a, b *Config) bool
}{
	{"admin.addr", func(a, b *Config) bool { return a.Admin.Addr != b.Admin.Addr }},
	{"upstream.base_url", func(a, b *Config) bool { return a.Upstream.BaseURL != b.Upstream.BaseURL }},
	{"upstream.timezone", func(a, b *Config) bool { return a.Upstream.Timezone != b.Upstream.Timezone }},
	{"log.format", func(a, b *Config) bool { return a.Log.Format != b.Log.Format }},
}

// Compare tells what changes from old, the config a relay runs, to new,
// the one it reread; both as Parse or ReadFile returned them (validated).
// Sinks are matched by name: a renamed sink is one removed and one added.
// When a key that cannot change while the relay runs differs (any store
// key, admin.addr, upstream.base_url, upstream.timezone, log.format), the
// error is an *Error naming each such key (with its line in new's file
// when the file has it) and new's file, and none of new applies.
func Compare(old, new *Config) (Changes, error) {
	var fixed []string
	for _, k := range diffKeys(reflect.ValueOf(old.Store), reflect.ValueOf(new.Store)) {
		fixed = append(fixed, "store."+k)
	}
	for _, k := range restartKeys {
		if k.differs(old, new) {
			fixed = append(fixed, k.key)
		}
	}
	if len(fixed) > 0 {
		return Changes{}, new.restartError(fixed)
	}

	var ch Changes
	before := make(map[string]*SinkConfig, len(old.Sinks))
	for i := range old.Sinks {
		before[old.Sinks[i].Name] = &old.Sinks[i]
	}
	after := make(map[string]bool, len(new.Sinks))
	for i := range new.Sinks {
		s := &new.Sinks[i]
		after[s.Name] = true
		o, ok := before[s.Name]
		switch {
		case !ok:
			ch.SinksAdded = append(ch.SinksAdded, s.Name)
		case reflect.DeepEqual(*o, *s):
			ch.SinksSame = append(ch.SinksSame, s.Name)
		default:
			ch.SinksChanged = append(ch.SinksChanged, s.Name)
			if ch.ChangedKeys == nil {
				ch.ChangedKeys = map[string][]string{}
			}
			ch.ChangedKeys[s.Name] = diffKeys(reflect.ValueOf(*o), reflect.ValueOf(*s))
		}
	}
	for _, s := range old.Sinks {
		if !after[s.Name] {
			ch.SinksRemoved = append(ch.SinksRemoved, s.Name)
		}
	}

	ou, nu := old.Upstream, new.Upstream
	ch.Poll = ou.Token != nu.Token || ou.PageSize != nu.PageSize || ou.RateLimit != nu.RateLimit || ou.Timeout != nu.Timeout ||
		!reflect.DeepEqual(old.Poll, new.Poll) || !reflect.DeepEqual(old.Rules, new.Rules) ||
		!reflect.DeepEqual(old.Calendars, new.Calendars)
	ch.LogLevel = old.Log.Level != new.Log.Level
	ch.AdminToken = old.Admin.Token != new.Admin.Token
	ch.Admin = !reflect.DeepEqual(old.Admin.Hosts, new.Admin.Hosts) || !reflect.DeepEqual(old.Admin.Redact, new.Admin.Redact)
	return ch, nil
}

// restartError is Compare's error: the keys that cannot change while the
// relay runs, each with its line in c's file when it has one.
func (c *Config) restartError(keys []string) *Error {
	const msg = "cannot change while incs-relay runs: restart it to apply (nothing of this file was applied)"
	line := func(k string) int {
		if c.root == nil {
			return 0
		}
		return lineOfKey(c.root, k)
	}
	// store.url and its options, when the file leaves them out, are the
	// first NATS sink's (validateStore): say so, or the key is a riddle.
	inherited := func(k string) bool {
		switch k {
		case "store.url", "store.creds", "store.nkey", "store.tls":
			return c.JetStream() && line(k) == 0
		}
		return false
	}
	if len(keys) == 1 && !inherited(keys[0]) {
		return &Error{File: c.path, Key: keys[0], Line: line(keys[0]), Msg: msg}
	}
	named := make([]string, len(keys))
	for i, k := range keys {
		named[i] = k
		switch l := line(k); {
		case l > 0:
			named[i] = fmt.Sprintf("%s (line %d)", k, l)
		case inherited(k):
			named[i] = k + " (the first NATS sink's, as the file sets none)"
		}
	}
	return &Error{File: c.path, Key: strings.Join(named, ", "), Msg: msg}
}

// Empty reports whether nothing changes: no sink added, removed or
// changed, and no other category.
func (c Changes) Empty() bool {
	return len(c.SinksAdded)+len(c.SinksRemoved)+len(c.SinksChanged) == 0 &&
		!c.Poll && !c.LogLevel && !c.AdminToken && !c.Admin
}

// Summary is one line for people and logs, naming sinks and keys but
// never a value: "sinks: +slack-ops, ~hook (url, secret), -old; poll; log
// level; admin token; admin", or "no changes".
func (c Changes) Summary() string {
	if c.Empty() {
		return "no changes"
	}
	var parts []string
	var sinks []string
	for _, n := range c.SinksAdded {
		sinks = append(sinks, "+"+n)
	}
	for _, n := range c.SinksChanged {
		s := "~" + n
		if keys := c.ChangedKeys[n]; len(keys) > 0 {
			s += " (" + strings.Join(keys, ", ") + ")"
		}
		sinks = append(sinks, s)
	}
	for _, n := range c.SinksRemoved {
		sinks = append(sinks, "-"+n)
	}
	if len(sinks) > 0 {
		parts = append(parts, "sinks: "+strings.Join(sinks, ", "))
	}
	for _, p := range []struct {
		on   bool
		name string
	}{{c.Poll, "poll"}, {c.LogLevel, "log level"}, {c.AdminToken, "admin token"}, {c.Admin, "admin hosts or redact"}} {
		if p.on {
			parts = append(parts, p.name)
		}
	}
	return strings.Join(parts, "; ")
}

// diffKeys returns the YAML keys of the struct values a and b (of one
// type) whose values differ, in the struct's order; the keys of an inline
// struct count as its parent's, a nested section ("retry", "tls") is one
// key.
func diffKeys(a, b reflect.Value) []string {
	var keys []string
	for _, f := range yamlFields(a.Type()) {
		switch fa, fb := a.Field(f.index), b.Field(f.index); {
		case f.inline:
			keys = append(keys, diffKeys(fa, fb)...)
		case !reflect.DeepEqual(fa.Interface(), fb.Interface()):
			keys = append(keys, f.name)
		}
	}
	return keys
}
