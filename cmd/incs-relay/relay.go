package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/diff/rules"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/store"
)

// Relay is the whole pipeline of one config: poller → diff → store → sinks,
// plus the admin API. OpenRelay builds it; Run runs it until ctx ends.
type Relay struct {
	cfg     *Config
	log     zerolog.Logger
	db      *store.DB
	client  *poller.Client
	poll    *poller.Poller
	ingest  *ingester
	tiers   *poller.Tiered // nil with poll.strategy: full
	rules   *rules.Engine  // nil without rules
	outs    []*output
	admin   *adminServer
	metrics *metrics
	started time.Time
	savedMu sync.Mutex // guards output.saved
}

// output is one configured sink with its dispatcher.
type output struct {
	cfg   SinkConfig
	sink  sink.Sink
	disp  *sink.Dispatcher
	saved store.SinkState // last state written to the store
}

// relayOptions are knobs for tests and the demo.
type relayOptions struct {
	// HTTPClient for the upstream API; nil builds one.
	HTTPClient *http.Client
	// Observer also receives every delivery outcome (the demo's printer).
	Observer sink.Observer
}

// OpenRelay opens the store, connects the sinks and binds the admin
// address. On error everything opened so far is closed again.
func OpenRelay(ctx context.Context, cfg *Config, log zerolog.Logger, opts relayOptions) (_ *Relay, err error) {
	r := &Relay{cfg: cfg, log: log, started: time.Now()}
	defer func() {
		if err != nil {
			r.close(context.Background())
		}
	}()
	r.db, err = store.Open(cfg.Store.Path, store.Options{Timeout: 2 * time.Second, Logger: log.With().Str("component", "store").Logger()})
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return nil, fmt.Errorf("store %s is taken: another incs-relay is running on it (stop it, or use its admin API at %s)", cfg.Store.Path, cfg.Admin.Addr)
		}
		return nil, err
	}
	r.metrics = newMetrics(r)

	httpClient := opts.HTTPClient
	if httpClient == nil {
		httpClient = &http.Client{Transport: r.metrics.instrumentAPI(http.DefaultTransport.(*http.Transport).Clone())}
	}
	pcfg := cfg.pollerConfig()
	pcfg.HTTPClient = httpClient
	r.client = poller.NewClient(pcfg, log.With().Str("component", "poller").Logger())
	initialized, err := r.db.Initialized()
	if err != nil {
		return nil, err
	}
	r.ingest = &ingester{db: r.db, loc: cfg.Location(), log: log.With().Str("component", "ingest").Logger(), metrics: r.metrics}
	if cfg.Poll.Initial == "snapshot" {
		r.ingest.boundary, err = snapshotBoundary(r.db, initialized, time.Now())
		if err != nil {
			return nil, err
		}
	}
	plog := log.With().Str("component", "poller").Logger()
	r.poll = poller.New(r.client, pcfg, r.ingest, plog)
	if cfg.Poll.Strategy == "tiered" {
		r.tiers = poller.NewTiered(pcfg, r.db, plog)
		r.poll.Strategy = r.tiers
		r.ingest.tiers = r.tiers
	}
	if rs := cfg.ValidRules(); len(rs) > 0 {
		r.rules = rules.NewEngine(rs, cfg.Location())
		if err := r.db.RuleStates(r.rules.Load); err != nil {
			return nil, err
		}
		r.ingest.rules = r.rules
		r.poll.Strategy = newRuleStrategy(r.poll.Strategy, r.tiers, r.rules, r.ingest)
	}

	var obs sink.Observer = r.metrics
	if opts.Observer != nil {
		obs = multiObserver{r.metrics, opts.Observer}
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
		o.disp = sink.NewDispatcher(sink.DispatcherConfig{
			Paused:      pausedReason,
			Sink:        s,
			Filter:      filter,
			MaxInFlight: maxInFlight(sc),
			Retry:       retryPolicy(sc),
			Outbox:      r.db,
			Logger:      log, // the dispatcher adds "sink"
			Observer:    obs,
		})
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
	var wg sync.WaitGroup
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	deliverCtx, stopDeliver := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDeliver()

	if r.admin != nil {
		r.admin.Start()
	}
	for _, o := range r.outs {
		wg.Add(1)
		go func(o *output) {
			defer wg.Done()
			if err := o.disp.Run(deliverCtx); err != nil {
				r.log.Error().Err(err).Str("sink", o.cfg.Name).Msg("dispatcher stopped")
			}
		}(o)
	}
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
		r.stateLoop(pollCtx)
	}()
	r.log.Info().Str("store", r.cfg.Store.Path).Str("upstream", hostOf(r.cfg.Upstream.BaseURL)).
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
	wg.Wait()
	r.saveSinkStates()
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r.close(closeCtx)
	r.log.Info().Msg("stopped")
	return nil
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

// stateLoop persists each sink's pause and last error, so that `status`
// shows them while the relay is down and a pause survives a restart.
func (r *Relay) stateLoop(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.saveSinkStates()
		}
	}
}

