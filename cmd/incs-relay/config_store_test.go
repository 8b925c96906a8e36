package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const jsConfig = `
upstream:
  token: t
store:
  type: jetstream
  url: "nats://n1:4222,nats://n2:4222"
  name: relay
sinks:
  - name: bus
    type: nats
    url: "nats://n1:4222"
`

// TestParseConfig_JetStreamStore: store.type jetstream takes its
// defaults, and store.url falls back to the NATS sink's URL and options.
func TestParseConfig_JetStreamStore(t *testing.T) {
	cfg, err := ParseConfig("relay.yaml", []byte(jsConfig), env())
	require.NoError(t, err)
	assert.True(t, cfg.JetStream())
	s := cfg.Store
	assert.Equal(t, "nats://n1:4222,nats://n2:4222", s.URL)
	assert.Equal(t, 1, s.Replicas)
	assert.Equal(t, 10*time.Second, s.Lease.D())
	assert.Equal(t, "relay", s.Name)
	assert.Equal(t, 12, s.Partitions)
	assert.Contains(t, cfg.storeLabel(), `jetstream "relay" on n1:4222,n2:4222`)

	y := "upstream: {token: t}\nstore:\n  type: jetstream\n  replicas: 3\n  lease: 4s\n  name: team-a\nsinks:\n  - {name: bus, type: nats, url: \"nats://u:pw@n1:4222\", nkey: /k.nk}\n"
	cfg, err = ParseConfig("relay.yaml", []byte(y), env())
	require.NoError(t, err)
	assert.Equal(t, "nats://u:pw@n1:4222", cfg.Store.URL, "the sink's URL")
	assert.Equal(t, "/k.nk", cfg.Store.NKey, "and its options")
	assert.Equal(t, 3, cfg.Store.Replicas)
	assert.Equal(t, 4*time.Second, cfg.Store.Lease.D())
	assert.NotContains(t, cfg.storeLabel(), "pw", "credentials in the URL never show")

	cfg, err = ParseConfig("relay.yaml", []byte("upstream: {token: t}\n"), env())
	require.NoError(t, err)
	assert.Equal(t, StoreBbolt, cfg.Store.Type, "the default")
	assert.Equal(t, "./data/incs-relay.db", cfg.storeLabel())

	// ${VAR} reaches the inlined keys too.
	y = "upstream: {token: t}\nstore:\n  type: jetstream\n  url: \"${NATS_URL}\"\n  creds: \"${CREDS}\"\n"
	cfg, err = ParseConfig("relay.yaml", []byte(y), env("NATS_URL", "nats://x:4222", "CREDS", "/run/secrets/relay.creds"))
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
			_, err := ParseConfig("relay.yaml", []byte(tt.yaml), env())
			require.Error(t, err)
			var ce *ConfigError
			require.ErrorAs(t, err, &ce, "exits 2")
			msg := err.Error()
			assert.NotContains(t, msg, "\n", "one line")
			for _, w := range tt.want {
				assert.Contains(t, msg, w)
			}
		})
	}
}

// TestConfigHash: replicas agree on everything but their own admin
// address, logging and file paths.
func TestConfigHash(t *testing.T) {
	parse := func(y string) string {
		cfg, err := ParseConfig("relay.yaml", []byte(y), env())
		require.NoError(t, err)
		return cfg.ConfigHash()
	}
	base := parse(jsConfig)
	assert.Len(t, base, 16)
	assert.Equal(t, base, parse(jsConfig+"admin: {addr: \"127.0.0.1:9999\"}\nlog: {level: debug}\n"), "own admin address and log level")
	assert.Equal(t, base, parse(strings.Replace(jsConfig, "  url: \"nats://n1:4222,nats://n2:4222\"", "  url: \"nats://n2:4222,nats://n1:4222\"\n  creds: /mine.creds", 1)), "own node order and credentials file")
	assert.NotEqual(t, base, parse(jsConfig+"poll: {interval: 3s}\n"), "a polling difference")
	assert.NotEqual(t, base, parse(jsConfig+"  - {name: x, type: nats, url: \"nats://n1:4222\", subject: \"x.{task_id}\"}\n"), "another sink")
}

