package bench

// The relays' CPU: their user and system time read from /proc while they
// run, and the shares of the relay's stages in a CPU profile by the pprof
// label "stage" the relay sets on its goroutines.

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/pprof/profile"
)

// clockTicks is the unit of /proc/PID/stat's times (USER_HZ, 100 on
// every Linux the relay runs on).
const clockTicks = 100

// procCPU returns the CPU time (user plus system) process pid used so
// far, read from /proc/PID/stat; 0 when it cannot be read.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	d, _ := parseStatCPU(string(b))
	return d
}

// parseStatCPU reads utime and stime (fields 14 and 15, in clock ticks)
// of a /proc/PID/stat line. The command name (field 2) is in parentheses
// and may hold spaces and parentheses itself: the fields are counted
// after its last ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("bench: /proc stat without a command: %q", stat)
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3, the state
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: /proc stat has %d fields after the command, want 13 or more", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bench: /proc stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// cpuOf returns the CPU time all of children used so far.
func cpuOf(children []*child) time.Duration {
	var d time.Duration
	for _, c := range children {
		d += procCPU(c.pid())
	}
	return d
}

// stageLabel is the pprof label the relay marks its stages with
// (relay.StageLabel); samples without it are "other".
const stageLabel = "stage"

// stageOrder is the order stages are printed in; others follow by name.
var stageOrder = []string{"poll", "diff", "store", "deliver", "other"}

// stageShare is one stage's CPU in a profile.
type stageShare struct {
	Stage string
	CPU   time.Duration
	Share float64 // of the profile's whole CPU, 0 to 1
}

// stageShares sums the CPU of the profiles' samples by their stage label
// ("other" without one) and returns every stage found, in stageOrder.
func stageShares(profiles ...*profile.Profile) ([]stageShare, error) {
	by := map[string]time.Duration{}
	var total time.Duration
	for _, p := range profiles {
		idx := slices.IndexFunc(p.SampleType, func(t *profile.ValueType) bool { return t.Type == "cpu" && t.Unit == "nanoseconds" })
		if idx < 0 {
			return nil, fmt.Errorf("bench: the profile has no cpu nanoseconds (sample types %v)", p.SampleType)
		}
		for _, s := range p.Sample {
			stage := "other"
			if v := s.Label[stageLabel]; len(v) > 0 {
				stage = v[0]
			}
			d := time.Duration(s.Value[idx])
			by[stage] += d
			total += d
		}
	}
	var out []stageShare
	for stage, d := range by {
		share := 0.0
		if total > 0 {
			share = float64(d) / float64(total)
		}
		out = append(out, stageShare{Stage: stage, CPU: d, Share: share})
	}
	rank := func(s string) int {
		if i := slices.Index(stageOrder, s); i >= 0 {
			return i
		}
		return len(stageOrder)
	}
	slices.SortFunc(out, func(a, b stageShare) int {
		if ra, rb := rank(a.Stage), rank(b.Stage); ra != rb {
			return ra - rb
		}
		return strings.Compare(a.Stage, b.Stage)
	})
	return out, nil
}

// readProfiles parses the CPU profiles at paths.
func readProfiles(paths []string) ([]*profile.Profile, error) {
	var out []*profile.Profile
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		p, err := profile.Parse(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("bench: profile %s: %w", path, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// perEvent returns d per event in microseconds.
func perEvent(d time.Duration, events int) float64 {
	if events == 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(events)
}

// printShares writes the stages' lines of the table: each stage's share
// of the relays' profiled CPU and its CPU per event stored.
func printShares(w io.Writer, shares []stageShare, events int, replay bool) {
	over := "the relay's whole run (start and stop included)"
	if replay {
		over = "the relay's whole run (start, replays and stop included)"
	}
	for _, s := range shares {
		fmt.Fprintf(w, "stage %s (CPU profile)\t%.1f%%\t%.1f µs per event\tof %s\n", s.Stage, 100*s.Share, perEvent(s.CPU, events), over)
	}
}
