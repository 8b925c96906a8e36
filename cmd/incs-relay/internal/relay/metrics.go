package relay

// The relay's Prometheus metrics: its observer of the API client, the
// Ingester and the dispatchers, and the gauges read at scrape time.

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/store"
)

// metrics holds the relay's Prometheus collectors, all named incs_relay_*
// (docs/metrics.md lists them). Counters are fed by the pipeline: the API
// client's RoundTripper, the Ingester and the dispatchers' Observer hooks;
// gauges (lag, outbox size, ...) and the poll counters are read at scrape
// time by stateCollector. Its methods are safe for concurrent use.
type metrics struct {
	r   *Relay
	reg *prometheus.Registry

	apiRequests *prometheus.CounterVec
	apiLatency  prometheus.Histogram
	events      *prometheus.CounterVec
	ingestTasks *prometheus.CounterVec
	deliveries  *prometheus.CounterVec
	retries     *prometheus.CounterVec
	deliveryLat *prometheus.HistogramVec
	sinkFailing *prometheus.CounterVec
	refused     *prometheus.CounterVec
	deletions   prometheus.Counter
	// The last reload's outcome, named as Prometheus names its own.
	reloadOK     prometheus.Gauge
	reloadOKTime prometheus.Gauge
}

const ns = "incs_relay"

// Delivery outcomes, the outcome label of incs_relay_deliveries_total.
const (
	outcomeDelivered    = "delivered"
	outcomeDeadLettered = "dead_lettered"
)

func newMetrics(r *Relay) *metrics {
	m := &metrics{r: r, reg: prometheus.NewRegistry()}
	m.apiRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "api_requests_total",
		Help: "Requests to the incsapp API by HTTP outcome: ok (2xx), unauthorized (401, 403), rate_limited (429), server_error (5xx), client_error (other), error (no response).",
	}, []string{"outcome"})
	m.apiLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: ns, Name: "api_request_duration_seconds",
		Help:    "Latency of requests to the incsapp API, to the response headers.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
	})
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "events_total",
		Help: "Events appended to the outbox, by type.",
	}, []string{"type"})
	m.ingestTasks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "ingested_tasks_total",
		Help: "Tasks read from the API by what they needed: changed (had new logs), unchanged, failed (logs did not parse).",
	}, []string{"result"})
	m.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "deliveries_total",
		Help: "Events a sink is done with, by outcome: delivered (acknowledged) or dead_lettered.",
	}, []string{"sink", "outcome"})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "delivery_retries_total",
		Help: "Failed delivery attempts that will be retried, by sink.",
	}, []string{"sink"})
	m.deliveryLat = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: ns, Name: "delivery_latency_seconds",
		Help:    "Time from the upstream log's creation (the event time) to the sink's acknowledgement.",
		Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 900, 3600, 21600, 86400},
	}, []string{"sink"})
	m.sinkFailing = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "sink_failures_total",
		Help: "Times a sink turned from healthy to failing (reason=failing), or paused itself (reason=paused).",
	}, []string{"sink", "reason"})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "outbound_refused_total",
		Help: "Delivery attempts the outbound guard refused before connecting (link-local target, deny_networks, allow_networks), by sink.",
	}, []string{"sink"})
	m.deletions = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: ns, Name: "deletions_total",
		Help: "Tasks confirmed gone by a task_id look-up and handed to the store, which appends task.deleted for those it has seen.",
	})
	m.reloadOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: ns, Name: "config_last_reload_successful",
		Help: "Whether the last config reload succeeded (1) or was refused (0); 1 before any.",
	})
	m.reloadOKTime = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: ns, Name: "config_last_reload_success_timestamp_seconds",
		Help: "When a config was last applied: the start, or the last reload that succeeded (Unix seconds).",
	})
	m.reloadOK.Set(1)
	m.reloadOKTime.Set(float64(r.started.UnixNano()) / 1e9)
	m.reg.MustRegister(m.reloadOK, m.reloadOKTime)
	m.reg.MustRegister(m.apiRequests, m.apiLatency, m.events, m.ingestTasks, m.deliveries, m.retries, m.deliveryLat, m.sinkFailing, m.refused, m.deletions,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), &stateCollector{r: r})
	for _, t := range diff.Types {
		m.events.WithLabelValues(t)
	}
	for _, o := range []string{"ok", "unauthorized", "rate_limited", "server_error", "client_error", "error"} {
		m.apiRequests.WithLabelValues(o)
	}
	for _, res := range []string{"changed", "unchanged", "failed"} {
		m.ingestTasks.WithLabelValues(res)
	}
	for _, sc := range r.Config().Sinks {
		m.addSink(sc.Name)
	}
	return m
}

