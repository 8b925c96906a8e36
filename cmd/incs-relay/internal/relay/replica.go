package relay

// A jetstream replica: building the polling pipeline from the store,
// polling only while this replica holds the lease, delivering the
// partitions it is assigned, migrating store.migrate_from on the first
// start, and the readiness of a replica that follows.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/diff/rules"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/sink/partition"
	"github.com/incs-relay/incs-relay/store"
	"github.com/incs-relay/incs-relay/store/jsstore"
)

// buildPipeline builds the polling half of the relay (Ingester, poller,
// tiers, rules) from the store's state. lead says this process may write:
// only then is the snapshot boundary decided (it is stored on the first
// start). A jetstream replica calls it at open (lead false: it shows an
// idle poller) and again each time it wins the lease, so the new term
// starts from what the last leader stored.
func (r *Relay) buildPipeline(lead bool) error {
	cfg := r.Config()
	initialized, err := r.db.Initialized()
	if err != nil {
		return err
	}
	ing := &Ingester{db: r.db, loc: cfg.Location(), log: r.log.With().Str("component", "ingest").Logger(), metrics: r.metrics}
	if lead && cfg.Poll.Initial == "snapshot" {
		if ing.boundary, err = snapshotBoundary(r.db, initialized, time.Now()); err != nil {
			return err
		}
	}
	plog := r.log.With().Str("component", "poller").Logger()
	poll := poller.New(r.client, r.pcfg, ing, plog)
	var tiers *poller.Tiered
	if cfg.Poll.Strategy == "tiered" {
		tiers = poller.NewTiered(r.pcfg, r.db, plog)
		poll.Strategy = tiers
		ing.tiers = tiers
	}
	var eng *rules.Engine
	if rs := cfg.ValidRules(); len(rs) > 0 {
		eng = rules.NewEngine(rs, cfg.Location())
		if err := r.db.RuleStates(eng.Load); err != nil {
			return err
		}
		ing.rules = eng
		poll.Strategy = newRuleStrategy(poll.Strategy, tiers, eng, ing)
	}
	r.pipeMu.Lock()
	r.poll, r.ingest, r.tiers, r.rules = poll, ing, tiers, eng
	r.pipeMu.Unlock()
	return nil
}

// runReplica is Run for a jetstream store: the store campaigns for the
// lease; while this replica holds it, it polls (leadLoop); all the while
// it delivers the partitions assigned to it (partitioned dispatchers).
// When ctx ends it stops polling, drains deliveries, then releases the
// lease and its partitions. It returns an error when the store's Run
// fails, e.g. because the leader runs another config.
func (r *Relay) runReplica(ctx context.Context) error {
	// With store.migrate_from on an empty store nothing is delivered
	// until the migration brought the cursors over; a file that is not
	// there is bad input, found before anything starts.
	awaitMigration := false
	if from := r.Config().Store.MigrateFrom; from != "" {
		empty, err := StoreEmpty(r.db)
		awaitMigration = err == nil && empty
		if err := checkMigrateFrom(r.Config(), from); awaitMigration && err != nil {
			r.closeStopped()
			return err
		}
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	jsCtx, stopJS := context.WithCancel(context.WithoutCancel(ctx))
	defer stopJS()

	if r.admin != nil {
		r.admin.Start()
	}
	leadCh, unsubLead := r.roles.sub()
	defer unsubLead()
	jsDone := make(chan error, 1)
	go func() { jsDone <- r.js.Run(jsCtx) }()
	go r.roles.pump(jsCtx, r.js.Changes())
	go r.pumpRewound(jsCtx)

	deliverCtx, stopDeliver := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDeliver()
	started := make(chan struct{})
	go func() {
		defer close(started)
		if awaitMigration && !r.waitMigrated(deliverCtx) {
			return
		}
		r.runDispatchers(deliverCtx)
	}()
	leadDone := make(chan struct{})
	go func() {
		defer close(leadDone)
		r.leadLoop(runCtx, leadCh)
	}()
	stateDone := make(chan struct{})
	go func() {
		defer close(stateDone)
		r.states.run(runCtx)
	}()
	role := r.js.Role()
	r.log.Info().Str("store", r.Config().StoreLabel()).Str("replica", role.Self).Str("upstream", config.HostOf(r.Config().Upstream.BaseURL)).
		Int("sinks", len(r.outputs())).Str("admin", r.AdminAddr()).Msg("relay replica running")

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-jsDone:
		jsDone = nil
		if runErr == nil {
			runErr = errors.New("store: leadership stopped")
		}
		r.log.Error().Err(runErr).Msg("store stopped; shutting down")
	}
	r.log.Info().Msg("stopping: polling stops, deliveries under way finish")
	stop()
	<-leadDone
	<-stateDone
	<-started
	r.stopDelivery(stopDeliver)
	r.saveSinkStates()
	stopJS() // releases the lease and the partitions
	if jsDone != nil {
		<-jsDone
	}
	r.closeStopped()
	return runErr
}

