package relay

// The relay of one config: opening it (store, pipeline, sinks and their
// dispatchers), running it until its context ends and shutting it down in
// order, and what the admin API and the commands may ask of it.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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

// Relay is the whole pipeline of one config: poller → diff → store → sinks.
// Open builds it; Run runs it until ctx ends. Its methods that report
// (SinkStatuses, PollView, NotReady, ...) are safe for concurrent use
// while it runs.
type Relay struct {
	// cfg is the config in force: a reload replaces it (Config reads it).
	cfg atomic.Pointer[config.Config]
	log zerolog.Logger
	db  store.Store
	js  *JetStream // db in jetstream mode; nil with bbolt
	// roles passes the store's role changes on to the lead loop and the
	// partitioned dispatchers (jetstream mode).
	roles fanout
	// leadSince is when this jetstream replica last won the lease
	// (Unix nanoseconds); 0 while it follows.
	leadSince atomic.Int64
	client    *poller.Client
	pcfg      poller.Config
	// pipeMu guards poll, ingest, tiers and rules, which a jetstream
	// replica replaces each time it wins the lease.
	pipeMu sync.RWMutex
	poll   *poller.Poller
	ingest *Ingester
	tiers  *poller.Tiered // nil with poll.strategy: full
	rules  *rules.Engine  // nil without rules
	// outsMu guards outs, which a reload replaces (the outputs in it are
	// not changed once built: a changed sink gets a new output).
	outsMu  sync.RWMutex
	outs    []*output
	obs     sink.Observer // every dispatcher's observer
	admin   Server        // the admin API; nil without one
	metrics *metrics
	states  *sinkStateSaver
	started time.Time
	savedMu sync.Mutex // guards output.saved

	opts Options
	// deliverCtx is the context the dispatchers run under while Run runs
	// (nil before): a sink a reload adds runs under it too.
	deliverCtx context.Context
	// delivering counts the running dispatchers.
	delivering sync.WaitGroup
	reload     reloader // reload.go
}

// output is one configured sink with its dispatcher.
type output struct {
	cfg   config.SinkConfig
	sink  sink.Sink
	disp  dispatcher      // *sink.Dispatcher, or *partition.Dispatcher on a jetstream store
	saved store.SinkState // last state written to the store
	unsub func()          // ends the partitioned dispatcher's role subscription; nil with bbolt
	// stop ends the dispatcher's Run and done is closed once it returned
	// (start sets both).
	stop context.CancelFunc
	done chan struct{}
}

// Options are knobs for tests and the demo.
type Options struct {
	// HTTPClient for the upstream API; nil builds one.
	HTTPClient *http.Client
	// Observer also receives every delivery outcome (the demo's printer).
	Observer sink.Observer
	// ReplicaID names this replica of a jetstream store; "" is
	// "<hostname>-<pid>".
	ReplicaID string
	// Load reads and checks the config file again, as check-config does,
	// for Reload; nil reads cfg.File() with the process environment.
	Load func() (*config.Config, error)
	// LogLevel is set to log.level by a reload; nil when the level was
	// fixed by a flag (or the logger's level cannot change).
	LogLevel LevelSetter
}

// Server runs beside a relay, as the admin API does (package admin): Run
// starts it and stops it before the store closes.
type Server interface {
	// Start serves in the background.
	Start()
	// Close stops serving.
	Close(ctx context.Context)
	// Addr is the address it listens on.
	Addr() string
}

// Open opens the store, builds the pipeline and connects the sinks. On
// error everything opened so far is closed again. A Server attached with
// SetAdmin runs beside it.
func Open(ctx context.Context, cfg *config.Config, log zerolog.Logger, opts Options) (_ *Relay, err error) {
	r := &Relay{log: log, started: time.Now(), opts: opts}
	r.cfg.Store(cfg)
	r.reload.repoll = make(chan struct{}, 1)
	defer func() {
		if err != nil {
			r.close(context.Background())
		}
	}()
	storeOpts := store.Options{Timeout: 2 * time.Second, Logger: log.With().Str("component", "store").Logger()}
	// The store's own goroutines (and connection) count as the store.
	withStage(ctx, stageStore, func(context.Context) {
		if cfg.JetStream() && opts.ReplicaID != "" {
			var h *JetStream
			if h, err = OpenJetStream(cfg, storeOpts.Logger, opts.ReplicaID); err == nil {
				r.db = h
			}
		} else {
			r.db, err = OpenStore(cfg, storeOpts)
		}
	})
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return nil, fmt.Errorf("store %s is taken: another incs-relay is running on it (stop it, or use its admin API at %s)", cfg.Store.Path, cfg.Admin.Addr)
		}
		return nil, err
	}
	r.js, _ = r.db.(*JetStream)
	if r.js != nil {
		r.js.SetConfigDigest(cfg.Digest())
	}
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
	// the lease (replica.go); until then it only delivers.
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
	r.obs = obs
	// The store's registry of sinks says where a sink new to the store
	// starts; nothing is delivered before it is in line with this config.
	if _, err := r.syncRegistry(cfg); err != nil {
		return nil, err
	}
	outs := make([]*output, 0, len(cfg.Sinks))
	for _, sc := range cfg.Sinks {
		o, err := r.newOutput(ctx, cfg, sc)
		if err != nil {
			closeOutputs(ctx, outs, r.log)
			return nil, err
		}
		outs = append(outs, o)
	}
	r.outs = outs
	return r, nil
}

