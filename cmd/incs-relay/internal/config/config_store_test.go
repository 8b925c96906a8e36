package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config/configtest"
)

// TestParseConfig_JetStreamStore: store.type jetstream takes its
// defaults, and store.url falls back to the NATS sink's URL and options.
func TestParseConfig_JetStreamStore(t *testing.T) {
	cfg, err := Parse("relay.yaml", []byte(configtest.JetStreamYAML), configtest.Env())
	require.NoError(t, err)
	assert.True(t, cfg.JetStream())
	s := cfg.Store
	assert.Equal(t, "nats://n1:4222,nats://n2:4222", s.URL)
	assert.Equal(t, 1, s.Replicas)
	assert.Equal(t, 10*time.Second, s.Lease.D())
	assert.Equal(t, "relay", s.Name)
	assert.Equal(t, 12, s.Partitions)
	assert.Contains(t, cfg.StoreLabel(), `jetstream "relay" on n1:4222,n2:4222`)

	y := "upstream: {token: t}\nstore:\n  type: jetstream\n  replicas: 3\n  lease: 4s\n  name: team-a\nsinks:\n  - {name: bus, type: nats, url: \"nats://u:pw@n1:4222\", nkey: /k.nk}\n"
	cfg, err = Parse("relay.yaml", []byte(y), configtest.Env())
	require.NoError(t, err)
	assert.Equal(t, "nats://u:pw@n1:4222", cfg.Store.URL, "the sink's URL")
	assert.Equal(t, "/k.nk", cfg.Store.NKey, "and its options")
	assert.Equal(t, 3, cfg.Store.Replicas)
	assert.Equal(t, 4*time.Second, cfg.Store.Lease.D())
	assert.NotContains(t, cfg.StoreLabel(), "pw", "credentials in the URL never show")

	cfg, err = Parse("relay.yaml", []byte("upstream: {token: t}\n"), configtest.Env())
	require.NoError(t, err)
	assert.Equal(t, StoreBbolt, cfg.Store.Type, "the default")
	assert.Equal(t, "./data/incs-relay.db", cfg.StoreLabel())

	// ${VAR} reaches the inlined keys too.
	y = "upstream: {token: t}\nstore:\n  type: jetstream\n  url: \"${NATS_URL}\"\n  creds: \"${CREDS}\"\n"
	cfg, err = Parse("relay.yaml", []byte(y), configtest.Env("NATS_URL", "nats://x:4222", "CREDS", "/run/secrets/relay.creds"))
	require.NoError(t, err)
	assert.Equal(t, "incs", cfg.Store.Name, "the default")
	assert.Equal(t, "nats://x:4222", cfg.Store.URL)
	assert.Equal(t, "/run/secrets/relay.creds", cfg.Store.Creds)
}

