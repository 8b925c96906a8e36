package bench

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/sink/consume"
)

// TestProcStatus reads this process's figures from /proc, in bytes; a
// process that is not there reads 0.
func TestProcStatus(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc")
	}
	rss := procStatus(os.Getpid(), "VmRSS:")
	assert.Greater(t, rss, int64(1<<20), "more than 1 MB resident")
	assert.Zero(t, rss%1024, "kB figures, in bytes")
	assert.GreaterOrEqual(t, peakRSS(os.Getpid()), rss, "the peak is at least the current size")
	assert.Zero(t, procStatus(-1, "VmRSS:"))
}

// TestWebhookSecret: the receiver's secret is a valid Standard Webhooks
// secret, new each time.
func TestWebhookSecret(t *testing.T) {
	s := webhookSecret()
	_, err := consume.NewVerifier([]string{s})
	require.NoError(t, err)
	assert.NotEqual(t, s, webhookSecret())
}

// TestRun_UnknownSink: a sink the harness cannot run is refused before
// anything starts.
func TestRun_UnknownSink(t *testing.T) {
	err := Run(t.Context(), Options{Tasks: 1, Sinks: []string{"carrier-pigeon"}, Store: "bbolt", Replicas: 1, Stdout: os.Stderr, Stderr: os.Stderr})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `unknown sink "carrier-pigeon"`)
}