// newOutput builds the sink of sc (connecting a NATS sink) and its
// dispatcher, which starts from the sink's stored cursor and pause.
func (r *Relay) newOutput(ctx context.Context, cfg *config.Config, sc config.SinkConfig) (*output, error) {
	var s sink.Sink
	var err error
	// Its connection's goroutines count as delivery.
	withStage(ctx, stageDeliver, func(ctx context.Context) { s, err = BuildSink(ctx, cfg, sc, r.log) })
	if err != nil {
		return nil, err
	}
	o, err := r.wrapOutput(sc, s, nil)
	if err != nil {
		_ = s.Close(ctx)
		return nil, err
	}
	return o, nil
}

// wrapOutput gives the built sink s of sc its filter and dispatcher; h,
// when not nil, is what the dispatcher it replaces left (a reload that
// changed the sink): the events that one delivered above its cursor are
// not delivered again.
func (r *Relay) wrapOutput(sc config.SinkConfig, s sink.Sink, h *sink.Handoff) (*output, error) {
	filter, err := BuildFilter(sc)
	if err != nil {
		return nil, err
	}
	filter = sink.SkipDone(h, filter)
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
		r.log.Warn().Str("sink", sc.Name).Str("reason", pausedReason).Msg("sink is paused since an earlier run; replay or resume it to deliver")
	}
	dc := sink.DispatcherConfig{
		Paused:      pausedReason,
		Sink:        s,
		Filter:      filter,
		MaxInFlight: maxInFlight(sc),
		Retry:       retryPolicy(sc),
		Outbox:      r.db,
		Logger:      r.log, // the dispatcher adds "sink"
		Observer:    r.obs,
	}
	if r.js != nil {
		o.disp, o.unsub = r.partitionedDispatcher(dc)
	} else {
		o.disp = sink.NewDispatcher(dc)
	}
	return o, nil
}

// closeOutputs closes the sinks of outputs that never ran.
func closeOutputs(ctx context.Context, outs []*output, log zerolog.Logger) {
	for _, o := range outs {
		if err := o.sink.Close(ctx); err != nil {
			log.Warn().Err(err).Str("sink", o.cfg.Name).Msg("close sink")
		}
		if o.unsub != nil {
			o.unsub()
		}
	}
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
	r.runDispatchers(deliverCtx)
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		withStage(pollCtx, stagePoll, r.pollLoop)
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
	checkDone := make(chan struct{})
	go func() {
		defer close(checkDone)
		_ = checkStore(pollCtx, r.db, r.log, storeCheckDelay)
	}()
	cfg := r.Config()
	r.log.Info().Str("store", cfg.Store.Path).Str("upstream", config.HostOf(cfg.Upstream.BaseURL)).
		Int("sinks", len(r.outputs())).Str("admin", r.AdminAddr()).Msg("relay running")

	<-ctx.Done()
	r.log.Info().Msg("stopping: polling stops, deliveries under way finish")
	stopPoll()
	<-pollDone
	<-pruneDone
	<-stateDone
	<-checkDone
	r.stopDelivery(stopDeliver) // dispatchers drain within their DrainTimeout
	r.saveSinkStates()
	r.closeStopped()
	return nil
}

// runDispatchers runs every sink's dispatcher until ctx ends (or a reload
// stops it); a sink a reload adds runs under ctx too.
func (r *Relay) runDispatchers(ctx context.Context) {
	r.outsMu.Lock()
	defer r.outsMu.Unlock()
	r.deliverCtx = ctx
	for _, o := range r.outs {
		r.start(o)
	}
}

// start runs o's dispatcher under deliverCtx; outsMu is held.
func (r *Relay) start(o *output) {
	ctx, stop := context.WithCancel(r.deliverCtx)
	o.stop, o.done = stop, make(chan struct{})
	r.delivering.Add(1)
	go func() {
		defer r.delivering.Done()
		defer close(o.done)
		withStage(ctx, stageDeliver, func(ctx context.Context) {
			if err := o.disp.Run(ctx); err != nil {
				r.log.Error().Err(err).Str("sink", o.cfg.Name).Msg("dispatcher stopped")
			}
		})
	}()
}

// halt stops o's dispatcher, if it runs, and waits until it drained and
// persisted its cursor.
func (o *output) halt() {
	if o.stop == nil {
		return
	}
	o.stop()
	<-o.done
}

