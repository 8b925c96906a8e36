package bench

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/sink"
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

// TestParseStatCPU: utime and stime are fields 14 and 15, counted after
// the command's last ')' (a command may hold spaces and parentheses).
func TestParseStatCPU(t *testing.T) {
	stat := "4242 (incs relay) (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 37 0 0 20 0 9 0 100 1000000 2000 18446744073709551615\n"
	d, err := parseStatCPU(stat)
	require.NoError(t, err)
	assert.Equal(t, 2870*time.Millisecond, d, "(250+37) ticks of 10 ms")

	_, err = parseStatCPU("4242 incs-relay S 1")
	assert.Error(t, err, "no command in parentheses")
	_, err = parseStatCPU("4242 (incs-relay) S 1 2 3")
	assert.Error(t, err, "too few fields")
	_, err = parseStatCPU("4242 (incs-relay) S 1 4242 4242 0 -1 4194560 1000 0 0 0 x 37 0")
	assert.Error(t, err, "utime not a number")

	if _, err := os.Stat("/proc/self/stat"); err == nil {
		busy := time.Now()
		for time.Since(busy) < 50*time.Millisecond {
		}
		assert.Positive(t, procCPU(os.Getpid()), "this process used CPU")
	}
	assert.Zero(t, procCPU(-1))
}

// TestStageShares sums a profile's CPU by the label "stage", samples
// without it as other, and orders the stages as the relay's pipeline.
func TestStageShares(t *testing.T) {
	cpu := &profile.ValueType{Type: "cpu", Unit: "nanoseconds"}
	sample := func(ns int64, stage string) *profile.Sample {
		s := &profile.Sample{Value: []int64{1, ns}}
		if stage != "" {
			s.Label = map[string][]string{"stage": {stage}}
		}
		return s
	}
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, cpu},
		Sample: []*profile.Sample{
			sample(30e6, "deliver"), sample(10e6, "poll"), sample(20e6, "diff"), sample(10e6, ""),
			sample(10e6, "deliver"), sample(10e6, "store"), sample(10e6, "zzz"),
		},
	}
	// A second relay's profile adds up.
	q := &profile.Profile{SampleType: []*profile.ValueType{cpu}, Sample: []*profile.Sample{{Value: []int64{100e6}, Label: map[string][]string{"stage": {"poll"}}}}}
	got, err := stageShares(p, q)
	require.NoError(t, err)
	var stages []string
	for _, s := range got {
		stages = append(stages, s.Stage)
	}
	assert.Equal(t, []string{"poll", "diff", "store", "deliver", "other", "zzz"}, stages)
	assert.Equal(t, 110*time.Millisecond, got[0].CPU)
	assert.InDelta(t, 0.55, got[0].Share, 1e-9)
	assert.Equal(t, 40*time.Millisecond, got[3].CPU)
	assert.InDelta(t, 0.05, got[4].Share, 1e-9)

	_, err = stageShares(&profile.Profile{SampleType: []*profile.ValueType{{Type: "alloc_space", Unit: "bytes"}}})
	assert.Error(t, err, "not a CPU profile")
}

// TestStageShares_RuntimeProfile: a CPU profile written by runtime/pprof
// carries the labels of pprof.Do, also into the goroutines started under
// it, and reads back through readProfiles.
func TestStageShares_RuntimeProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, pprof.StartCPUProfile(f))
	spin := func(d time.Duration) {
		for start := time.Now(); time.Since(start) < d; {
		}
	}
	pprof.Do(t.Context(), pprof.Labels("stage", "deliver"), func(context.Context) {
		done := make(chan struct{})
		go func() { defer close(done); spin(300 * time.Millisecond) }() // inherits the label
		<-done
	})
	pprof.StopCPUProfile()
	require.NoError(t, f.Close())
	ps, err := readProfiles([]string{path})
	require.NoError(t, err)
	got, err := stageShares(ps...)
	require.NoError(t, err)
	require.NotEmpty(t, got)
	for _, s := range got {
		if s.Stage == "deliver" {
			assert.Greater(t, s.Share, 0.5, "the spinning goroutine's samples carry its parent's label")
			return
		}
	}
	t.Fatalf("no deliver stage in %+v", got)
}

// TestLimitBody: the limits' webhooks pass the bench receiver's check,
// signed as webhookLimit signs them, and have the size asked for.
func TestLimitBody(t *testing.T) {
	secret := webhookSecret()
	v, err := consume.NewVerifier([]string{secret})
	require.NoError(t, err)
	key, err := sink.ParseWebhookSecret(secret)
	require.NoError(t, err)
	body := limitBody("log-7", 800)
	assert.Len(t, body, 800)
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("log-7." + ts + "."))
	mac.Write(body)
	h := http.Header{}
	h.Set("Content-Type", "application/cloudevents+json")
	h.Set("webhook-id", "log-7")
	h.Set("webhook-timestamp", ts)
	h.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	ev, err := v.VerifyBody(h, body)
	require.NoError(t, err)
	assert.Equal(t, "log-7", ev.ID)
	assert.Greater(t, len(limitBody("log-7", 10)), 10, "never cut below the event")
}

// TestParseLimitResult reads a limit process's rate from its result line.
func TestParseLimitResult(t *testing.T) {
	r, err := parseLimitResult([]byte("noise\nINCS_BENCH_LIMIT_RESULT 1000 500000000\n"))
	require.NoError(t, err)
	assert.InDelta(t, 2000, r, 1e-9)
	_, err = parseLimitResult([]byte("nothing"))
	assert.Error(t, err)
	_, err = parseLimitResult([]byte("INCS_BENCH_LIMIT_RESULT 1000 0"))
	assert.Error(t, err)
}