// leadLoop polls while this replica holds the lease: each time it wins,
// it migrates (store.migrate_from, first start only), rebuilds the
// pipeline from the store and runs the poller and retention; when it
// loses the lease it stops them at once (an append after that is fenced
// by the store anyway).
func (r *Relay) leadLoop(ctx context.Context, changes <-chan struct{}) {
	var t *term
	var lastErr string                   // logged once until it changes
	check := time.NewTicker(time.Second) // besides Changes: a lapsed lease
	defer check.Stop()
	for {
		switch leading := r.js.IsLeader(); {
		case leading && t == nil:
			var err error
			if t, err = r.startTerm(ctx); err != nil {
				if err.Error() != lastErr {
					r.log.Error().Err(err).Msg("cannot start polling as the leader; trying again every second")
				}
				lastErr, t = err.Error(), nil
			} else {
				lastErr = ""
			}
		case !leading && t != nil:
			r.log.Warn().Msg("lease lost: polling stops; another replica takes over")
			t.stop()
			t = nil
		}
		select {
		case <-ctx.Done():
			if t != nil {
				t.stop()
			}
			return
		case <-changes:
		case <-check.C:
		case <-r.reload.repoll:
			// A reload changed the strategy, rules or calendars: the
			// term's polling is built again (the lease is kept).
			if t != nil {
				r.pipeMu.RLock()
				prev := r.poll
				r.pipeMu.RUnlock()
				t.stop()
				var err error
				if t, err = r.startTerm(ctx); err != nil {
					r.log.Error().Err(err).Msg("reload: cannot start polling again; trying again every second")
					t = nil
				} else {
					r.pipeMu.RLock()
					r.poll.CarryStatus(prev)
					r.pipeMu.RUnlock()
				}
			}
		}
	}
}

// term is one leadership term's polling.
type term struct {
	r      *Relay
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *Relay) startTerm(ctx context.Context) (*term, error) {
	if err := r.migrateOnFirstStart(ctx); err != nil {
		return nil, err
	}
	if err := r.buildPipeline(true); err != nil {
		return nil, err
	}
	r.pipeMu.RLock()
	poll := r.poll
	r.pipeMu.RUnlock()
	tctx, cancel := context.WithCancel(ctx)
	t := &term{r: r, cancel: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		withStage(tctx, stagePoll, func(tctx context.Context) {
			if err := poll.Run(tctx); err != nil && !errors.Is(err, context.Canceled) {
				r.log.Error().Err(err).Msg("poller stopped")
			}
		})
	}()
	go func() {
		defer wg.Done()
		r.pruneLoop(tctx)
	}()
	go func() {
		wg.Wait()
		close(t.done)
	}()
	r.leadSince.Store(time.Now().UnixNano())
	role := r.js.Role()
	r.log.Info().Uint64("epoch", role.Epoch).Msg("leading: polling the API")
	return t, nil
}

// stop ends the term's polling and stores what the last page read, unless
// the store refuses it because another replica leads now.
func (t *term) stop() {
	t.r.leadSince.Store(0)
	t.cancel()
	<-t.done
	t.r.pipeMu.RLock()
	ing := t.r.ingest
	t.r.pipeMu.RUnlock()
	if err := ing.flush(); err != nil && !errors.Is(err, context.Canceled) {
		if errors.Is(err, jsstore.ErrNotLeader) || errors.Is(err, jsstore.ErrFenced) {
			t.r.log.Info().Err(err).Msg("last page not stored: the next leader reads it again")
		} else {
			t.r.log.Warn().Err(err).Msg("last page not stored; the next leader reads it again")
		}
	}
}

// migrateOnFirstStart carries store.migrate_from over into an empty
// store: no event, no seen record and no completed sweep yet.
func (r *Relay) migrateOnFirstStart(ctx context.Context) error {
	from := r.Config().Store.MigrateFrom
	if from == "" {
		return nil
	}
	empty, err := StoreEmpty(r.db)
	if err != nil || !empty {
		return err
	}
	res, err := MigrateFile(ctx, r.Config(), r.js, from)
	if err != nil {
		return err
	}
	if err := r.db.SetMeta(migratedKey, []byte(from)); err != nil {
		return err
	}
	r.log.Info().Str("from", from).Int("events", res.Events).Uint64("head", res.Head).Int("tasks", res.Tasks).
		Int("sinks", res.Sinks).Msg("store.migrate_from: bbolt store carried over")
	return nil
}

