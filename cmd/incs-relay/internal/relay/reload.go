package relay

// Reloading the config while the relay runs (SIGHUP, POST /v1/reload,
// run --watch): the new file is read and checked whole first; then each
// sink that changed is stopped and started again with its new settings,
// a removed one stops, an added one starts where its `start` key says,
// an unchanged one is not touched, and polling takes the new settings
// from its next cycle.

import (
	"context"
	"errors"
	"os"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/sink"
)

// LevelSetter changes the level of the relay's logger (a reload's
// log.level).
type LevelSetter interface {
	SetLevel(zerolog.Level)
}

// ReloadStatus is the outcome of the last reload, as GET /v1/reload and
// the admin page show it.
type ReloadStatus struct {
	// At is when the last reload was tried; nil before the first.
	At *time.Time `json:"at,omitempty"`
	// Trigger is what asked for it: "sighup", "api" or "watch".
	Trigger string `json:"trigger,omitempty"`
	// OK says whether it was applied; Error is why not (file, line and
	// key of a bad file).
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Changes summarises what it changed ("no change" for the same file).
	Changes string `json:"changes,omitempty"`
	// LastSuccess is when a config was last applied: the start, or the
	// last reload that succeeded.
	LastSuccess time.Time `json:"last_success"`
	// Digest identifies the file in force (config.Config.Digest).
	Digest string `json:"config_digest"`
}

// reloader is a Relay's reload state.
type reloader struct {
	mu     sync.Mutex // one reload at a time; guards closed
	closed bool       // Run is stopping: reloads are refused
	last   atomic.Pointer[ReloadStatus]
	// repoll asks the poll loop to build the polling pipeline again at
	// its next cycle (buffered 1).
	repoll chan struct{}
}

// ErrStopping is returned by Reload while the relay shuts down.
var ErrStopping = errors.New("the relay is stopping")

// ReloadStatus reports the last reload.
func (r *Relay) ReloadStatus() ReloadStatus {
	if st := r.reload.last.Load(); st != nil {
		return *st
	}
	return ReloadStatus{OK: true, LastSuccess: r.started, Digest: r.Config().Digest()}
}

// Reload reads the config file again and applies what changed (see the
// package's reload.go). A file that fails check-config's checks, or that
// changes a key that cannot change while the relay runs, changes nothing:
// the error is returned, logged, counted in the metrics and kept for
// ReloadStatus. trigger names the caller for the log and the status.
func (r *Relay) Reload(ctx context.Context, trigger string) (ReloadStatus, error) {
	r.reload.mu.Lock()
	defer r.reload.mu.Unlock()
	prev := r.ReloadStatus()
	now := time.Now()
	st := ReloadStatus{At: &now, Trigger: trigger, LastSuccess: prev.LastSuccess, Digest: prev.Digest}
	summary, err := r.reloadLocked(ctx)
	if err != nil {
		st.Error = err.Error()
		r.log.Error().Str("trigger", trigger).Err(err).Msg("config reload failed: the relay runs on with the config it had")
	} else {
		st.OK, st.Changes, st.LastSuccess, st.Digest = true, summary, now, r.Config().Digest()
		r.log.Info().Str("trigger", trigger).Str("changes", summary).Msg("config reloaded")
	}
	r.metrics.reloaded(st)
	r.reload.last.Store(&st)
	return st, err
}

