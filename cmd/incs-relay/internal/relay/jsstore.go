package relay

// The jetstream store as the relay uses it: connecting to the cluster
// with the store's options, what a replica shows of the cluster, and the
// replica's metrics.

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/store"
	"github.com/incs-relay/incs-relay/store/jsstore"
)

// JetStream is a jetstream store with the NATS connection it owns: Close
// closes both.
type JetStream struct {
	*jsstore.Store
	nc *nats.Conn
}

// Close closes the store, then drains and closes its connection.
func (h *JetStream) Close() error {
	err := h.Store.Close()
	h.nc.Close()
	return err
}

// Connected reports whether the connection to the cluster is up.
func (h *JetStream) Connected() bool { return h.nc.IsConnected() }

// jsOpenTimeout bounds connecting to the cluster and opening the store.
const jsOpenTimeout = 15 * time.Second

// openJetStream connects to store.url with the store's authentication and
// opens the jetstream store on it. replicaID is "" for the default
// (<hostname>-<pid>).
func OpenJetStream(cfg *config.Config, log zerolog.Logger, replicaID string) (*JetStream, error) {
	return openJetStream(cfg, log, replicaID, false)
}

// OpenJetStreamReader opens the jetstream store for a one-off command
// (status, events, replay; jsstore.Options.Reader): it reads no seen
// records, so its cost does not follow the tasks' histories.
func OpenJetStreamReader(cfg *config.Config, log zerolog.Logger) (*JetStream, error) {
	return openJetStream(cfg, log, "", true)
}

func openJetStream(cfg *config.Config, log zerolog.Logger, replicaID string, reader bool) (*JetStream, error) {
	opts, err := cfg.NATSOptions("store", cfg.Store.NATSAuth)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(cfg.Store.URL, append(opts,
		nats.Name("incs-relay store "+cfg.Store.Name),
		nats.Timeout(5*time.Second),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("store: nats disconnected")
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info().Str("server", c.ConnectedUrlRedacted()).Msg("store: nats reconnected")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Error().Err(err).Msg("store: nats")
		}),
	)...)
	if err != nil {
		return nil, fmt.Errorf("store %s: connect: %w", cfg.StoreLabel(), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), jsOpenTimeout)
	defer cancel()
	js, err := jsstore.Open(ctx, nc, jsstore.Options{
		Name:       cfg.Store.Name,
		Replicas:   cfg.Store.Replicas,
		Lease:      cfg.Store.Lease.D(),
		Partitions: cfg.Store.Partitions,
		CacheBytes: cfg.Store.CacheMB << 20,
		ReplicaID:  replicaID,
		ConfigHash: cfg.Hash(),
		Logger:     log,
		Reader:     reader,
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("store %s: %w", cfg.StoreLabel(), err)
	}
	return &JetStream{Store: js, nc: nc}, nil
}

// ClusterView is what `status`, GET /v1/cluster and the admin page show
// of a jetstream store's replicas.
type ClusterView struct {
	Store        string           `json:"store"` // "jetstream"
	Name         string           `json:"name"`
	Self         string           `json:"self"`
	Leader       string           `json:"leader"` // "" while none holds the lease
	Leading      bool             `json:"leading"`
	Epoch        uint64           `json:"epoch"`
	LeaseExpires *time.Time       `json:"lease_expires,omitempty"`
	Lease        string           `json:"lease"`
	Connected    bool             `json:"connected"`
	Partitions   int              `json:"partitions"`
	Owned        []int            `json:"owned"`
	Assignments  map[string][]int `json:"assignments"`
	Members      []string         `json:"members"`
	ConfigHash   string           `json:"config_hash"`
	// Configs is each live replica's config digest (its file as read,
	// config.Config.Digest); ConfigsDiffer is set when they are not all
	// the same (a rolling reload under way, or files that differ).
	Configs       map[string]string `json:"configs"`
	ConfigsDiffer bool              `json:"configs_differ"`
}

// ClusterView returns the replica's view, or nil in bbolt mode.
func (r *Relay) ClusterView() *ClusterView {
	if r.js == nil {
		return nil
	}
	return NewClusterView(r.Config(), r.js)
}

// NewClusterView is the cluster as h sees it.
func NewClusterView(cfg *config.Config, h *JetStream) *ClusterView {
	role := h.Role()
	v := &ClusterView{Store: config.StoreJetStream, Name: cfg.Store.Name, Self: role.Self, Leader: role.Leader, Leading: h.IsLeader(),
		Epoch: role.Epoch, LeaseExpires: timePtr(role.LeaseExpires), Lease: cfg.Store.Lease.D().String(), Connected: h.Connected(),
		Partitions: h.Partitions(), Owned: role.Owned, Assignments: role.Assignments, Members: role.Members, ConfigHash: cfg.Hash(),
		Configs: role.Configs, ConfigsDiffer: distinctConfigs(role.Configs) > 1}
	if v.Configs == nil {
		v.Configs = map[string]string{}
	}
	if v.Owned == nil {
		v.Owned = []int{}
	}
	return v
}