func (r *Relay) saveSinkStates() {
	r.savedMu.Lock()
	defer r.savedMu.Unlock()
	for _, o := range r.outs {
		st := o.disp.State()
		ss := store.SinkState{
			Paused: st.Paused, PauseReason: st.PauseReason,
			LastError: o.saved.LastError, LastErrorAt: o.saved.LastErrorAt, LastDeliveryAt: o.saved.LastDeliveryAt,
		}
		if st.LastError != "" {
			ss.LastError, ss.LastErrorAt = st.LastError, st.LastErrorAt
		}
		if !st.LastDeliveryAt.IsZero() {
			ss.LastDeliveryAt = st.LastDeliveryAt
		}
		if ss == o.saved {
			continue
		}
		if err := r.db.SetSinkState(o.cfg.Name, ss); err != nil {
			r.log.Warn().Err(err).Str("sink", o.cfg.Name).Msg("save sink state")
			continue
		}
		o.saved = ss
	}
}

// saveResumed records at once that an operator resumed o.
func (r *Relay) saveResumed(o *output) {
	r.savedMu.Lock()
	defer r.savedMu.Unlock()
	ss := o.saved
	ss.Paused, ss.PauseReason = false, ""
	if err := r.db.SetSinkState(o.cfg.Name, ss); err != nil {
		r.log.Warn().Err(err).Str("sink", o.cfg.Name).Msg("save sink state")
		return
	}
	o.saved = ss
}

// ingester is the poller's Handler: it diffs and stores each page, and
// ends the first-start snapshot once a sweep completed.
type ingester struct {
	db      *store.DB
	loc     *time.Location
	log     zerolog.Logger
	metrics *metrics
	// boundary is the snapshot boundary (poll.initial: snapshot): a log
	// created before it never becomes an event. Zero with initial: replay
	// and on stores initialized before the boundary was kept.
	boundary time.Time
	future   atomic.Bool   // a created_at in the future was logged
	sweeps   atomic.Int64  // cycles that completed
	tiers    forgetter     // told to re-read tasks left unseen; nil without tiers
	rules    *rules.Engine // evaluates every read; nil without rules

	// pending receives the outcome of the page whose commit is under way;
	// nil when none is. Only the poller's goroutine (or Run, once the
	// poller stopped) touches it.
	pending chan ingestOutcome
}

// forgetter is the part of poller.Tiered the ingester uses.
type forgetter interface{ Forget(ids ...int64) }

// ingestOutcome is what one page's Ingest did.
type ingestOutcome struct {
	tasks []diff.Task
	res   store.IngestResult
	err   error
}

// HandlePage hands one page to the store and returns the outcome of the
// previous page's commit, without waiting for this one: the poller fetches
// and decodes the next page while the store syncs the file, and a commit
// whose fsync takes long (100-300 ms happen on a busy disk) no longer
// stalls polling; pages handed over meanwhile commit together. A failed
// commit is reported by the next HandlePage, SweepDone or flush, which all
// come after the poller observed the page: its tasks are then forgotten by
// the tiers, so the next read hands them over again. A task whose logs do
// not diff is logged and left unseen the same way; it does not fail the
// sweep.
func (h *ingester) HandlePage(ctx context.Context, tasks []diff.Task) error {
	ch := make(chan ingestOutcome, 1)
	h.checkClock(tasks)
	go func() {
		res, err := h.db.IngestAfter(ctx, tasks, h.loc, h.boundary)
		ch <- ingestOutcome{tasks: tasks, res: res, err: err}
	}()
	prev := h.pending
	h.pending = ch
	if prev == nil {
		return nil
	}
	return h.finish(<-prev)
}

// flush waits for the commit under way, if any, and returns its outcome.
func (h *ingester) flush() error {
	if h.pending == nil {
		return nil
	}
	ch := h.pending
	h.pending = nil
	return h.finish(<-ch)
}

func (h *ingester) finish(o ingestOutcome) error {
	h.metrics.ingested(o.res)
	var de *store.DiffError
	if errors.As(o.err, &de) {
		if h.tiers != nil {
			h.tiers.Forget(de.TaskIDs...)
		}
		h.log.Warn().Ints64("task_ids", de.TaskIDs).Err(de.Err).Msg("tasks left unseen: their logs do not parse")
		return nil
	}
	if o.err != nil && h.tiers != nil {
		ids := make([]int64, len(o.tasks))
		for i := range o.tasks {
			ids[i] = o.tasks[i].ID
		}
		h.tiers.Forget(ids...)
	}
	return o.err
}

// SweepDone records that a first sweep completed.
func (h *ingester) SweepDone(ctx context.Context, s poller.SweepStats) error {
	if err := h.flush(); err != nil {
		return err
	}
	if h.sweeps.Add(1) > 1 {
		return nil
	}
	ok, err := h.db.Initialized()
	if err != nil || ok {
		return err
	}
	if err := h.db.SetInitialized(); err != nil {
		return err
	}
	if !h.boundary.IsZero() {
		h.log.Info().Int("tasks", s.Tasks).Time("boundary", h.boundary).
			Msg("first sweep done: logs created before the boundary are marked seen without events (poll.initial: snapshot); every later log becomes an event")
	}
	return nil
}

