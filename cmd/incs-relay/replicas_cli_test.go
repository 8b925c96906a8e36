package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller/sim"
	"github.com/incs-relay/incs-relay/store"
)

// jsCLIConfig is a jetstream-mode config file's text; extra is appended
// to the store section.
func jsCLIConfig(natsURL, name, extra string) string {
	return fmt.Sprintf(`upstream:
  base_url: "http://127.0.0.1:1"
  token: "${INCS_TOKEN}"
poll:
  interval: 1s
store:
  type: jetstream
  url: %q
  name: %s
  lease: 2s
  partitions: 4
%sadmin:
  addr: "127.0.0.1:1"
sinks:
  - name: hooks
    type: webhook
    url: "http://127.0.0.1:1/incs"
    secret: %q
`, natsURL, name, extra, e2eSecret)
}

// bboltWithEvents writes a bbolt store of 100 tasks with 4 logs each (400
// events) whose hooks sink has delivered through offset 150.
func bboltWithEvents(t *testing.T, path string) []diff.Event {
	t.Helper()
	db, err := store.Open(path, store.Options{NoSync: true})
	require.NoError(t, err)
	defer db.Close()
	for i := range 2 {
		_, err := db.Ingest(context.Background(), syntheticTasks(t, int64(100001+i*50), 50, 4), benchLocation, true)
		require.NoError(t, err)
	}
	require.NoError(t, db.SetCursor("hooks", 150))
	require.NoError(t, db.SetInitialized())
	evs, err := db.Read(context.Background(), 1, 1000)
	require.NoError(t, err)
	require.Len(t, evs, 400)
	return evs
}