// addSink makes the sink's series exist at zero.
func (m *metrics) addSink(name string) {
	m.deliveries.WithLabelValues(name, outcomeDelivered)
	m.deliveries.WithLabelValues(name, outcomeDeadLettered)
	m.retries.WithLabelValues(name)
	m.refused.WithLabelValues(name)
	m.deliveryLat.WithLabelValues(name)
	m.sinkFailing.WithLabelValues(name, "failing")
	m.sinkFailing.WithLabelValues(name, "paused")
}

// reloaded records a reload's outcome.
func (m *metrics) reloaded(st ReloadStatus) {
	if !st.OK {
		m.reloadOK.Set(0)
		return
	}
	m.reloadOK.Set(1)
	m.reloadOKTime.Set(float64(st.LastSuccess.UnixNano()) / 1e9)
}

// ingested counts one page's ingest: tasks by result and the appended
// events by type, as the store counted them while writing.
func (m *metrics) ingested(res store.IngestResult) {
	if m == nil {
		return
	}
	m.ingestTasks.WithLabelValues("changed").Add(float64(res.Changed))
	m.ingestTasks.WithLabelValues("unchanged").Add(float64(res.Skipped))
	m.ingestTasks.WithLabelValues("failed").Add(float64(res.Failed))
	m.eventsAppended(res.Types)
}

// deleted counts the tasks of a stored deletion and its events.
func (m *metrics) deleted(res store.IngestResult, tasks int) {
	if m == nil {
		return
	}
	m.deletions.Add(float64(tasks))
	m.eventsAppended(res.Types)
}

// eventsAppended counts appended events by type.
func (m *metrics) eventsAppended(types map[string]int) {
	if m == nil {
		return
	}
	for t, n := range types {
		m.events.WithLabelValues(t).Add(float64(n))
	}
}

// Delivered implements sink.Observer.
func (m *metrics) Delivered(s string, ev *diff.Event, _ time.Duration) {
	m.deliveries.WithLabelValues(s, outcomeDelivered).Inc()
	if !ev.Time.IsZero() {
		m.deliveryLat.WithLabelValues(s).Observe(max(time.Since(ev.Time).Seconds(), 0))
	}
}

// Retried implements sink.Observer.
func (m *metrics) Retried(s string, _ *diff.Event, _ int, err error) {
	m.retries.WithLabelValues(s).Inc()
	if errors.Is(err, sink.ErrRefusedAddress) {
		m.refused.WithLabelValues(s).Inc()
	}
}

// DeadLettered implements sink.Observer.
func (m *metrics) DeadLettered(s string, _ *diff.Event, err error) {
	m.deliveries.WithLabelValues(s, outcomeDeadLettered).Inc()
	if errors.Is(err, sink.ErrRefusedAddress) {
		m.refused.WithLabelValues(s).Inc()
	}
}

// Paused implements sink.Observer.
func (m *metrics) Paused(s string, _ error) { m.sinkFailing.WithLabelValues(s, "paused").Inc() }

// Failing implements sink.Observer.
func (m *metrics) Failing(s string, _ error) {
	m.sinkFailing.WithLabelValues(s, "failing").Inc()
}