// TestNATSOptions_Files: the auth files are read when connecting; an
// unreadable or wrong file is a ConfigError naming the key, never quoting
// the file's content.
func TestNATSOptions_Files(t *testing.T) {
	dir := t.TempDir()
	user, err := nkeys.CreateUser()
	require.NoError(t, err)
	seed, err := user.Seed()
	require.NoError(t, err)
	nk := filepath.Join(dir, "user.nk")
	require.NoError(t, os.WriteFile(nk, seed, 0o600))
	creds := writeCreds(t, dir)
	ca, cert, key := writeTLS(t, dir)
	junk := filepath.Join(dir, "junk")
	require.NoError(t, os.WriteFile(junk, []byte("SUAJUNKJUNKsecretish\n"), 0o600))

	cfg := &Config{path: "relay.yaml"}
	for _, a := range []NATSAuth{{NKey: nk}, {Creds: creds}, {TLS: &TLSFile{CA: ca}}, {TLS: &TLSFile{CA: ca, Cert: cert, Key: key}}} {
		opts, err := cfg.natsOptions("store", a)
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
		_, err := cfg.natsOptions("store", tt.a)
		require.Error(t, err)
		var ce *ConfigError
		require.ErrorAs(t, err, &ce)
		for _, w := range tt.want {
			assert.Contains(t, err.Error(), w)
		}
		assert.NotContains(t, err.Error(), "secretish")
		assert.NotContains(t, err.Error(), string(seed))
	}
}

// TestCheckConfig_JetStreamAuthFiles: check-config reads the files the
// config names and exits 2 on one it cannot read.
func TestCheckConfig_JetStreamAuthFiles(t *testing.T) {
	dir := t.TempDir()
	creds := writeCreds(t, dir)
	good := filepath.Join(dir, "good.yaml")
	require.NoError(t, os.WriteFile(good, []byte(jsConfig+"    creds: "+creds+"\n"), 0o600))
	code, out, errOut := runMain("check-config", "--config", good)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, `store jetstream "relay" on n1:4222,n2:4222`)

	missing := filepath.Join(dir, "missing.yaml")
	require.NoError(t, os.WriteFile(missing, []byte(jsConfig+"    creds: /nonexistent/relay.creds\n"), 0o600))
	code, _, errOut = runMain("check-config", "--config", missing)
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, missing+": sinks[0].creds: cannot read /nonexistent/relay.creds")
	assert.Equal(t, 1, strings.Count(errOut, "\n"), "one line")
}

// TestCheckConfig_JetStreamDefaults: the store's defaults and a NATS
// sink's on the same cluster never overlap (the store's subjects are
// "$INCS.incs.>", the sink's "incs.tasks.…"): check-config passes.
func TestCheckConfig_JetStreamDefaults(t *testing.T) {
	p := filepath.Join(t.TempDir(), "relay.yaml")
	y := "upstream: {token: t}\nstore: {type: jetstream}\nsinks:\n  - {name: bus, type: nats, url: \"nats://n1:4222\"}\n  - {name: js, type: nats, url: \"nats://n1:4222\", jetstream: true}\n"
	require.NoError(t, os.WriteFile(p, []byte(y), 0o600))
	code, out, errOut := runMain("check-config", "--config", p)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, `store jetstream "incs" on n1:4222`)
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

func writeCreds(t *testing.T, dir string) string {
	t.Helper()
	acc, err := nkeys.CreateAccount()
	require.NoError(t, err)
	user, err := nkeys.CreateUser()
	require.NoError(t, err)
	pub, err := user.PublicKey()
	require.NoError(t, err)
	tok, err := jwt.NewUserClaims(pub).Encode(acc)
	require.NoError(t, err)
	seed, err := user.Seed()
	require.NoError(t, err)
	b, err := jwt.FormatUserConfig(tok, seed)
	require.NoError(t, err)
	p := filepath.Join(dir, "relay.creds")
	require.NoError(t, os.WriteFile(p, b, 0o600))
	return p
}

// writeTLS writes a self-signed CA certificate and a client certificate
// and key signed by it, as PEM files.
func writeTLS(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	return writeCertPair(t, dir, "client", &x509.Certificate{Subject: pkix.Name{CommonName: "relay"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
}

// writeCertPair writes a new CA and a certificate from tmpl signed by it,
// with its key, as PEM files named after prefix.
func writeCertPair(t *testing.T, dir, prefix string, tmpl *x509.Certificate) (ca, cert, key string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	certKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = big.NewInt(2), time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, &certKey.PublicKey, caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(certKey)
	require.NoError(t, err)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, prefix+"-"+name)
		require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", certDER), write("key.pem", "EC PRIVATE KEY", keyDER)
}