var _ store.Store = (*JetStream)(nil)

// Metrics of a jetstream replica.
var (
	descLeader     = prometheus.NewDesc(ns+"_replica_leader", "1 while this replica holds the lease and polls (store.type: jetstream).", nil, nil)
	descLeaseLeft  = prometheus.NewDesc(ns+"_replica_lease_remaining_seconds", "Seconds until the lease lapses unless its holder renews it; absent while nobody holds it.", nil, nil)
	descOwned      = prometheus.NewDesc(ns+"_replica_partitions", "Delivery partitions this replica delivers now.", nil, nil)
	descMembers    = prometheus.NewDesc(ns+"_replica_members", "Live replicas of the store, as this replica sees them.", nil, nil)
	descEpoch      = prometheus.NewDesc(ns+"_replica_epoch", "The leader's epoch: it goes up by one at every change of leader.", nil, nil)
	descConnected  = prometheus.NewDesc(ns+"_replica_connected", "1 while this replica's connection to the NATS cluster is up.", nil, nil)
	descTailErrors = prometheus.NewDesc(ns+"_replica_tail_errors_total", "Stream messages this replica's tail skipped because it could not read them (no metadata, a record that does not parse).", nil, nil)
	descPurgeFail  = prometheus.NewDesc(ns+"_store_purge_failures_total", "Purges of pruned event messages (one partition each) that failed; the next prune retries them (store.type: jetstream).", nil, nil)
	descPruneFloor = prometheus.NewDesc(ns+"_store_prune_floor", "The prune floor: events at or below this offset are pruned (store.type: jetstream).", nil, nil)
	descConfigs    = prometheus.NewDesc(ns+"_replica_configs", "Distinct config files (by digest) the live replicas run, as their heartbeats say: above 1 while a rolling reload is under way, or when the replicas' files differ.", nil, nil)
	descRecMsgs    = prometheus.NewDesc(ns+"_store_record_messages", "Stream messages holding a current seen record or rule state, as this replica's view counts them (store.type: jetstream).", nil, nil)
	descRecFail    = prometheus.NewDesc(ns+"_store_record_delete_failures_total", "Deletions of record messages (seen records, rule states) that hold no current record that failed; the leader retries them after its next commit (store.type: jetstream).", nil, nil)
	replicaMetrics = []*prometheus.Desc{descLeader, descLeaseLeft, descOwned, descMembers, descEpoch, descConnected, descTailErrors, descPurgeFail, descPruneFloor, descConfigs, descRecMsgs, descRecFail}
)

// replicaCollector reads a jetstream replica's role at scrape time.
type replicaCollector struct{ h *JetStream }

func (c replicaCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range replicaMetrics {
		ch <- d
	}
}

func (c replicaCollector) Collect(ch chan<- prometheus.Metric) {
	role := c.h.Role()
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	gauge(descLeader, b2f(c.h.IsLeader()))
	if role.Leader != "" && !role.LeaseExpires.IsZero() {
		gauge(descLeaseLeft, max(time.Until(role.LeaseExpires).Seconds(), 0))
	}
	gauge(descOwned, float64(len(role.Owned)))
	gauge(descMembers, float64(len(role.Members)))
	gauge(descEpoch, float64(role.Epoch))
	gauge(descConnected, b2f(c.h.Connected()))
	ch <- prometheus.MustNewConstMetric(descTailErrors, prometheus.CounterValue, float64(c.h.TailErrors().Errors))
	ps := c.h.PruneStatus()
	ch <- prometheus.MustNewConstMetric(descPurgeFail, prometheus.CounterValue, float64(ps.PurgeFailures))
	gauge(descPruneFloor, float64(ps.Floor))
	gauge(descConfigs, float64(distinctConfigs(role.Configs)))
	pk := c.h.PackStats()
	gauge(descRecMsgs, float64(pk.Messages))
	ch <- prometheus.MustNewConstMetric(descRecFail, prometheus.CounterValue, float64(pk.Failed))
}

// distinctConfigs counts the different digests in configs.
func distinctConfigs(configs map[string]string) int {
	seen := map[string]bool{}
	for _, d := range configs {
		seen[d] = true
	}
	return len(seen)
}