// instrumentAPI counts and times every request to the API.
func (m *metrics) instrumentAPI(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		start := time.Now()
		resp, err := next.RoundTrip(req)
		m.apiLatency.Observe(time.Since(start).Seconds())
		outcome := "error"
		if err == nil {
			switch c := resp.StatusCode; {
			case c >= 200 && c < 300:
				outcome = "ok"
			case c == 401 || c == 403:
				outcome = "unauthorized"
			case c == 429:
				outcome = "rate_limited"
			case c >= 500:
				outcome = "server_error"
			default:
				outcome = "client_error"
			}
		}
		m.apiRequests.WithLabelValues(outcome).Inc()
		return resp, err
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// stateCollector reads gauges from the store, the dispatchers and the
// poller at scrape time, and the poll counters from the poller's status.
type stateCollector struct {
	r *Relay

	mu         sync.Mutex
	pollErrors int // highest failed-cycle count reported: keeps the counter monotonic
}

var (
	descLag       = prometheus.NewDesc(ns+"_sink_lag_events", "Events stored after the sink's cursor: not yet delivered or dead-lettered (filtered-out events included until the cursor passes them).", []string{"sink"}, nil)
	descLagSec    = prometheus.NewDesc(ns+"_sink_lag_seconds", "Time since the oldest event after the sink's cursor was stored (0 when caught up).", []string{"sink"}, nil)
	descCursor    = prometheus.NewDesc(ns+"_sink_cursor", "Offset through which the sink is done.", []string{"sink"}, nil)
	descDead      = prometheus.NewDesc(ns+"_sink_dead_letters", "Events in the sink's dead letters now (a replay past them clears them).", []string{"sink"}, nil)
	descPaused    = prometheus.NewDesc(ns+"_sink_paused", "1 while the sink is paused (e.g. a webhook answered 410 Gone).", []string{"sink"}, nil)
	descSinkUp    = prometheus.NewDesc(ns+"_sink_healthy", "1 unless the sink's last attempt failed.", []string{"sink"}, nil)
	descLastDeliv = prometheus.NewDesc(ns+"_sink_last_delivery_timestamp_seconds", "Unix time of the sink's last acknowledged delivery.", []string{"sink"}, nil)
	descHead      = prometheus.NewDesc(ns+"_outbox_head_offset", "Highest offset ever assigned.", nil, nil)
	descOutbox    = prometheus.NewDesc(ns+"_outbox_events", "Events held in the outbox (delivered ones are kept for store.retention).", nil, nil)
	descTasks     = prometheus.NewDesc(ns+"_seen_tasks", "Tasks in the seen-set.", nil, nil)
	descFile      = prometheus.NewDesc(ns+"_store_file_bytes", "Size of the bbolt file.", nil, nil)
	descPolls     = prometheus.NewDesc(ns+"_polls_total", "Poll cycles by outcome (ok, error).", []string{"outcome"}, nil)
	descPollReqs  = prometheus.NewDesc(ns+"_poll_cycle_requests", "API requests the last poll cycle took.", nil, nil)
	descTierReqs  = prometheus.NewDesc(ns+"_poll_cycle_tier_requests", "API requests of the last successful tiered cycle by tier: scan (head of the list), newest, open, sweep (full slice reads, budget ones included), budget (slices read beyond the ceilings), fetch (by task_id).", []string{"tier"}, nil)
	descBudget    = prometheus.NewDesc(ns+"_poll_budget_requests", "poll.budget: API requests per interval the tiered strategy aims to spend.", nil, nil)
	descNeed      = prometheus.NewDesc(ns+"_poll_ceiling_requests", "API requests per cycle that poll.open_sweep and poll.full_sweep need, averaged.", nil, nil)
	descShort     = prometheus.NewDesc(ns+"_poll_budget_short", "1 when poll.budget is below what the ceilings need: nothing is left to read finished tasks more often.", nil, nil)
	descMissed    = prometheus.NewDesc(ns+"_poll_full_sweep_missed", "1 when some task was not read within poll.full_sweep (plus an interval): the rate limit cannot keep the ceiling.", nil, nil)
	descFresh     = prometheus.NewDesc(ns+"_poll_tier_freshness_seconds", "Per tier, how long ago the task read least recently was read: the worst-case age of a change not seen yet.", []string{"tier"}, nil)
	descOrdered   = prometheus.NewDesc(ns+"_poll_updated_order", "1 when the last cycle found the API's list in updated_at order and read its head down to where nothing changed.", nil, nil)
	descUnseenAge = prometheus.NewDesc(ns+"_poll_max_unseen_age_seconds", "How old the oldest upstream change not yet seen can be: every task was read after now minus this.", nil, nil)
	descOpenTasks = prometheus.NewDesc(ns+"_poll_open_tasks", "Known tasks that are not started or in progress (tiered polling).", nil, nil)
	descLastPoll  = prometheus.NewDesc(ns+"_last_poll_success_timestamp_seconds", "Unix time of the last successful poll cycle.", nil, nil)
	descPollFails = prometheus.NewDesc(ns+"_poll_consecutive_failures", "Poll cycles failed in a row.", nil, nil)
	descReady     = prometheus.NewDesc(ns+"_ready", "1 when /readyz answers 200.", nil, nil)
	descHeld      = prometheus.NewDesc(ns+"_deletions_held", "Tasks confirmed gone that the mass-deletion guard holds back (more than max(10, 5% of the tracked tasks) in one cycle); looked up again every cycle.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLag, descLagSec, descCursor, descDead, descPaused, descSinkUp, descLastDeliv, descHead, descOutbox, descTasks, descFile, descPolls, descPollReqs, descTierReqs, descUnseenAge, descBudget, descNeed, descShort, descMissed, descFresh, descOrdered, descOpenTasks, descLastPoll, descPollFails, descReady, descHeld} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.r
	st, err := r.db.Stats()
	if err == nil {
		ch <- prometheus.MustNewConstMetric(descHead, prometheus.GaugeValue, float64(st.Head))
		ch <- prometheus.MustNewConstMetric(descOutbox, prometheus.GaugeValue, float64(st.Events))
		ch <- prometheus.MustNewConstMetric(descTasks, prometheus.GaugeValue, float64(st.Tasks))
		ch <- prometheus.MustNewConstMetric(descFile, prometheus.GaugeValue, float64(st.FileSize))
	}
	for _, s := range r.SinkStatuses() {
		ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, float64(s.Lag), s.Name)
		ch <- prometheus.MustNewConstMetric(descLagSec, prometheus.GaugeValue, s.LagSeconds, s.Name)
		ch <- prometheus.MustNewConstMetric(descCursor, prometheus.GaugeValue, float64(s.Cursor), s.Name)
		ch <- prometheus.MustNewConstMetric(descDead, prometheus.GaugeValue, float64(s.DeadLetters), s.Name)
		ch <- prometheus.MustNewConstMetric(descPaused, prometheus.GaugeValue, b2f(s.Paused), s.Name)
		ch <- prometheus.MustNewConstMetric(descSinkUp, prometheus.GaugeValue, b2f(!s.Failing), s.Name)
		if s.LastDeliveryAt != nil {
			ch <- prometheus.MustNewConstMetric(descLastDeliv, prometheus.GaugeValue, float64(s.LastDeliveryAt.UnixNano())/1e9, s.Name)
		}
	}
	r.pipeMu.RLock()
	ps := r.poll.Status()
	ok := int(r.ingest.sweeps.Load())
	tiered := r.tiers != nil
	r.pipeMu.RUnlock()
	// A successful cycle is counted by the Ingester a moment before the
	// poller counts the cycle: never let the error count step back.
	c.mu.Lock()
	c.pollErrors = max(c.pollErrors, ps.Cycles-ok)
	failed := c.pollErrors
	c.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descPolls, prometheus.CounterValue, float64(ok), "ok")
	ch <- prometheus.MustNewConstMetric(descPolls, prometheus.CounterValue, float64(failed), "error")
	ch <- prometheus.MustNewConstMetric(descPollReqs, prometheus.GaugeValue, float64(ps.Requests))
	if tiered {
		ts := ps.Tiers
		for tier, n := range map[string]int{"scan": ts.ScanRequests, "newest": ts.NewestRequests, "open": ts.OpenRequests,
			"sweep": ts.SweepRequests, "budget": ts.BudgetRequests, "fetch": ts.FetchRequests} {
			ch <- prometheus.MustNewConstMetric(descTierReqs, prometheus.GaugeValue, float64(n), tier)
		}
		ch <- prometheus.MustNewConstMetric(descBudget, prometheus.GaugeValue, float64(ts.Budget))
		ch <- prometheus.MustNewConstMetric(descNeed, prometheus.GaugeValue, ts.CeilingNeed)
		ch <- prometheus.MustNewConstMetric(descShort, prometheus.GaugeValue, b2f(ts.BudgetShort))
		ch <- prometheus.MustNewConstMetric(descMissed, prometheus.GaugeValue, b2f(ps.FullSweepMissed))
		ch <- prometheus.MustNewConstMetric(descOrdered, prometheus.GaugeValue, b2f(ts.Ordered))
		if ts.Ready {
			ch <- prometheus.MustNewConstMetric(descFresh, prometheus.GaugeValue, ps.OpenAge.Seconds(), "open")
			ch <- prometheus.MustNewConstMetric(descFresh, prometheus.GaugeValue, ps.FinishedAge.Seconds(), "finished")
		}
		ch <- prometheus.MustNewConstMetric(descOpenTasks, prometheus.GaugeValue, float64(ts.Open))
	}
	if !ps.SeenThrough.IsZero() {
		ch <- prometheus.MustNewConstMetric(descUnseenAge, prometheus.GaugeValue, ps.MaxUnseenAge.Seconds())
	}
	if !ps.LastSuccess.IsZero() {
		ch <- prometheus.MustNewConstMetric(descLastPoll, prometheus.GaugeValue, float64(ps.LastSuccess.UnixNano())/1e9)
	}
	ch <- prometheus.MustNewConstMetric(descPollFails, prometheus.GaugeValue, float64(ps.ConsecutiveFailures))
	ch <- prometheus.MustNewConstMetric(descHeld, prometheus.GaugeValue, float64(ps.DeletionsHeld))
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, b2f(r.NotReady(time.Now()) == ""))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
