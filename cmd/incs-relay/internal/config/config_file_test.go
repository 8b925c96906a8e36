package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config/configtest"
)

// TestSinkStart: start takes now (the default), earliest or an offset ≥
// 1, written as a string or a YAML int; anything else is an error on its
// line and key.
func TestSinkStart(t *testing.T) {
	sinkYAML := func(start string) string {
		y := "upstream: {token: t}\nsinks:\n  - name: a\n    type: nats\n    url: embedded\n"
		if start != "" {
			y += "    start: " + start + "\n"
		}
		return y
	}
	for _, tc := range []struct {
		start  string
		mode   string
		offset uint64
	}{
		{"", StartNow, 0},
		{"now", StartNow, 0},
		{`""`, StartNow, 0},
		{"earliest", StartEarliest, 0},
		{`"earliest"`, StartEarliest, 0},
		{"1", StartOffset, 1},
		{"12345", StartOffset, 12345},
		{`"42"`, StartOffset, 42},
		{"007", StartOffset, 7},
		{"18446744073709551615", StartOffset, 18446744073709551615},
	} {
		cfg, err := Parse("relay.yaml", []byte(sinkYAML(tc.start)), configtest.Env())
		require.NoError(t, err, tc.start)
		mode, off := cfg.Sinks[0].StartAt()
		assert.Equal(t, tc.mode, mode, tc.start)
		assert.Equal(t, tc.offset, off, tc.start)
	}
	for _, bad := range []string{"0", "-1", "1.5", "later", "Earliest", "+3", "0x10", "true", `" 5"`, "18446744073709551616"} {
		_, err := Parse("relay.yaml", []byte(sinkYAML(bad)), configtest.Env())
		require.Error(t, err, bad)
		var ce *Error
		require.ErrorAs(t, err, &ce)
		assert.Contains(t, err.Error(), "relay.yaml:6: sinks[0].start: want now, earliest or an offset ≥ 1", bad)
	}
	_, err := Parse("relay.yaml", []byte(sinkYAML("[1]")), configtest.Env())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "relay.yaml:6: sinks[0].start")
	assert.Contains(t, err.Error(), "wrong type")

	// every sink type takes it; the zero value (a sink built in code) is now
	y := "upstream: {token: t}\nsinks:\n  - {name: h, type: webhook, url: \"https://x.example/h\", secret: \"" + testSecret + "\", start: earliest}\n  - {name: c, type: slack, url: \"https://hooks.slack.com/services/x\", start: 3}\n"
	cfg, err := Parse("relay.yaml", []byte(y), configtest.Env())
	require.NoError(t, err)
	mode, _ := cfg.Sinks[0].StartAt()
	assert.Equal(t, StartEarliest, mode)
	mode, off := cfg.Sinks[1].StartAt()
	assert.Equal(t, StartOffset, mode)
	assert.EqualValues(t, 3, off)
	mode, _ = SinkConfig{}.StartAt()
	assert.Equal(t, StartNow, mode)
}

