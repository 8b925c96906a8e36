package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/incs-relay/incs-relay/store"
)

// cliConfig returns a valid config (with ${INCS_TOKEN}) for a store at
// dbPath, whose admin address nothing listens on; extra is appended to
// its one sink (more keys, or more sinks).
func cliConfig(dbPath, extra string) string {
	return fmt.Sprintf(`upstream:
  base_url: "http://127.0.0.1:1"
  token: "${INCS_TOKEN}"
poll:
  interval: 1s
store:
  path: %q
admin:
  addr: %q
sinks:
  - name: hooks
    type: webhook
    url: "http://127.0.0.1:1/incs"
    secret: %q
%s`, dbPath, "127.0.0.1:1", e2eSecret, extra)
}

// TestCLI_ExitCodes runs commands through Main.Run: bad input exits 2 with
// one line naming the file, the key and the problem; success exits 0.
func TestCLI_ExitCodes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		writeFileT(t, p, content)
		return p
	}
	db := filepath.Join(dir, "relay.db")
	good := write("good.yaml", cliConfig(db, ""))
	unknownKey := write("unknown.yaml", cliConfig(db, "    retries: 3\n"))
	badDuration := write("duration.yaml", strings.Replace(cliConfig(db, ""), "interval: 1s", "interval: 10", 1))
	noToken := write("notoken.yaml", cliConfig(db, ""))
	badSink := write("badsink.yaml", cliConfig(db, "  - name: hooks\n    type: webhook\n    url: \"http://x/\"\n    secret: "+e2eSecret+"\n"))
	badSecret := write("badsecret.yaml", strings.Replace(cliConfig(db, ""), e2eSecret, "not-a-secret", 1))
	notYAML := write("broken.yaml", "upstream: [\n")
	env := map[string]string{"INCS_TOKEN": "tok"}

	tests := []struct {
		name   string
		args   []string
		env    map[string]string
		code   int
		stdout string // substring of stdout
		stderr []string
		// oneLine: a config error, reported on one line
		oneLine bool
	}{
		{name: "no command", args: nil, code: exitBadInput, stderr: []string{"Usage:"}},
		{name: "unknown command", args: []string{"frobnicate"}, code: exitBadInput, stderr: []string{`unknown command "frobnicate"`}},
		{name: "help", args: []string{"help"}, code: exitOK},
		{name: "version", args: []string{"version"}, code: exitOK, stdout: "incs-relay"},
		{name: "check-config ok", args: []string{"check-config", "--config", good}, env: env, code: exitOK, stdout: good + ": ok (1 sinks"},
		{name: "check-config prints the budget", args: []string{"check-config", "--config", good}, env: env, code: exitOK, stdout: "every 1s, budget 4 requests per interval)"},
		{name: "check-config without --config", args: []string{"check-config"}, code: exitBadInput, stderr: []string{"--config FILE is required"}},
		{name: "unknown flag", args: []string{"check-config", "--konfig", good}, code: exitBadInput, stderr: []string{"-konfig"}},
		{name: "bench --scale-tasks alone", args: []string{"bench", "--scale-tasks", "5"}, code: exitBadInput, stderr: []string{"--scale-tasks needs --scale"}},
		{name: "sim --edits out of range", args: []string{"sim", "--edits", "0.9"}, code: exitBadInput, stderr: []string{"--edits", "0 to 0.3"}},
		{name: "sim --deletions negative", args: []string{"sim", "--deletions", "-1"}, code: exitBadInput, stderr: []string{"--deletions"}},
		{name: "bench --scale not numbers", args: []string{"bench", "--scale", "100k"}, code: exitBadInput, stderr: []string{"--scale"}},
		{name: "bench --scale with a bad --store", args: []string{"bench", "--scale", "1000", "--store", "sqlite"}, code: exitBadInput, stderr: []string{`--store: "sqlite": want bbolt or jetstream`}},
		{name: "bench --scale with --limits", args: []string{"bench", "--scale", "1000", "--limits=false"}, code: exitBadInput, stderr: []string{"--limits does not apply"}},
		{name: "unreadable file", args: []string{"check-config", "--config", filepath.Join(dir, "missing.yaml")}, code: exitBadInput,
			stderr: []string{"missing.yaml", "cannot read"}, oneLine: true},
		{name: "unknown key", args: []string{"check-config", "--config", unknownKey}, env: env, code: exitBadInput,
			stderr: []string{unknownKey + ":", "sinks[0]", `unknown key "retries"`}, oneLine: true},
		{name: "bad duration", args: []string{"check-config", "--config", badDuration}, env: env, code: exitBadInput,
			stderr: []string{badDuration + ":5:", "poll.interval", "bad duration"}, oneLine: true},
		{name: "missing secret in the environment", args: []string{"check-config", "--config", noToken}, code: exitBadInput,
			stderr: []string{noToken + ":", "upstream.token", "INCS_TOKEN is not set"}, oneLine: true},
		{name: "duplicate sink", args: []string{"check-config", "--config", badSink}, env: env, code: exitBadInput,
			stderr: []string{"sinks[1].name", "duplicate sink name"}, oneLine: true},
		{name: "bad webhook secret", args: []string{"check-config", "--config", badSecret}, env: env, code: exitBadInput,
			stderr: []string{"sinks[0].secret", "whsec_"}, oneLine: true},
		{name: "not YAML", args: []string{"check-config", "--config", notYAML}, code: exitBadInput, stderr: []string{notYAML}, oneLine: true},
		{name: "run with a bad config", args: []string{"run", "--config", unknownKey}, env: env, code: exitBadInput, stderr: []string{"unknown key"}, oneLine: true},
		{name: "status with a bad config", args: []string{"status", "--config", badDuration}, env: env, code: exitBadInput, stderr: []string{"poll.interval"}, oneLine: true},
		{name: "replay without a sink", args: []string{"replay", "--config", good, "--from", "1"}, env: env, code: exitBadInput, stderr: []string{"--sink NAME is required"}},
		{name: "events with a bad limit", args: []string{"events", "--config", good, "--limit", "0"}, env: env, code: exitBadInput, stderr: []string{"limit"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			m := &Main{Stdout: &out, Stderr: &errb, Getenv: func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }}
			code := m.Run(context.Background(), tc.args)
			assert.Equal(t, tc.code, code, "stderr: %s", errb.String())
			assert.Contains(t, out.String(), tc.stdout)
			for _, s := range tc.stderr {
				assert.Contains(t, errb.String(), s)
			}
			if tc.oneLine {
				assert.Equal(t, 1, strings.Count(errb.String(), "\n"), "a config error is one line: %q", errb.String())
			}
		})
	}
	_, err := os.Stat(db)
	assert.ErrorIs(t, err, os.ErrNotExist, "bad input never creates a store")
}