// load reads and checks the config file again.
func (r *Relay) load() (*config.Config, error) {
	if r.opts.Load != nil {
		return r.opts.Load()
	}
	cfg, err := config.ReadFile(r.Config().File(), os.LookupEnv)
	if err != nil {
		return nil, err
	}
	if err := CheckSinks(cfg); err != nil {
		return nil, err
	}
	if err := cfg.CheckNATSFiles(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// reloadLocked applies the file's changes; reload.mu is held.
func (r *Relay) reloadLocked(ctx context.Context) (string, error) {
	if r.reload.closed {
		return "", ErrStopping
	}
	next, err := r.load()
	if err != nil {
		return "", err
	}
	old := r.Config()
	ch, err := config.Compare(old, next)
	if err != nil {
		return "", err
	}
	// Build the sinks that are new or changed first (a NATS sink
	// connects): one that cannot be built leaves everything as it was.
	built := make(map[string]sink.Sink)
	closeBuilt := func() {
		for name, s := range built {
			if err := s.Close(ctx); err != nil {
				r.log.Warn().Err(err).Str("sink", name).Msg("close sink")
			}
		}
	}
	for _, sc := range next.Sinks {
		if !slices.Contains(ch.SinksAdded, sc.Name) && !slices.Contains(ch.SinksChanged, sc.Name) {
			continue
		}
		var s sink.Sink
		var err error
		withStage(ctx, stageDeliver, func(ctx context.Context) { s, err = BuildSink(ctx, next, sc, r.log) })
		if err != nil {
			closeBuilt()
			return "", err
		}
		built[sc.Name] = s
	}
	// The store registers the added sinks (where they start) and marks
	// the removed ones before any of them delivers or stops.
	if _, err := r.syncRegistry(next); err != nil {
		closeBuilt()
		return "", err
	}
	r.swapOutputs(ctx, next, ch, built)
	r.cfg.Store(next)
	if r.js != nil {
		r.js.SetConfigDigest(next.Digest())
	}

	if ch.Poll {
		r.reconfigurePoll(old, next)
	}
	if ch.LogLevel && r.opts.LogLevel != nil {
		if lvl, err := zerolog.ParseLevel(next.Log.Level); err == nil {
			r.opts.LogLevel.SetLevel(lvl)
		}
	}
	if a, ok := r.admin.(interface{ Reconfigure(*config.Config) }); ok {
		a.Reconfigure(next)
	}
	summary := ch.Summary()
	if summary == "" {
		summary = "no change"
	}
	return summary, nil
}

// swapOutputs stops the dispatchers of the removed and changed sinks
// (each drains, ending its attempts within its drain timeout, and
// persists its cursor), closes their sinks, and starts the changed and
// added ones with the sinks built for them; an unchanged sink's
// dispatcher runs on untouched.
func (r *Relay) swapOutputs(ctx context.Context, next *config.Config, ch config.Changes, built map[string]sink.Sink) {
	cur := r.outputs()
	byName := make(map[string]*output, len(cur))
	var stopping []*output
	for _, o := range cur {
		byName[o.cfg.Name] = o
		if slices.Contains(ch.SinksRemoved, o.cfg.Name) || slices.Contains(ch.SinksChanged, o.cfg.Name) {
			stopping = append(stopping, o)
		}
	}
	var wg sync.WaitGroup
	for _, o := range stopping {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o.halt()
			r.savedMu.Lock()
			r.saveSinkState(o)
			r.savedMu.Unlock()
			if err := o.sink.Close(ctx); err != nil {
				r.log.Warn().Err(err).Str("sink", o.cfg.Name).Msg("close sink")
			}
			if o.unsub != nil {
				o.unsub()
			}
		}()
	}
	wg.Wait()
	outs := make([]*output, 0, len(next.Sinks))
	var fresh []*output
	for _, sc := range next.Sinks {
		s, ok := built[sc.Name]
		if !ok {
			outs = append(outs, byName[sc.Name])
			continue
		}
		var h *sink.Handoff
		if prev, ok := byName[sc.Name]; ok {
			if d, ok := prev.disp.(*sink.Dispatcher); ok {
				h = d.Handoff() // a partitioned dispatcher hands over through the store
			}
		}
		o, err := r.wrapOutput(sc, s, h)
		if err != nil { // its filter was checked with the file: cannot happen
			r.log.Error().Err(err).Str("sink", sc.Name).Msg("reload: sink not started")
			_ = s.Close(ctx)
			continue
		}
		r.metrics.addSink(sc.Name)
		outs = append(outs, o)
		fresh = append(fresh, o)
	}
	r.outsMu.Lock()
	r.outs = outs
	if r.deliverCtx != nil {
		for _, o := range fresh {
			r.start(o)
		}
	}
	r.outsMu.Unlock()
}

// reconfigurePoll gives polling the new settings. Interval, budget, page
// size, rate limit, timeouts, the ceilings and the token change in place
// from the next cycle, keeping the tiers' state in memory; a change of
// poll.strategy, the rules or the calendars builds the polling pipeline
// again from the store (tier state and rule states as last stored) at
// the next cycle.
func (r *Relay) reconfigurePoll(old, next *config.Config) {
	pcfg := next.PollerConfig()
	r.pipeMu.Lock()
	pcfg.HTTPClient = r.pcfg.HTTPClient
	r.pcfg = pcfg
	poll, tiers := r.poll, r.tiers
	r.pipeMu.Unlock()
	if old.Poll.Strategy != next.Poll.Strategy || !reflect.DeepEqual(old.Rules, next.Rules) || !reflect.DeepEqual(old.Calendars, next.Calendars) {
		r.client.Reconfigure(pcfg)
		select {
		case r.reload.repoll <- struct{}{}:
		default:
		}
		return
	}
	poll.Reconfigure(pcfg) // and its client, and its strategy unless the rules wrap it
	if tiers != nil {
		tiers.Reconfigure(pcfg) // the last call before the next cycle wins
	}
}

// pollLoop runs the poller until ctx ends, building the pipeline again
// when a reload asks (reconfigurePoll), and stores what the last page
// read when it stops.
func (r *Relay) pollLoop(ctx context.Context) {
	for {
		r.pipeMu.RLock()
		poll := r.poll
		r.pipeMu.RUnlock()
		pctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := poll.Run(pctx); err != nil && !errors.Is(err, context.Canceled) {
				r.log.Error().Err(err).Msg("poller stopped")
			}
		}()
		again := false
		select {
		case <-ctx.Done():
		case <-r.reload.repoll:
			again = true
		}
		cancel()
		<-done
		r.pipeMu.RLock()
		ing := r.ingest
		r.pipeMu.RUnlock()
		if err := ing.flush(); err != nil && !errors.Is(err, context.Canceled) {
			r.log.Warn().Err(err).Msg("last page not stored; it is read again on the next start")
		}
		if !again {
			return
		}
		if err := r.buildPipeline(true); err != nil {
			// The old pipeline stays: polling goes on as before.
			r.log.Error().Err(err).Msg("reload: polling keeps its old settings")
			continue
		}
		r.pipeMu.RLock()
		r.poll.CarryStatus(poll)
		r.pipeMu.RUnlock()
		r.log.Info().Msg("polling rebuilt with the reloaded strategy, rules and calendars")
	}
}
