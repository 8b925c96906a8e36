package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config/configtest"
)

// TestCheckConfig_JetStreamAuthFiles: check-config reads the files the
// config names and exits 2 on one it cannot read.
func TestCheckConfig_JetStreamAuthFiles(t *testing.T) {
	dir := t.TempDir()
	creds := configtest.WriteCreds(t, dir)
	good := filepath.Join(dir, "good.yaml")
	require.NoError(t, os.WriteFile(good, []byte(configtest.JetStreamYAML+"    creds: "+creds+"\n"), 0o600))
	code, out, errOut := runMain("check-config", "--config", good)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, `store jetstream "relay" on n1:4222,n2:4222`)

	missing := filepath.Join(dir, "missing.yaml")
	require.NoError(t, os.WriteFile(missing, []byte(configtest.JetStreamYAML+"    creds: /nonexistent/relay.creds\n"), 0o600))
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