// TestCLI_StoreTaken starts `run` and `status` on a store another holder
// has open: run exits non-zero within a few seconds saying the store is
// taken; status, finding no admin API there, says so.
func TestCLI_StoreTaken(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "relay.db")
	cfg := filepath.Join(dir, "relay.yaml")
	writeFileT(t, cfg, cliConfig(dbPath, ""))
	db, err := store.Open(dbPath, store.Options{})
	require.NoError(t, err)
	defer db.Close()

	var out, errb bytes.Buffer
	m := &Main{Stdout: &out, Stderr: &errb, Getenv: func(k string) (string, bool) { return "tok", k == "INCS_TOKEN" }}
	start := time.Now()
	code := m.Run(context.Background(), []string{"run", "--config", cfg})
	took := time.Since(start)
	assert.Equal(t, exitFailure, code)
	assert.Less(t, took, 5*time.Second, "exits within a few seconds")
	assert.Contains(t, errb.String(), "store "+dbPath+" is taken: another incs-relay is running on it")

	errb.Reset()
	code = m.Run(context.Background(), []string{"status", "--config", cfg})
	assert.Equal(t, exitFailure, code)
	assert.Contains(t, errb.String(), "is in use by a running relay, and its admin API at 127.0.0.1:1 does not answer")
}

// TestCLI_CorruptStore damages a store file: `run`, `status` and `events`
// exit 1 at once with an error that names the file and says how to
// recover, and leave the file exactly as it was: no crash loop, no fresh
// empty store in its place.
func TestCLI_CorruptStore(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{name: "truncated", damage: func(t *testing.T, path string) {
			// Half of the pages in use: the file itself grows ahead of them.
			bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
			require.NoError(t, err)
			var used int64
			require.NoError(t, bdb.View(func(tx *bolt.Tx) error {
				used = tx.Size()
				return nil
			}))
			require.NoError(t, bdb.Close())
			require.NoError(t, os.Truncate(path, used/2))
		}},
		{name: "meta pages overwritten", damage: func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			require.NoError(t, err)
			_, err = f.WriteAt(bytes.Repeat([]byte{0xFF}, 32<<10), 0)
			require.NoError(t, err)
			require.NoError(t, f.Close())
		}},
		{name: "empty", damage: func(t *testing.T, path string) {
			require.NoError(t, os.Truncate(path, 0))
		}},
		{name: "not a store", damage: func(t *testing.T, path string) {
			require.NoError(t, os.WriteFile(path, bytes.Repeat([]byte("hello\n"), 5000), 0o600))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			dbPath := filepath.Join(dir, "relay.db")
			cfg := filepath.Join(dir, "relay.yaml")
			writeFileT(t, cfg, cliConfig(dbPath, ""))
			db, err := store.Open(dbPath, store.Options{NoSync: true})
			require.NoError(t, err)
			for i := range 5 {
				_, err := db.Ingest(context.Background(), syntheticTasks(t, int64(1+i*100), 100, 4), benchLocation, true)
				require.NoError(t, err)
			}
			require.NoError(t, db.Close())
			tc.damage(t, dbPath)
			before, err := os.ReadFile(dbPath)
			require.NoError(t, err)

			for _, args := range [][]string{{"run"}, {"status"}, {"events"}, {"replay", "--sink", "hooks", "--from", "1"}} {
				var out, errb bytes.Buffer
				m := &Main{Stdout: &out, Stderr: &errb, Getenv: func(k string) (string, bool) { return "tok", k == "INCS_TOKEN" }}
				start := time.Now()
				code := m.Run(context.Background(), append(args, "--config", cfg))
				assert.Equal(t, exitFailure, code, "%s: %s", args[0], errb.String())
				assert.Less(t, time.Since(start), 5*time.Second)
				assert.Contains(t, errb.String(), dbPath, args[0])
				assert.Contains(t, errb.String(), "store file is corrupt", args[0])
				assert.Contains(t, errb.String(), "move the file aside and restart with poll.initial: snapshot, or restore a backup", args[0])
			}
			after, err := os.ReadFile(dbPath)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(before, after), "the damaged file is left exactly as it was")
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			assert.ElementsMatch(t, []string{"relay.db", "relay.yaml"}, names, "nothing created beside it")
		})
	}
}
