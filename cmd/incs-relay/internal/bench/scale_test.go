package bench

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestScaleWorld: the tasks stay fixed and their logs add up to the
// events asked for; fewer than the tasks' own histories is refused.
func TestScaleWorld(t *testing.T) {
	w, err := scaleWorld(50, 1000)
	require.NoError(t, err)
	assert.Equal(t, 1000, w.LogCount())
	tasks := map[int64]bool{}
	for _, l := range w.Logs() {
		tasks[l.TaskID] = true
	}
	assert.Len(t, tasks, 50)
	_, err = scaleWorld(50, 10)
	assert.ErrorContains(t, err, "fewer tasks")
}

// TestRunScale runs `bench --scale` tiny end to end with the incs-relay
// binary built from this module: both store modes of both worlds are in
// the table, and the goals are checked.
func TestRunScale(t *testing.T) {
	if testing.Short() {
		t.Skip("builds incs-relay and runs it four times")
	}
	exe := filepath.Join(t.TempDir(), "incs-relay")
	out, err := exec.Command("go", "build", "-o", exe, "github.com/incs-relay/incs-relay/cmd/incs-relay").CombinedOutput()
	require.NoError(t, err, "go build incs-relay: %s", out)

	var stdout, stderr bytes.Buffer
	err = RunScale(t.Context(), ScaleOptions{
		Events: []int{4000, 2000}, Tasks: 100, Timeout: time.Minute, Settle: 100 * time.Millisecond,
		Exe: exe, Stdout: &stdout, Stderr: &stderr,
	})
	require.NoError(t, err, "stderr: %s", stderr.String())
	table := stdout.String()
	t.Log("\n" + table)

	// The runs' table: a header, then one row per store mode and world,
	// the smaller world first, until a blank line.
	_, runs, ok := strings.Cut(table, "mode  stored events  tasks")
	require.True(t, ok, "no runs table")
	runs, _, _ = strings.Cut(runs, "\n\n")
	var rows []string
	for _, line := range strings.Split(runs, "\n")[1:] {
		f := strings.Fields(line)
		require.Len(t, f, 18, "13 columns, 5 of them in MB: %q", line)
		assert.Equal(t, "100", f[2], "tasks: %s", line)
		rows = append(rows, f[0]+" "+f[1])
	}
	assert.Equal(t, []string{"bbolt 2000", "jetstream 2000", "bbolt 4000", "jetstream 4000"}, rows)
	assert.Contains(t, table, "RssAnon delivering grows ≤ 32 B per stored event (2000→4000)")
	assert.Contains(t, table, "jetstream RssAnon delivering ≤ bbolt's + 64 MB (4000)")
	assert.Contains(t, table, "status ≤ 1s (4000)")
	assert.Contains(t, table, "status peak RSS at 4000 ≤ 1.2 × at 2000")
	assert.Contains(t, table, "cores")
}

// TestRunPeak: a command's peak RSS is its own, not this process's, which
// a child's rusage maxrss would report; a failing command is an error
// with its output.
func TestRunPeak(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc")
	}
	ballast := make([]byte, 256<<20)
	for i := range ballast {
		ballast[i] = 1
	}
	r, err := runPeak(t.Context(), os.Environ(), "/bin/sh", "-c", "echo hi")
	require.NoError(t, err)
	assert.Less(t, r.Peak, int64(64<<20), "sh's peak, not this process's 256 MB (%s)", r.How)
	assert.Equal(t, "hi\n", r.Out)
	runtime.KeepAlive(ballast)

	_, err = runPeak(t.Context(), os.Environ(), "/bin/sh", "-c", "echo broken >&2; exit 3")
	assert.ErrorContains(t, err, "broken")
}
