package main

// The run command: read the config, open the relay with its admin API
// and run it until SIGINT or SIGTERM.

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/admin"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
)

// RunCommand runs the relay until SIGINT or SIGTERM.
type RunCommand struct{ m *Main }

// Run reads the config, opens the relay and runs it. It returns nil after
// a clean shutdown, so the process exits 0.
func (c *RunCommand) Run(ctx context.Context, args []string) error {
	fs := c.m.newFlagSet("run")
	path := fs.String("config", "", "config file")
	level := fs.String("log-level", "", "debug, info, warn or error (overrides log.level)")
	format := fs.String("log-format", "", "auto, json or console (overrides log.format)")
	watch := fs.Bool("watch", false, "reload the config when its file changes (also through a symlink swap, as a Kubernetes ConfigMap update)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := c.m.loadConfig(*path)
	if err != nil {
		return err
	}
	log, lw, err := newLevelLogger(c.m.Stderr, cmp.Or(*level, cfg.Log.Level), cmp.Or(*format, cfg.Log.Format))
	if err != nil {
		return err
	}
	opts := relay.Options{Load: func() (*config.Config, error) { return c.m.checkedConfig(*path) }}
	if *level == "" { // --log-level fixes the level; log.level is reloaded
		opts.LogLevel = lw
	}
	if path := os.Getenv("INCS_RELAY_CPUPROFILE"); path != "" {
		stop, err := startCPUProfile(path)
		if err != nil {
			return err
		}
		defer stop()
	}
	r, err := admin.Open(ctx, cfg, log, opts)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	reloading := reloadOnSignal(ctx, r)
	defer reloading()
	if *watch {
		w, err := r.WatchConfig(ctx, *path)
		if err != nil {
			r.Close(context.Background())
			return fmt.Errorf("run --watch: %w", err)
		}
		defer w()
	}
	if path := os.Getenv("INCS_RELAY_MEMPROFILE_PEAK"); path != "" {
		go writePeakHeapProfiles(ctx, path, log)
	}
	err = r.Run(ctx)
	if path := os.Getenv("INCS_RELAY_MEMPROFILE"); path != "" {
		// What the relay holds as it stops (its store and caches are
		// still referenced here).
		writeHeapProfile(path, true, log)
		runtime.KeepAlive(r)
	}
	return err
}

// writeHeapProfile writes the live heap to path ("%d" in it becomes the
// pid, for bench's several relays), after a collection when gc is set: a
// developer's aid (INCS_RELAY_MEMPROFILE, written when the relay stops;
// INCS_RELAY_MEMPROFILE_PEAK).
func writeHeapProfile(path string, gc bool, log zerolog.Logger) {
	f, err := os.Create(strings.ReplaceAll(path, "%d", strconv.Itoa(os.Getpid())))
	if err != nil {
		log.Warn().Err(err).Msg("heap profile")
		return
	}
	defer f.Close()
	if gc {
		runtime.GC()
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		log.Warn().Err(err).Msg("heap profile")
	}
}

// writePeakHeapProfiles writes the heap profile to path each time the
// live heap after a collection grew by a tenth over the largest seen,
// until ctx ends: the profile of the peak.
func writePeakHeapProfiles(ctx context.Context, path string, log zerolog.Logger) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	var peak uint64
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		metrics.Read(sample)
		if live := sample[0].Value.Uint64(); live > peak+peak/10 {
			peak = live
			writeHeapProfile(path, false, log)
		}
	}
}

// startCPUProfile writes a CPU profile to path ("%d" in it becomes the
// pid, as in writeHeapProfile) until stop is called: a developer's aid
// (INCS_RELAY_CPUPROFILE), used with `incs-relay bench`.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(strings.ReplaceAll(path, "%d", strconv.Itoa(os.Getpid())))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// reloadOnSignal reloads r's config on each SIGHUP until ctx ends or the
// returned stop is called.
func reloadOnSignal(ctx context.Context, r *relay.Relay) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				_, _ = r.Reload(ctx, "sighup") // logged and reported by Reload
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		cancel()
		<-done
	}
}