// snapshotKey is the store meta key of the snapshot boundary.
const snapshotKey = "snapshot/boundary"

// snapshotBoundary returns the snapshot boundary of the store, deciding
// it as now, to the second, on a store that has none and whose first sweep
// has not completed. It is kept before the first request, so a restart
// during the first sweep keeps it. A store initialized before boundaries
// were kept has none (zero): every new log becomes an event, as before.
func snapshotBoundary(db *store.DB, initialized bool, now time.Time) (time.Time, error) {
	if b, err := db.Meta(snapshotKey); err == nil {
		t, perr := time.Parse(time.RFC3339, string(b))
		if perr != nil {
			return time.Time{}, fmt.Errorf("store: snapshot boundary %q: %w", b, perr)
		}
		return t, nil
	}
	if initialized {
		return time.Time{}, nil
	}
	b := now.Truncate(time.Second)
	if err := db.SetMeta(snapshotKey, []byte(b.UTC().Format(time.RFC3339))); err != nil {
		return time.Time{}, err
	}
	return b, nil
}

// futureSlack is how far a task's updated_at may lie ahead of this host's
// clock before the relay warns that upstream.timezone is likely wrong.
const futureSlack = 2 * time.Minute

// checkClock warns once when a task was updated in the future, read in
// upstream.timezone: the zone is wrong or the clocks differ, and the
// snapshot boundary and every event time with it are off.
func (h *ingester) checkClock(tasks []diff.Task) {
	if h.future.Load() {
		return
	}
	limit := time.Now().Add(futureSlack)
	for i := range tasks {
		at, err := diff.ParseTime(tasks[i].UpdatedAt, h.loc)
		if err == nil && at.After(limit) && h.future.CompareAndSwap(false, true) {
			h.log.Warn().Int64("task_id", tasks[i].ID).Str("updated_at", tasks[i].UpdatedAt).Str("timezone", h.loc.String()).
				Msg("a task was updated in the future by this host's clock: check upstream.timezone and the clocks; the snapshot boundary and event times depend on them")
			return
		}
	}
}

// pollerConfig is the poller's view of the config.
func (c *Config) pollerConfig() poller.Config {
	return poller.Config{
		BaseURL:   c.Upstream.BaseURL,
		Token:     c.Upstream.Token,
		Location:  c.Location(),
		PageSize:  c.Upstream.PageSize,
		RateLimit: c.Upstream.RateLimit,
		Timeout:   c.Upstream.Timeout.D(),
		Lookback:  c.Poll.Lookback.D(),
		Interval:  c.Poll.Interval.D(),
		FullSweep: c.Poll.FullSweep.D(),
		OpenSweep: c.Poll.OpenSweep.D(),
		Budget:    c.EffectiveBudget(),
	}
}

// maxInFlight is sc's max_in_flight, or the default for its type.
func maxInFlight(sc SinkConfig) int {
	if sc.MaxInFlight > 0 {
		return sc.MaxInFlight
	}
	if sc.Type == SinkNATS {
		return sink.DefaultNATSMaxInFlight
	}
	return sink.DefaultMaxInFlight
}

func retryPolicy(sc SinkConfig) sink.RetryPolicy {
	if sc.Retry == nil {
		return sink.RetryPolicy{}.WithDefaults()
	}
	return sink.RetryPolicy{Initial: sc.Retry.Initial.D(), Max: sc.Retry.Max.D(), MaxElapsed: sc.Retry.MaxElapsed.D()}.WithDefaults()
}

// hostOf returns the host of a URL, never its path, query or user info.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "?"
	}
	return u.Host
}

// embeddedDir is where an embedded NATS server keeps JetStream data: next
// to the store.
func embeddedDir(cfg *Config) string {
	return filepath.Join(filepath.Dir(cfg.Store.Path), "nats")
}

// multiObserver fans delivery outcomes out to several observers.
type multiObserver []sink.Observer

func (m multiObserver) Delivered(s string, ev *diff.Event, d time.Duration) {
	for _, o := range m {
		o.Delivered(s, ev, d)
	}
}
func (m multiObserver) Retried(s string, ev *diff.Event, a int, err error) {
	for _, o := range m {
		o.Retried(s, ev, a, err)
	}
}
func (m multiObserver) DeadLettered(s string, ev *diff.Event, err error) {
	for _, o := range m {
		o.DeadLettered(s, ev, err)
	}
}
func (m multiObserver) Paused(s string, err error) {
	for _, o := range m {
		o.Paused(s, err)
	}
}
func (m multiObserver) Failing(s string, err error) {
	for _, o := range m {
		o.Failing(s, err)
	}
}
