package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/diff/rules"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/store"
)

// Every store backend serves the dispatcher and the poller's tier state.
var (
	_ sink.Outbox       = store.Store(nil)
	_ poller.StateStore = store.Store(nil)
)

// Relay is the whole pipeline of one config: poller → diff → store → sinks,
// plus the admin API. OpenRelay builds it; Run runs it until ctx ends.
type Relay struct {
	cfg *config.Config
	log zerolog.Logger
	db  store.Store
	js  *jsHandle // db in jetstream mode; nil with bbolt
	// leadSince is when this jetstream replica last won the lease
	// (Unix nanoseconds); 0 while it follows.
	leadSince atomic.Int64
	client    *poller.Client
	pcfg      poller.Config
	// pipeMu guards poll, ingest, tiers and rules, which a jetstream
	// replica replaces each time it wins the lease.
	pipeMu  sync.RWMutex
	poll    *poller.Poller
	ingest  *ingester
	tiers   *poller.Tiered // nil with poll.strategy: full
	rules   *rules.Engine  // nil without rules
	outs    []*output
	admin   *adminServer
	metrics *metrics
	states  *sinkStateSaver
	started time.Time
	savedMu sync.Mutex // guards output.saved
}

// output is one configured sink with its dispatcher.
type output struct {
	cfg   config.SinkConfig
	sink  sink.Sink
	disp  dispatcher      // *sink.Dispatcher, or *partitioned on a jetstream store
	saved store.SinkState // last state written to the store
}

// relayOptions are knobs for tests and the demo.
type relayOptions struct {
	// HTTPClient for the upstream API; nil builds one.
	HTTPClient *http.Client
	// Observer also receives every delivery outcome (the demo's printer).
	Observer sink.Observer
	// ReplicaID names this replica of a jetstream store; "" is
	// "<hostname>-<pid>".
	ReplicaID string
}

// OpenRelay opens the store, connects the sinks and binds the admin
// address. On error everything opened so far is closed again.
func OpenRelay(ctx context.Context, cfg *config.Config, log zerolog.Logger, opts relayOptions) (_ *Relay, err error) {
	r := &Relay{cfg: cfg, log: log, started: time.Now()}
	defer func() {
		if err != nil {
			r.close(context.Background())
		}
	}()
	storeOpts := store.Options{Timeout: 2 * time.Second, Logger: log.With().Str("component", "store").Logger()}
	if cfg.JetStream() && opts.ReplicaID != "" {
		var h *jsHandle
		if h, err = openJetStream(cfg, storeOpts.Logger, opts.ReplicaID); err == nil {
			r.db = h
		}
	} else {
		r.db, err = openStore(cfg, storeOpts)
	}
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return nil, fmt.Errorf("store %s is taken: another incs-relay is running on it (stop it, or use its admin API at %s)", cfg.Store.Path, cfg.Admin.Addr)
		}
		return nil, err
	}
	r.js, _ = r.db.(*jsHandle)
	r.metrics = newMetrics(r)
	if r.js != nil {
		r.metrics.reg.MustRegister(replicaCollector{r.js})
	}

	httpClient := opts.HTTPClient
	if httpClient == nil {
		httpClient = &http.Client{Transport: r.metrics.instrumentAPI(http.DefaultTransport.(*http.Transport).Clone())}
	}
	r.pcfg = cfg.PollerConfig()
	r.pcfg.HTTPClient = httpClient
	r.client = poller.NewClient(r.pcfg, log.With().Str("component", "poller").Logger())
	// A jetstream replica builds its pipeline again each time it wins
	// the lease (leader.go); until then it only delivers.
	if err := r.buildPipeline(r.js == nil); err != nil {
		return nil, err
	}

	// The state saver comes first: when the others hear of a pause, it
	// is on disk.
	r.states = newSinkStateSaver(r)
	obs := sink.MultiObserver{r.states, r.metrics}
	if opts.Observer != nil {
		obs = append(obs, opts.Observer)
	}
	for i := range cfg.Sinks {
		sc := cfg.Sinks[i]
		s, err := buildSink(ctx, cfg, sc, log)
		if err != nil {
			return nil, err
		}
		filter, err := buildFilter(sc)
		if err != nil {
			return nil, err
		}
		o := &output{cfg: sc, sink: s}
		prev, err := r.db.SinkState(sc.Name)
		if err != nil {
			return nil, err
		}
		o.saved = prev
		pausedReason := ""
		if prev.Paused {
			pausedReason = prev.PauseReason
			if pausedReason == "" {
				pausedReason = "paused by an earlier run"
			}
			log.Warn().Str("sink", sc.Name).Str("reason", pausedReason).Msg("sink is paused since an earlier run; replay or resume it to deliver")
		}
		dc := sink.DispatcherConfig{
			Paused:      pausedReason,
			Sink:        s,
			Filter:      filter,
			MaxInFlight: maxInFlight(sc),
			Retry:       retryPolicy(sc),
			Outbox:      r.db,
			Logger:      log, // the dispatcher adds "sink"
			Observer:    obs,
		}
		if r.js != nil {
			o.disp = r.partitionedDispatcher(dc)
		} else {
			o.disp = sink.NewDispatcher(dc)
		}
		r.outs = append(r.outs, o)
	}
	if cfg.Admin.Addr != "" {
		r.admin, err = newAdminServer(r, cfg.Admin)
		if err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Run polls and delivers until ctx ends, then stops polling, lets deliveries
// under way finish, closes the sinks and the store, and returns nil.
func (r *Relay) Run(ctx context.Context) error {
	if r.js != nil {
		return r.runReplica(ctx)
	}
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	deliverCtx, stopDeliver := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDeliver()

	if r.admin != nil {
		r.admin.Start()
	}
	delivering := r.runDispatchers(deliverCtx)
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		if err := r.poll.Run(pollCtx); err != nil && !errors.Is(err, context.Canceled) {
			r.log.Error().Err(err).Msg("poller stopped")
		}
	}()
	pruneDone := make(chan struct{})
	go func() {
		defer close(pruneDone)
		r.pruneLoop(pollCtx)
	}()
	stateDone := make(chan struct{})
	go func() {
		defer close(stateDone)
		r.states.run(pollCtx)
	}()
	r.log.Info().Str("store", r.cfg.Store.Path).Str("upstream", config.HostOf(r.cfg.Upstream.BaseURL)).
		Int("sinks", len(r.outs)).Str("admin", r.adminAddr()).Msg("relay running")

	<-ctx.Done()
	r.log.Info().Msg("stopping: polling stops, deliveries under way finish")
	stopPoll()
	<-pollDone
	if err := r.ingest.flush(); err != nil && !errors.Is(err, context.Canceled) {
		r.log.Warn().Err(err).Msg("last page not stored; it is read again on the next start")
	}
	<-pruneDone
	<-stateDone
	stopDeliver() // dispatchers drain within their DrainTimeout
	delivering.Wait()
	r.saveSinkStates()
	r.closeStopped()
	return nil
}