// stopDelivery ends the delivery context (stop) and waits for every
// dispatcher, also one a reload is starting: reloads wait first.
func (r *Relay) stopDelivery(stop context.CancelFunc) {
	r.reload.mu.Lock()
	r.reload.closed = true
	r.reload.mu.Unlock()
	stop()
	r.delivering.Wait()
}

// outputs returns the current outputs (a reload replaces the slice, never
// changes it).
func (r *Relay) outputs() []*output {
	r.outsMu.RLock()
	defer r.outsMu.RUnlock()
	return r.outs
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
	closeOutputs(ctx, r.outputs(), r.log)
	if r.client != nil {
		r.client.CloseIdleConnections()
	}
	if r.db != nil {
		if err := r.db.Close(); err != nil {
			r.log.Warn().Err(err).Msg("close store")
		}
	}
}

// SetAdmin attaches the admin API (or another Server) before Run: Run
// starts it and Close closes it first.
func (r *Relay) SetAdmin(s Server) { r.admin = s }

// AdminAddr is the address of the attached Server; "" without one.
func (r *Relay) AdminAddr() string {
	if r.admin == nil {
		return ""
	}
	return r.admin.Addr()
}

// Close releases everything of a relay that is not run (Run closes what
// it runs when it returns).
func (r *Relay) Close(ctx context.Context) { r.close(ctx) }

// Config is the relay's configuration.
func (r *Relay) Config() *config.Config { return r.cfg.Load() }

// Store is the relay's store.
func (r *Relay) Store() store.Store { return r.db }

// JetStream is the relay's jetstream store; nil with a bbolt one.
func (r *Relay) JetStream() *JetStream { return r.js }

// Logger is the relay's logger.
func (r *Relay) Logger() zerolog.Logger { return r.log }

// Registry holds the relay's Prometheus metrics, for the admin API's
// /metrics.
func (r *Relay) Registry() *prometheus.Registry { return r.metrics.reg }

// PollStatus is the poller's status now.
func (r *Relay) PollStatus() poller.Status {
	r.pipeMu.RLock()
	defer r.pipeMu.RUnlock()
	return r.poll.Status()
}

// DeliveryState is the state of the named sink's delivery; the zero
// state when no sink has that name.
func (r *Relay) DeliveryState(name string) sink.DispatcherState {
	o := r.output(name)
	if o == nil {
		return sink.DispatcherState{}
	}
	return o.disp.State()
}

// ErrUnknownSink is returned for a sink name the config does not have.
var ErrUnknownSink = errors.New("no such sink")

// Rewind makes the named sink deliver again from offset from: its
// delivery stops (each partition persisting its cursor), the store
// rewinds its cursor, and delivery resumes from there, pauses cleared.
func (r *Relay) Rewind(ctx context.Context, name string, from uint64) error {
	o := r.output(name)
	if o == nil {
		return fmt.Errorf("sink %q: %w", name, ErrUnknownSink)
	}
	if err := o.disp.Reset(ctx, func() error { return r.db.Rewind(name, from) }); err != nil {
		return err
	}
	r.log.Info().Str("sink", name).Uint64("offset", from).Msg("replay: sink rewound")
	return nil
}

// Resume clears the named sink's pause, and stores that at once, so a
// crash right after does not bring the pause back.
func (r *Relay) Resume(name string) error {
	o := r.output(name)
	if o == nil {
		return fmt.Errorf("sink %q: %w", name, ErrUnknownSink)
	}
	o.disp.Resume()
	r.saveResumed(o)
	r.log.Info().Str("sink", name).Msg("sink resumed")
	return nil
}

// output returns the sink named name, or nil.
func (r *Relay) output(name string) *output {
	for _, o := range r.outputs() {
		if o.cfg.Name == name {
			return o
		}
	}
	return nil
}

// SinkNames lists the configured sinks in order.
func (r *Relay) SinkNames() []string {
	outs := r.outputs()
	names := make([]string, len(outs))
	for i, o := range outs {
		names[i] = o.cfg.Name
	}
	return names
}

// pruneLoop removes delivered events past retention and seen records of
// tasks beyond the lookback window, at start and then every interval.
func (r *Relay) pruneLoop(ctx context.Context) {
	every := min(max(r.Config().Store.Retention.D()/20, time.Minute), time.Hour)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cfg, now := r.Config(), time.Now()
		sinks, err := r.pruneSinks(cfg.Store.Retention.D(), now)
		if err != nil {
			r.log.Warn().Err(err).Msg("prune: read the registry of sinks")
			t.Reset(every)
			continue
		}
		res, err := r.db.Prune(ctx, store.PruneOptions{
			Retention: cfg.Store.Retention.D(),
			Lookback:  cfg.Poll.Lookback.D(),
			Sinks:     sinks,
			Now:       now,
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