func TestParseConfig_JetStreamStoreErrors(t *testing.T) {
	js := "upstream: {token: t}\nstore:\n  type: jetstream\n  url: \"nats://n1:4222\"\n"
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"unknown type", "upstream: {token: t}\nstore:\n  type: etcd\n", []string{"relay.yaml:3", "store.type", `bbolt or jetstream, got "etcd"`}},
		{"explicit path", js + "  path: ./data/x.db\n", []string{"relay.yaml:5", "store.path", "not used with store.type: jetstream"}},
		{"no url", "upstream: {token: t}\nstore:\n  type: jetstream\n", []string{"relay.yaml: store.url", "required"}},
		{"no url, embedded sink only", "upstream: {token: t}\nstore: {type: jetstream}\nsinks:\n  - {name: a, type: nats, url: embedded, data_dir: /d}\n", []string{"store.url", "required"}},
		{"bad url", "upstream: {token: t}\nstore:\n  type: jetstream\n  url: \"http://n1:4222\"\n", []string{"relay.yaml:4", "store.url", `scheme "http"`}},
		{"replicas", js + "  replicas: 7\n", []string{"relay.yaml:5", "store.replicas", "1 to 5"}},
		{"lease too short", js + "  lease: 1s\n", []string{"relay.yaml:5", "store.lease", "at least 2s"}},
		{"lease fraction", js + "  lease: 2500ms\n", []string{"store.lease", "whole seconds"}},
		{"lease not a duration", js + "  lease: 10\n", []string{"relay.yaml:5", "store.lease", "bad duration"}},
		{"name", js + "  name: \"a.b\"\n", []string{"relay.yaml:5", "store.name", `"a.b"`}},
		{"partitions", js + "  partitions: 1000\n", []string{"store.partitions", "1 to 256"}},
		{"creds and nkey", js + "  creds: /a\n  nkey: /b\n", []string{"relay.yaml:6", "store.nkey", "not both"}},
		{"tls cert without key", js + "  tls: {cert: /c}\n", []string{"relay.yaml:5", "store.tls", "cert and key go together"}},
		{"tls empty", js + "  tls: {}\n", []string{"store.tls", "set ca"}},
		{"unknown store key", js + "  leader: me\n", []string{"relay.yaml:5", `unknown key "leader"`}},
		{"unknown tls key", js + "  tls: {ca: /a, pem: /b}\n", []string{"relay.yaml:5", `unknown key "pem"`}},
		{"jetstream key in bbolt mode", "upstream: {token: t}\nstore:\n  path: ./x.db\n  lease: 5s\n", []string{"relay.yaml:4", "store.lease", "only with store.type: jetstream"}},
		{"migrate_from in bbolt mode", "upstream: {token: t}\nstore:\n  migrate_from: ./x.db\n", []string{"relay.yaml:3", "store.migrate_from", "only with store.type: jetstream"}},
		{"embedded sink without data_dir", js + "sinks:\n  - {name: a, type: nats, url: embedded}\n", []string{"relay.yaml: sinks[0].data_dir", "required"}},
		{"data_dir without embedded", "upstream: {token: t}\nsinks:\n  - {name: a, type: nats, url: \"nats://x:4222\", data_dir: /d}\n", []string{"sinks[0].data_dir", "only for url: embedded"}},
		{"creds on embedded", "upstream: {token: t}\nsinks:\n  - {name: a, type: nats, url: embedded, creds: /c}\n", []string{"sinks[0].url", "embedded server takes no creds"}},
		{"creds on webhook", "upstream: {token: t}\nsinks:\n  - {name: h, type: webhook, url: \"https://x.example\", secret: \"" + testSecret + "\", creds: /c}\n", []string{"sinks[0].creds", "not a setting of a webhook sink"}},
		{"sink tls cert without key", "upstream: {token: t}\nsinks:\n  - name: a\n    type: nats\n    url: \"tls://x:4222\"\n    tls: {key: /k}\n", []string{"relay.yaml:6", "sinks[0].tls", "cert and key"}},
		{"sink subject under the store's", "upstream: {token: t}\nstore: {type: jetstream}\nsinks:\n  - {name: bus, type: nats, url: \"nats://n1:4222\", subject: \"$INCS.{task_id}.x\"}\n", []string{"sinks[0].subject", `"$INCS.{task_id}.x" overlaps the store's subjects ($INCS.incs.>)`, "store.name"}},
		{"sink stream under the store's", js + "  name: ev\nsinks:\n  - {name: bus, type: nats, url: \"nats://n1:4222\", subject: \"a.{task_id}\", jetstream: true, stream: {name: S, subjects: [\"$INCS.ev.>\"]}}\n", []string{"sinks[0].subject", `"$INCS.ev.>" overlaps`}},
		{"sink stream taking everything", js + "sinks:\n  - {name: bus, type: nats, url: \"nats://n1:4222\", subject: \"a.{task_id}\", jetstream: true, stream: {name: S, subjects: [\">\"]}}\n", []string{"sinks[0].subject", `">" overlaps`}},
		{"unset variable in creds", js + "  creds: \"${NOPE}\"\n", []string{"relay.yaml:5", "store.creds", "NOPE is not set"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("relay.yaml", []byte(tt.yaml), configtest.Env())
			require.Error(t, err)
			var ce *Error
			require.ErrorAs(t, err, &ce, "exits 2")
			msg := err.Error()
			assert.NotContains(t, msg, "\n", "one line")
			for _, w := range tt.want {
				assert.Contains(t, msg, w)
			}
		})
	}
}

// TestConfigHash: replicas agree on what cannot change while a relay
// runs (the store section but each replica's own keys, upstream.base_url
// and upstream.timezone), and on nothing a reload applies.
func TestConfigHash(t *testing.T) {
	parse := func(y string) string {
		cfg, err := Parse("relay.yaml", []byte(y), configtest.Env())
		require.NoError(t, err)
		return cfg.Hash()
	}
	base := parse(configtest.JetStreamYAML)
	assert.Len(t, base, 16)
	for what, y := range map[string]string{
		"own admin section and log": configtest.JetStreamYAML + "admin: {addr: \"0.0.0.0:9999\", token: x, hosts: [a.example]}\nlog: {level: debug, format: json}\n",
		"own node order and credentials file": strings.Replace(configtest.JetStreamYAML, "  url: \"nats://n1:4222,nats://n2:4222\"",
			"  url: \"nats://n2:4222,nats://n1:4222\"\n  creds: /mine.creds\n  cache_mb: 64", 1),
		"poll":                        configtest.JetStreamYAML + "poll: {interval: 3s}\n",
		"another sink":                configtest.JetStreamYAML + "  - {name: x, type: nats, url: \"nats://n1:4222\", subject: \"x.{task_id}\"}\n",
		"a sink's key":                configtest.JetStreamYAML + "    start: earliest\n",
		"upstream's token and limits": strings.Replace(configtest.JetStreamYAML, "  token: t\n", "  token: other\n  page_size: 50\n  rate_limit: 2\n  timeout: 3s\n", 1),
		"rules and calendars":         configtest.JetStreamYAML + "calendars:\n  office: {timezone: UTC, hours: {mon-fri: [\"09:00-17:00\"]}}\nrules:\n  - {name: r, event: task.stalled, since: created, after: 1h, calendar: office}\n",
	} {
		assert.Equal(t, base, parse(y), what)
	}
	for what, y := range map[string]string{
		"store.name":        strings.Replace(configtest.JetStreamYAML, "name: relay", "name: other", 1),
		"store.partitions":  strings.Replace(configtest.JetStreamYAML, "  name: relay\n", "  name: relay\n  partitions: 6\n", 1),
		"upstream.base_url": strings.Replace(configtest.JetStreamYAML, "  token: t\n", "  token: t\n  base_url: \"https://other.example\"\n", 1),
		"upstream.timezone": strings.Replace(configtest.JetStreamYAML, "  token: t\n", "  token: t\n  timezone: UTC\n", 1),
		"store.retention":   strings.Replace(configtest.JetStreamYAML, "  name: relay\n", "  name: relay\n  retention: 24h\n", 1),
		"store.lease":       strings.Replace(configtest.JetStreamYAML, "  name: relay\n", "  name: relay\n  lease: 4s\n", 1),
	} {
		assert.NotEqual(t, base, parse(y), what)
	}
}