// migratedKey is the store meta key that says store.migrate_from was
// carried over: replicas that started on the empty store deliver then.
const migratedKey = "migrate/from"

// waitMigrated waits until the store says the migration is done; false
// when ctx ended first.
func (r *Relay) waitMigrated(ctx context.Context) bool {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		if _, err := r.db.Meta(migratedKey); err == nil {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// StoreEmpty reports whether db holds no event and finished no sweep.
func StoreEmpty(db store.Store) (bool, error) {
	head, err := db.Head()
	if err != nil {
		return false, err
	}
	init, err := db.Initialized()
	if err != nil {
		return false, err
	}
	return head == 0 && !init, nil
}

// MigrateFile opens the bbolt file from (it must exist and not be in use)
// and migrates it into dst, which must lead.
func MigrateFile(ctx context.Context, cfg *config.Config, dst *JetStream, from string) (jsstore.MigrateResult, error) {
	if err := checkMigrateFrom(cfg, from); err != nil {
		return jsstore.MigrateResult{}, err
	}
	src, err := store.Open(from, store.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return jsstore.MigrateResult{}, fmt.Errorf("migrate: %s is in use by a running relay: stop it first", from)
		}
		return jsstore.MigrateResult{}, fmt.Errorf("migrate: %w", err)
	}
	defer src.Close()
	res, err := jsstore.Migrate(ctx, dst.Store, src)
	if err != nil {
		return res, fmt.Errorf("migrate %s: %w", from, err)
	}
	return res, nil
}

// checkMigrateFrom returns a *config.Error naming store.migrate_from when
// the file from is not there.
func checkMigrateFrom(cfg *config.Config, from string) error {
	if _, err := os.Stat(from); err != nil {
		msg := err.Error()
		if u := errors.Unwrap(err); u != nil {
			msg = u.Error()
		}
		return cfg.KeyError("store.migrate_from", "cannot read "+from+": "+msg)
	}
	return nil
}

// pumpRewound passes the store's rewind notices to the partitioned
// dispatcher of the sink named, so its running partitions reread their
// cursors.
func (r *Relay) pumpRewound(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case name := <-r.js.Rewound():
			if o := r.output(name); o != nil {
				if p, ok := o.disp.(*partition.Dispatcher); ok {
					p.Rewound()
				}
			}
		}
	}
}

// fanout passes one signal channel on to several subscribers.
type fanout struct {
	mu   sync.Mutex
	subs []chan struct{}
}

// sub returns a new subscription, buffered 1, and the func that ends it.
func (f *fanout) sub() (_ <-chan struct{}, unsub func()) {
	ch := make(chan struct{}, 1)
	f.mu.Lock()
	f.subs = append(f.subs, ch)
	f.mu.Unlock()
	return ch, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.subs = slices.DeleteFunc(f.subs, func(c chan struct{}) bool { return c == ch })
	}
}

// pump signals every subscriber after each receive on src, until ctx ends.
func (f *fanout) pump(ctx context.Context, src <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-src:
		}
		f.mu.Lock()
		for _, ch := range f.subs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
		f.mu.Unlock()
	}
}

// replicaNotReady is the readiness of a jetstream replica that does not
// lead: it is ready when it reaches the cluster, a live replica holds
// the lease and its tail reads the stream (not TailStatus.Broken). ok is
// false on the leader, whose polls decide instead.
func (r *Relay) replicaNotReady(now time.Time) (reason string, follower bool) {
	if r.js == nil || r.js.IsLeader() {
		return "", false
	}
	if !r.js.Connected() {
		return "not connected to the NATS cluster", true
	}
	role := r.js.Role()
	if role.Leader == "" || !role.LeaseExpires.After(now) {
		return "no replica holds the lease: polling stopped until one wins it", true
	}
	// One skipped bad message is logged and counted, not a reason: only a
	// tail that fails message after message (so it stopped following).
	if ts := r.js.TailErrors(); ts.Broken() {
		return fmt.Sprintf("the store's tail cannot read the stream (%d messages in a row): %s", ts.Consecutive, ts.LastError), true
	}
	return "", true
}
