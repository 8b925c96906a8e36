package bench

// A one-off command's wall time and peak RSS.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// peakRun is what runPeak measured of one command.
type peakRun struct {
	Wall time.Duration
	Peak int64  // bytes
	How  string // how Peak was read
	Out  string // stdout and stderr
}

// runPeak runs exe with args and env once and returns its wall time and
// peak RSS. The child's own rusage (wait4's maxrss) would not do: Go
// starts children with CLONE_VM|CLONE_VFORK, and Linux folds the mm the
// child ran on before exec, this process's, into its maxrss, so every
// child of a harness holding a simulated world of a million logs reads
// as hundreds of MB. GNU time (/usr/bin/time -f %M) forks the command
// from its own small process, so its figure is the command's: it is
// used when it is there; else VmHWM is sampled from /proc every
// millisecond until the command exits.
func runPeak(ctx context.Context, env []string, exe string, args ...string) (peakRun, error) {
	if gnuTime, err := exec.LookPath("/usr/bin/time"); err == nil {
		dir, err := os.MkdirTemp("", "incs-relay-peak-*")
		if err != nil {
			return peakRun{}, err
		}
		defer os.RemoveAll(dir)
		file := filepath.Join(dir, "maxrss")
		r, err := run(ctx, env, gnuTime, append([]string{"-f", "%M", "-o", file, exe}, args...), nil)
		if err != nil {
			return r, err
		}
		b, _ := os.ReadFile(file)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if kb, err := strconv.ParseInt(lines[len(lines)-1], 10, 64); err == nil {
			r.Peak, r.How = kb<<10, "GNU time's %M (maxrss of the command alone)"
			return r, nil
		}
		// Not GNU time after all: sample instead.
	}
	var peak int64
	r, err := run(ctx, env, exe, args, func(pid int) { peak = max(peak, peakRSS(pid)) })
	r.Peak, r.How = peak, "VmHWM sampled from /proc every 1 ms (/usr/bin/time not found)"
	return r, err
}

// run runs exe once, calling sample (if not nil) with its pid every
// millisecond until it exits.
func run(ctx context.Context, env []string, exe string, args []string, sample func(pid int)) (peakRun, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return peakRun{}, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var err error
	for done := false; !done; {
		if sample != nil {
			sample(cmd.Process.Pid)
		}
		select {
		case err = <-exited:
			done = true
		case <-time.After(time.Millisecond):
		}
	}
	r := peakRun{Wall: time.Since(start), Out: out.String()}
	if err != nil {
		return r, fmt.Errorf("%s: %v: %s", filepath.Base(exe), err, strings.TrimSpace(r.Out))
	}
	return r, nil
}