// TestNATSOptions_Files: the auth files are read when connecting; an
// unreadable or wrong file is a Error naming the key, never quoting
// the file's content.
func TestNATSOptions_Files(t *testing.T) {
	dir := t.TempDir()
	user, err := nkeys.CreateUser()
	require.NoError(t, err)
	seed, err := user.Seed()
	require.NoError(t, err)
	nk := filepath.Join(dir, "user.nk")
	require.NoError(t, os.WriteFile(nk, seed, 0o600))
	creds := configtest.WriteCreds(t, dir)
	ca, cert, key := configtest.WriteTLS(t, dir)
	junk := filepath.Join(dir, "junk")
	require.NoError(t, os.WriteFile(junk, []byte("SUAJUNKJUNKsecretish\n"), 0o600))

	cfg := &Config{path: "relay.yaml"}
	for _, a := range []NATSAuth{{NKey: nk}, {Creds: creds}, {TLS: &TLSFile{CA: ca}}, {TLS: &TLSFile{CA: ca, Cert: cert, Key: key}}} {
		opts, err := cfg.NATSOptions("store", a)
		require.NoError(t, err, "%+v", a)
		assert.NotEmpty(t, opts)
	}
	for _, tt := range []struct {
		a    NATSAuth
		want []string
	}{
		{NATSAuth{NKey: filepath.Join(dir, "missing")}, []string{"relay.yaml: store.nkey: cannot read", "no such file"}},
		{NATSAuth{NKey: junk}, []string{"store.nkey", "holds no nkey seed"}},
		{NATSAuth{Creds: junk}, []string{"store.creds", "not a NATS credentials file"}},
		{NATSAuth{Creds: filepath.Join(dir, "missing")}, []string{"store.creds", "cannot read"}},
		{NATSAuth{TLS: &TLSFile{CA: junk}}, []string{"store.tls.ca", "no PEM certificate"}},
		{NATSAuth{TLS: &TLSFile{Cert: cert, Key: filepath.Join(dir, "nokey")}}, []string{"store.tls.key", "cannot read"}},
		{NATSAuth{TLS: &TLSFile{Cert: cert, Key: junk}}, []string{"store.tls.cert", "not a PEM certificate and its key"}},
	} {
		_, err := cfg.NATSOptions("store", tt.a)
		require.Error(t, err)
		var ce *Error
		require.ErrorAs(t, err, &ce)
		for _, w := range tt.want {
			assert.Contains(t, err.Error(), w)
		}
		assert.NotContains(t, err.Error(), "secretish")
		assert.NotContains(t, err.Error(), string(seed))
	}
}

// TestSubjectsOverlap: NATS subject patterns, and a sink subject's
// template tokens, against the store's subjects.
func TestSubjectsOverlap(t *testing.T) {
	store := "$INCS.incs.>"
	for subj, want := range map[string]bool{
		"incs.tasks.{task_id}.{event}": false, "incs.>": false, "$INCS": false, "$INCS.*": false, "$INCS.incs": false,
		"$INCS.other.>": false, "a.b.c": false, "*": false, "*.*": false,
		">": true, "*.>": true, "*.*.*": true, "$INCS.>": true, "$INCS.*.x": true, "$INCS.incs.ev.3": true,
		"$INCS.{task_id}.x": true, "{event}.>": true,
	} {
		assert.Equal(t, want, subjectsOverlap(subj, store), subj)
		assert.Equal(t, want, subjectsOverlap(store, subj), "%s, reversed", subj)
	}
	assert.True(t, subjectsOverlap("a.*.c", "a.b.*"))
	assert.False(t, subjectsOverlap("a.b", "a.b.c"))
}