// TestJetStreamCLI: migrate, events, status, replay and check-config on a
// jetstream store, with no relay running: they open the store directly.
func TestJetStreamCLI(t *testing.T) {
	ns := runNATS(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "old.db")
	evs := bboltWithEvents(t, src)
	cfg := filepath.Join(dir, "relay.yaml")
	writeFileT(t, cfg, jsCLIConfig(ns.ClientURL(), "cli", ""))
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		m := &Main{Stdout: &out, Stderr: &errb, Getenv: func(k string) (string, bool) { return "tok", k == "INCS_TOKEN" }}
		code := m.Run(context.Background(), append(args, "--config", cfg))
		return code, out.String(), errb.String()
	}

	code, out, errOut := run("check-config")
	require.Equal(t, exitOK, code, errOut)
	assert.Contains(t, out, `store jetstream "cli" on `)

	code, _, errOut = run("migrate")
	assert.Equal(t, exitBadInput, code)
	assert.Contains(t, errOut, "--from BBOLT_FILE or set store.migrate_from")

	code, out, errOut = run("migrate", "--from", src)
	require.Equal(t, exitOK, code, errOut)
	assert.Contains(t, out, "400 events (offsets up to 400)")

	code, _, errOut = run("migrate", "--from", src)
	assert.Equal(t, exitFailure, code)
	assert.Contains(t, errOut, "already holds events")

	// The events are the bbolt store's, byte for byte, at the same offsets.
	code, out, errOut = run("events", "--from", "399", "--limit", "5")
	require.Equal(t, exitOK, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2)
	assert.JSONEq(t, string(evs[398].Body), lines[0])
	assert.JSONEq(t, string(evs[399].Body), lines[1])

	code, out, errOut = run("status", "--json")
	require.Equal(t, exitOK, code, errOut)
	var st struct {
		Sinks   []relay.SinkStatus `json:"sinks"`
		Cluster *relay.ClusterView `json:"cluster"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	require.Len(t, st.Sinks, 1)
	assert.Equal(t, uint64(150), st.Sinks[0].Cursor, "the cursor came over")
	assert.Equal(t, uint64(400), st.Sinks[0].Head)
	require.NotNil(t, st.Cluster)
	assert.Equal(t, 4, st.Cluster.Partitions)

	code, out, errOut = run("status")
	require.Equal(t, exitOK, code, errOut)
	assert.Contains(t, out, `store: jetstream "cli", 4 partitions`)
	// No replica runs: the lease and the members are read from the store.
	assert.Contains(t, out, "leader: none (no replica holds the lease)")
	assert.Contains(t, out, "partitions 0-3 (not live: they move to a live replica)")
	assert.Contains(t, out, "replicas: none live")

	code, out, errOut = run("replay", "--sink", "hooks", "--from", "100")
	require.Equal(t, exitOK, code, errOut)
	assert.Contains(t, out, "hooks rewound: events 100 to 400")
	code, out, _ = run("status", "--json")
	require.Equal(t, exitOK, code)
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	assert.Equal(t, uint64(99), st.Sinks[0].Cursor)

	// A bbolt config cannot migrate; an unreachable cluster is a failure.
	writeFileT(t, cfg, cliConfig(filepath.Join(dir, "x.db"), ""))
	code, _, errOut = run("migrate", "--from", src)
	assert.Equal(t, exitBadInput, code)
	assert.Contains(t, errOut, "store.type")
	writeFileT(t, cfg, jsCLIConfig("nats://127.0.0.1:1", "cli", ""))
	start := time.Now()
	code, _, errOut = run("events")
	assert.Equal(t, exitFailure, code)
	assert.Contains(t, errOut, `store jetstream "cli" on 127.0.0.1:1: connect`)
	assert.Less(t, time.Since(start), 20*time.Second)
	// A migrate_from that does not exist is bad input, naming the key.
	writeFileT(t, cfg, jsCLIConfig(ns.ClientURL(), "cli2", "  migrate_from: "+filepath.Join(dir, "missing.db")+"\n"))
	code, _, errOut = run("migrate")
	assert.Equal(t, exitBadInput, code)
	assert.Contains(t, errOut, "store.migrate_from: cannot read")
}

// TestReplicas_MigrateFrom: the first replica on an empty store carries
// store.migrate_from over before it polls, so offsets go on after the
// bbolt store's instead of restarting at 1.
func TestReplicas_MigrateFrom(t *testing.T) {
	world := sim.New(sim.Options{Token: "tok", Tasks: 20, Seed: 3})
	api := httptest.NewServer(world)
	defer api.Close()
	ns := runNATS(t)
	hooks := newReceived()
	hook := recordingHook(t, hooks, nil)
	src := filepath.Join(t.TempDir(), "old.db")
	bboltWithEvents(t, src)
	cfg := replicaConfig(t, api.URL, ns.ClientURL(), hook.URL)
	cfg.Sinks = cfg.Sinks[1:] // the webhook
	cfg.Store.MigrateFrom = src
	cfg.Poll.Initial = "replay"
	a := startReplica(t, cfg, "replica-a")
	logs := world.Logs()
	require.Eventually(t, func() bool { return hooks.count() >= 250+len(logs) }, 30*time.Second, 50*time.Millisecond,
		"events 151..400 from the bbolt store and one per log of the API (%d)", hooks.count())
	head, err := a.r.Store().Head()
	require.NoError(t, err)
	assert.Equal(t, uint64(400+len(logs)), head)
	a.stop(t)
	for _, l := range logs {
		ev, ok := hooks.events[diff.EventID(l.LogID)]
		if assert.True(t, ok, "log %d", l.LogID) {
			assert.Greater(t, ev.Offset, uint64(400), "offsets go on after the migrated ones")
		}
	}
	for off := uint64(1); off <= 150; off++ {
		for _, ev := range hooks.events {
			require.NotEqual(t, off, ev.Offset, "offset %d was delivered before the migration", off)
		}
	}
}

// TestJetStreamRun_MigrateFromMissing: `run` with a store.migrate_from
// that is not there, on an empty store, exits 2 naming the key.
func TestJetStreamRun_MigrateFromMissing(t *testing.T) {
	ns := runNATS(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "relay.yaml")
	missing := filepath.Join(dir, "old.db")
	writeFileT(t, cfg, strings.Replace(jsCLIConfig(ns.ClientURL(), "mf", "  migrate_from: "+missing+"\n"), `addr: "127.0.0.1:1"`, `addr: "127.0.0.1:0"`, 1))
	var out, errb bytes.Buffer
	m := &Main{Stdout: &out, Stderr: &errb, Getenv: func(k string) (string, bool) { return "tok", k == "INCS_TOKEN" }}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	assert.Equal(t, exitBadInput, m.Run(ctx, []string{"run", "--config", cfg}))
	assert.Contains(t, errb.String(), cfg+": store.migrate_from: cannot read "+missing+": no such file or directory")
}
