package main

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/store"
	"github.com/incs-relay/incs-relay/store/jsstore"
)

// jsHandle is a jetstream store with the NATS connection it owns: Close
// closes both.
type jsHandle struct {
	*jsstore.Store
	nc *nats.Conn
}

// Close closes the store, then drains and closes its connection.
func (h *jsHandle) Close() error {
	err := h.Store.Close()
	h.nc.Close()
	return err
}

// connected reports whether the connection to the cluster is up.
func (h *jsHandle) connected() bool { return h.nc.IsConnected() }

// jsOpenTimeout bounds connecting to the cluster and opening the store.
const jsOpenTimeout = 15 * time.Second

// openJetStream connects to store.url with the store's authentication and
// opens the jetstream store on it. replicaID is "" for the default
// (<hostname>-<pid>).
func openJetStream(cfg *config.Config, log zerolog.Logger, replicaID string) (*jsHandle, error) {
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
		ReplicaID:  replicaID,
		ConfigHash: cfg.Hash(),
		Logger:     log,
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("store %s: %w", cfg.StoreLabel(), err)
	}
	return &jsHandle{Store: js, nc: nc}, nil
}

// clusterView is what `status`, GET /v1/cluster and the admin page show
// of a jetstream store's replicas.
type clusterView struct {
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
}

// clusterView returns the replica's view, or nil in bbolt mode.
func (r *Relay) clusterView() *clusterView {
	if r.js == nil {
		return nil
	}
	return newClusterView(r.cfg, r.js)
}

func newClusterView(cfg *config.Config, h *jsHandle) *clusterView {
	role := h.Role()
	v := &clusterView{Store: config.StoreJetStream, Name: cfg.Store.Name, Self: role.Self, Leader: role.Leader, Leading: h.IsLeader(),
		Epoch: role.Epoch, LeaseExpires: timePtr(role.LeaseExpires), Lease: cfg.Store.Lease.D().String(), Connected: h.connected(),
		Partitions: h.Partitions(), Owned: role.Owned, Assignments: role.Assignments, Members: role.Members, ConfigHash: cfg.Hash()}
	if v.Owned == nil {
		v.Owned = []int{}
	}
	return v
}

// lines is the cluster part of `status`.
func (v *clusterView) lines() []string {
	lead := "none (no replica holds the lease)"
	if v.Leader != "" {
		lead = v.Leader
		if v.LeaseExpires != nil {
			lead += fmt.Sprintf(", epoch %d, lease %s, expires in %s unless renewed", v.Epoch, v.Lease, roundDur(max(time.Until(*v.LeaseExpires), 0)))
		}
	}
	self := ""
	if v.Self != "" {
		self = ", as replica " + v.Self + " sees it"
	}
	out := []string{fmt.Sprintf("store: jetstream %q, %d partitions%s", v.Name, v.Partitions, self), "leader: " + lead}
	if len(v.Assignments) == 0 {
		out = append(out, "partitions: not assigned yet")
	}
	for _, id := range slices.Sorted(maps.Keys(v.Assignments)) {
		live := ""
		if !slices.Contains(v.Members, id) {
			live = " (not live: they move to a live replica)"
		}
		out = append(out, fmt.Sprintf("delivers: %s partitions %s%s", id, intList(v.Assignments[id]), live))
	}
	if len(v.Members) > 0 {
		out = append(out, "replicas: "+strings.Join(v.Members, ", "))
	} else {
		out = append(out, "replicas: none live")
	}
	if !v.Connected {
		out = append(out, "warning: this replica is not connected to the cluster")
	}
	return out
}

// intList formats partitions compactly: "0-3,7".
func intList(ps []int) string {
	var b strings.Builder
	for i := 0; i < len(ps); {
		j := i
		for j+1 < len(ps) && ps[j+1] == ps[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", ps[i], ps[j])
		} else {
			fmt.Fprintf(&b, "%d", ps[i])
		}
		i = j + 1
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

var _ store.Store = (*jsHandle)(nil)

// cluster serves GET /v1/cluster: the jetstream store's replicas, who
// leads and who delivers which partitions; 404 with a bbolt store.
func (a *adminServer) cluster(w http.ResponseWriter, _ *http.Request) {
	v := a.r.clusterView()
	if v == nil {
		httpError(w, http.StatusNotFound, "no cluster: the store is a bbolt file (store.type: bbolt)")
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// openStoreOnce opens the config's jetstream store for a one-off command.
func openStoreOnce(cfg *config.Config) (store.Store, *adminClient, error) {
	h, err := openJetStream(cfg, zerolog.Nop(), "")
	if err != nil {
		return nil, nil, err
	}
	return h, nil, nil
}

// storeClusterView is the cluster as a one-off command sees it: a
// replica's own view from its admin API (admin.addr) when one answers;
// else the lease, the live replicas and the partition assignment as the
// store holds them.
func storeClusterView(ctx context.Context, cfg *config.Config, h *jsHandle) *clusterView {
	if cfg.Admin.Addr != "" {
		ac := &adminClient{base: "http://" + cfg.Admin.Addr, token: cfg.Admin.Token, http: &http.Client{Timeout: 3 * time.Second}}
		var v clusterView
		if err := ac.do(ctx, http.MethodGet, "/v1/cluster", nil, &v); err == nil && v.Name == cfg.Store.Name {
			return &v
		}
	}
	h.Refresh(ctx)
	v := newClusterView(cfg, h)
	v.Self, v.Leading = "", false
	return v
}

// Metrics of a jetstream replica.
var (
	descLeader     = prometheus.NewDesc(ns+"_replica_leader", "1 while this replica holds the lease and polls (store.type: jetstream).", nil, nil)
	descLeaseLeft  = prometheus.NewDesc(ns+"_replica_lease_remaining_seconds", "Seconds until the lease lapses unless its holder renews it; absent while nobody holds it.", nil, nil)
	descOwned      = prometheus.NewDesc(ns+"_replica_partitions", "Delivery partitions this replica delivers now.", nil, nil)
	descMembers    = prometheus.NewDesc(ns+"_replica_members", "Live replicas of the store, as this replica sees them.", nil, nil)
	descEpoch      = prometheus.NewDesc(ns+"_replica_epoch", "The leader's epoch: it goes up by one at every change of leader.", nil, nil)
	descConnected  = prometheus.NewDesc(ns+"_replica_connected", "1 while this replica's connection to the NATS cluster is up.", nil, nil)
	replicaMetrics = []*prometheus.Desc{descLeader, descLeaseLeft, descOwned, descMembers, descEpoch, descConnected}
)

// replicaCollector reads a jetstream replica's role at scrape time.
type replicaCollector struct{ h *jsHandle }

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
	gauge(descConnected, b2f(c.h.connected()))
}