// runDispatchers runs every sink's dispatcher until ctx ends.
func (r *Relay) runDispatchers(ctx context.Context) *sync.WaitGroup {
	var wg sync.WaitGroup
	for _, o := range r.outs {
		wg.Add(1)
		go func(o *output) {
			defer wg.Done()
			if err := o.disp.Run(ctx); err != nil {
				r.log.Error().Err(err).Str("sink", o.cfg.Name).Msg("dispatcher stopped")
			}
		}(o)
	}
	return &wg
}

// closeStopped closes everything once polling and delivery stopped.
func (r *Relay) closeStopped() {
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r.close(closeCtx)
	r.log.Info().Msg("stopped")
}

// close releases everything; safe on a partly opened relay.
func (r *Relay) close(ctx context.Context) {
	if r.admin != nil {
		r.admin.Close(ctx)
	}
	for _, o := range r.outs {
		if err := o.sink.Close(ctx); err != nil {
			r.log.Warn().Err(err).Str("sink", o.cfg.Name).Msg("close sink")
		}
	}
	if r.client != nil {
		r.client.CloseIdleConnections()
	}
	if r.db != nil {
		if err := r.db.Close(); err != nil {
			r.log.Warn().Err(err).Msg("close store")
		}
	}
}

func (r *Relay) adminAddr() string {
	if r.admin == nil {
		return ""
	}
	return r.admin.Addr()
}

// output returns the sink named name, or nil.
func (r *Relay) output(name string) *output {
	for _, o := range r.outs {
		if o.cfg.Name == name {
			return o
		}
	}
	return nil
}

func (r *Relay) sinkNames() []string {
	names := make([]string, len(r.outs))
	for i, o := range r.outs {
		names[i] = o.cfg.Name
	}
	return names
}

// pruneLoop removes delivered events past retention and seen records of
// tasks beyond the lookback window, at start and then every interval.
func (r *Relay) pruneLoop(ctx context.Context) {
	every := min(max(r.cfg.Store.Retention.D()/20, time.Minute), time.Hour)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res, err := r.db.Prune(ctx, store.PruneOptions{
			Retention: r.cfg.Store.Retention.D(),
			Lookback:  r.cfg.Poll.Lookback.D(),
			Sinks:     r.sinkNames(),
			Now:       time.Now(),
		})
		if err != nil && !errors.Is(err, context.Canceled) {
			r.log.Warn().Err(err).Msg("prune")
		} else if res.Events > 0 || res.Tasks > 0 {
			r.log.Info().Int("events", res.Events).Int("tasks", res.Tasks).Msg("pruned")
		}
		t.Reset(every)
	}
}

// maxInFlight is sc's max_in_flight, or the default for its type.
func maxInFlight(sc config.SinkConfig) int {
	if sc.MaxInFlight > 0 {
		return sc.MaxInFlight
	}
	if sc.Type == config.SinkNATS {
		return sink.DefaultNATSMaxInFlight
	}
	return sink.DefaultMaxInFlight
}

func retryPolicy(sc config.SinkConfig) sink.RetryPolicy {
	if sc.Retry == nil {
		return sink.RetryPolicy{}.WithDefaults()
	}
	return sink.RetryPolicy{Initial: sc.Retry.Initial.D(), Max: sc.Retry.Max.D(), MaxElapsed: sc.Retry.MaxElapsed.D()}.WithDefaults()
}

// embeddedDir is where an embedded NATS server keeps JetStream data: the
// sink's data_dir, or next to the store.
func embeddedDir(cfg *config.Config, sc config.SinkConfig) string {
	if sc.DataDir != "" {
		return sc.DataDir
	}
	return filepath.Join(filepath.Dir(cfg.Store.Path), "nats")
}