// TestFileRefs: ${file:PATH} is a file's content without its trailing
// newlines, beside ${VAR}; a relative path is relative to the config's
// directory; what a file holds is not expanded again.
func TestFileRefs(t *testing.T) {
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets")
	require.NoError(t, os.Mkdir(secrets, 0o700))
	write := func(name, content string) string {
		p := filepath.Join(secrets, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	tok := write("token", "tok-from-file\r\n\n")
	write("hook", testSecret+"\n")
	write("raw", "a${NOPE}b\nline two\n")

	y := "upstream:\n  token: \"${file:" + tok + "}\"\n" +
		"sinks:\n  - name: h\n    type: webhook\n    url: \"https://x.example/${HOOK_PATH}\"\n    secrets: [\"${file:secrets/hook}\", \"${OLD}\"]\n" +
		"  - name: c\n    type: slack\n    url: \"https://hooks.slack.com/services/x\"\n    template: \"${file:./secrets/raw}|${file:" + tok + "}\"\n"
	cfgPath := filepath.Join(dir, "relay.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(y), 0o600))
	cfg, err := ReadFile(cfgPath, configtest.Env("HOOK_PATH", "in", "OLD", testSecret))
	require.NoError(t, err)
	assert.Equal(t, "tok-from-file", cfg.Upstream.Token, "trailing \\r\\n and \\n trimmed")
	assert.Equal(t, []string{testSecret, testSecret}, cfg.Sinks[0].Secrets, "relative to the config's directory, beside ${VAR}")
	assert.Equal(t, "https://x.example/in", cfg.Sinks[0].URL)
	assert.Equal(t, "a${NOPE}b\nline two|tok-from-file", cfg.Sinks[1].Template, "a file's content is not expanded again; inner newlines stay")
	assert.Equal(t, []string{tok, filepath.Join(secrets, "hook"), filepath.Join(secrets, "raw")}, cfg.FileRefs(), "each file once, to watch")

	// Parse without a real file: a relative path is relative to the
	// directory of the name it is given.
	cfg, err = Parse(cfgPath, []byte("upstream: {token: \"${file:secrets/token}\"}\n"), configtest.Env())
	require.NoError(t, err)
	assert.Equal(t, "tok-from-file", cfg.Upstream.Token)
}

// TestFileRefs_Errors: a file that cannot be read is an *Error naming the
// file's path, the line and the key, never what a file holds.
func TestFileRefs_Errors(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	require.NoError(t, os.WriteFile(secret, []byte("hunter2-not-a-whsec\n"), 0o600))
	big := filepath.Join(dir, "big")
	require.NoError(t, os.WriteFile(big, []byte(strings.Repeat("s3cr3t", 200000)), 0o600))
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"missing", "upstream:\n  token: \"${file:" + missing + "}\"\n", []string{"relay.yaml:2: upstream.token: file " + missing + " (${file:}) cannot be read: no such file or directory"}},
		{"relative missing", "upstream: {token: t}\nsinks:\n  - name: h\n    type: webhook\n    url: \"https://x.example/h\"\n    secret: \"${file:nope/secret}\"\n",
			[]string{"relay.yaml:6: sinks[0].secret: file " + filepath.Join(dir, "nope/secret") + " (${file:}) cannot be read"}},
		{"directory", "upstream:\n  token: \"${file:" + dir + "}\"\n", []string{"relay.yaml:2: upstream.token: file " + dir + " (${file:}) cannot be read: is a directory"}},
		{"empty path", "upstream:\n  token: \"${file:}\"\n", []string{"relay.yaml:2: upstream.token: ${file:} names no file"}},
		{"too large", "upstream:\n  token: \"${file:" + big + "}\"\n", []string{"relay.yaml:2: upstream.token: file " + big + " (${file:}) is larger than 1 MiB"}},
		{"content fails validation", "upstream: {token: t}\nsinks:\n  - name: h\n    type: webhook\n    url: \"https://x.example/h\"\n    secret: \"${file:" + secret + "}\"\n",
			[]string{"relay.yaml:6: sinks[0].secret:", "whsec_"}},
		{"in a list", "upstream: {token: t}\nadmin:\n  hosts:\n    - \"${file:" + missing + "}\"\n", []string{"relay.yaml:4: admin.hosts[0]: file " + missing}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "relay.yaml"), []byte(tc.yaml), configtest.Env())
			require.Error(t, err)
			var ce *Error
			require.ErrorAs(t, err, &ce, "exits 2")
			msg := strings.TrimPrefix(err.Error(), dir+string(filepath.Separator))
			assert.NotContains(t, msg, "\n", "one line")
			for _, w := range tc.want {
				assert.Contains(t, msg, w)
			}
			assert.NotContains(t, msg, "hunter2")
			assert.NotContains(t, msg, "s3cr3t")
		})
	}
	if os.Geteuid() != 0 { // root reads any file
		unreadable := filepath.Join(dir, "unreadable")
		require.NoError(t, os.WriteFile(unreadable, []byte("hunter2\n"), 0o000))
		_, err := Parse("relay.yaml", []byte("upstream:\n  token: \"${file:"+unreadable+"}\"\n"), configtest.Env())
		require.Error(t, err)
		assert.Contains(t, err.Error(), "relay.yaml:2: upstream.token: file "+unreadable+" (${file:}) cannot be read: permission denied")
	}
}

// TestDigest: a hash of the file's bytes as read, before expansion, so
// the values of ${VAR} and ${file:} change nothing in it.
func TestDigest(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tok, []byte("one"), 0o600))
	y := "upstream: {token: \"${file:" + tok + "}\", base_url: \"${BASE}\"}\n"
	p := filepath.Join(dir, "relay.yaml")
	require.NoError(t, os.WriteFile(p, []byte(y), 0o600))
	a, err := ReadFile(p, configtest.Env("BASE", "http://a.example"))
	require.NoError(t, err)
	assert.Len(t, a.Digest(), 16)
	require.NoError(t, os.WriteFile(tok, []byte("two"), 0o600))
	b, err := ReadFile(p, configtest.Env("BASE", "http://b.example"))
	require.NoError(t, err)
	assert.Equal(t, a.Digest(), b.Digest(), "the same file: secrets and variables are not in it")
	c, err := Parse("other.yaml", []byte(y), configtest.Env("BASE", "http://c.example"))
	require.NoError(t, err)
	assert.Equal(t, a.Digest(), c.Digest(), "YAML given to Parse: that YAML's")
	d, err := Parse("relay.yaml", []byte(y+"log: {level: debug}\n"), configtest.Env("BASE", "http://a.example"))
	require.NoError(t, err)
	assert.NotEqual(t, a.Digest(), d.Digest())
	cfg := Default()
	assert.Empty(t, cfg.Digest(), "built in code")
}
