package relay

// What the relay reports of itself: readiness, each sink's status (also
// read from the store alone, for a relay that is down) and the poller's,
// the shapes `status` prints and the admin API serves.

import (
	"fmt"
	"slices"
	"time"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/store"
)

// pollStaleBound is how long after the last successful poll cycle the
// relay stays ready: three intervals, or one interval plus two request
// timeouts when that is longer (a slow API is not yet a failing one), plus
// the last cycle's own duration (a long sweep is progress, not silence).
func (r *Relay) pollStaleBound(ps poller.Status) time.Duration {
	cfg := r.Config()
	interval := cfg.Poll.Interval.D()
	return max(3*interval, interval+2*cfg.Upstream.Timeout.D()) + ps.LastSweep.Duration
}

// NotReady returns why the relay cannot do its own job, or "": the store
// is not open; no page of the first poll cycle was stored yet (or that
// cycle failed, or stored no page for pollStaleBound); or the last success
// is older than pollStaleBound. A jetstream replica that does not lead is ready
// when it reaches the cluster and a live replica holds the lease. A
// failing or paused sink never makes the relay unready: restarting or
// unlisting it would help no receiver (and would take away the admin API
// that resumes the sink); it shows in SinkStatus (failing, paused), the
// metrics and the alert rules instead.
func (r *Relay) NotReady(now time.Time) string {
	if r.db == nil {
		return "store not open"
	}
	// A jetstream replica that does not lead polls nothing: it is ready
	// when it reaches the cluster and some replica holds the lease.
	if reason, follower := r.replicaNotReady(now); reason != "" {
		return reason
	} else if !follower {
		if reason := r.pollNotReady(now); reason != "" {
			return reason
		}
	}
	return ""
}

// pollNotReady returns why the polls make the relay not ready, or "".
func (r *Relay) pollNotReady(now time.Time) string {
	r.pipeMu.RLock()
	ps := r.poll.Status()
	r.pipeMu.RUnlock()
	switch since := r.leadSince.Load(); {
	case ps.LastSuccess.IsZero() && ps.LastError == "" && since != 0 && now.Sub(time.Unix(0, since)) <= r.pollStaleBound(ps):
		return "" // a replica that just took over polls its first cycle
	case ps.LastSuccess.IsZero() && ps.LastPage.After(ps.LastFailure):
		// The first cycle is under way and stores its pages (since the
		// last failed cycle, if one failed): a long first sweep, of every
		// task in the lookback window, is progress.
		if since := now.Sub(ps.LastPage); since > r.pollStaleBound(ps) {
			return fmt.Sprintf("the first poll cycle has stored no page for %s", RoundDuration(since))
		}
		return ""
	case ps.LastSuccess.IsZero() && ps.LastError != "":
		return "no poll has succeeded yet: " + ps.LastError
	case ps.LastSuccess.IsZero():
		return "waiting for the first poll to complete"
	}
	if since := now.Sub(ps.LastSuccess); since > r.pollStaleBound(ps) {
		if ps.ConsecutiveFailures > 0 {
			return fmt.Sprintf("polls failing for %s (%d in a row): %s", RoundDuration(since), ps.ConsecutiveFailures, ps.LastError)
		}
		return fmt.Sprintf("no poll has succeeded for %s", RoundDuration(since))
	}
	return ""
}

// RoundDuration rounds d for a message: to seconds, or to milliseconds below one.
func RoundDuration(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}

// SinkStatus is what `status` and GET /v1/sinks show of a sink.
type SinkStatus struct {
	Name           string             `json:"name"`
	Type           string             `json:"type"`
	Cursor         uint64             `json:"cursor"`
	Head           uint64             `json:"head"`
	First          uint64             `json:"first"`
	Lag            uint64             `json:"lag"`
	LagSeconds     float64            `json:"lag_seconds"`
	DeadLetters    int                `json:"dead_letters"`
	Dead           []store.DeadLetter `json:"dead,omitempty"`
	Paused         bool               `json:"paused"`
	PauseReason    string             `json:"pause_reason,omitempty"`
	Failing        bool               `json:"failing"`
	LastError      string             `json:"last_error,omitempty"`
	LastErrorAt    *time.Time         `json:"last_error_at,omitempty"`
	LastDeliveryAt *time.Time         `json:"last_delivery_at,omitempty"`
	InFlight       int                `json:"in_flight"`
	Delivered      uint64             `json:"delivered"`
	Retried        uint64             `json:"retried"`
	Running        bool               `json:"running"`
	// RemovedAt is when the sink left the config (a reload or a restart
	// without it): its cursor and dead letters are kept for
	// store.retention and hold nothing back. Nil for a configured sink.
	RemovedAt *time.Time `json:"removed_at,omitempty"`
}

// SinkStatuses reports every configured sink from the store and, while the
// relay runs, its dispatcher.
func (r *Relay) SinkStatuses() []SinkStatus {
	out := make([]SinkStatus, 0, len(r.outputs()))
	for _, o := range r.outputs() {
		s, err := StoreSinkStatus(r.db, o.cfg)
		if err != nil {
			r.log.Warn().Err(err).Str("sink", o.cfg.Name).Msg("status")
		}
		st := o.disp.State()
		s.Running = st.Running
		if st.Cursor > s.Cursor {
			s.Cursor = st.Cursor
		}
		live := false
		if c, ok := liveCursor(r.db, o.disp, o.cfg.Name); ok && c > s.Cursor {
			s.Cursor, live = c, true
		}
		s.Paused, s.PauseReason = st.Paused, st.PauseReason
		s.Failing = st.Failing
		if st.LastError != "" {
			s.LastError = st.LastError
			s.LastErrorAt = timePtr(st.LastErrorAt)
		}
		if !st.LastDeliveryAt.IsZero() {
			s.LastDeliveryAt = timePtr(st.LastDeliveryAt)
		}
		s.InFlight, s.Delivered, s.Retried = st.InFlight, st.Delivered, st.Retried
		finishLag(r.db, &s, !live)
		out = append(out, s)
	}
	return out
}

// RemovedSinkStatuses reports the sinks the store's registry lists as
// removed from the config, which keeps their cursor and dead letters for
// store.retention; except lists the configured sinks, never reported as
// removed (another replica may have marked them).
func RemovedSinkStatuses(db store.Store, except []string) ([]SinkStatus, error) {
	regs, err := db.Sinks()
	if err != nil {
		return nil, err
	}
	var out []SinkStatus
	for _, reg := range regs {
		if reg.Removed.IsZero() || slices.Contains(except, reg.Name) {
			continue
		}
		s, err := StoreSinkStatus(db, config.SinkConfig{Name: reg.Name}) // its type left with its config
		if err != nil {
			return nil, err
		}
		s.RemovedAt = timePtr(reg.Removed)
		out = append(out, s)
	}
	return out, nil
}

// AllSinkStatuses is SinkStatuses followed by the removed sinks the
// store still keeps.
func (r *Relay) AllSinkStatuses() []SinkStatus {
	out := r.SinkStatuses()
	removed, err := RemovedSinkStatuses(r.db, r.SinkNames())
	if err != nil {
		r.log.Warn().Err(err).Msg("status: removed sinks")
	}
	return append(out, removed...)
}

// StoreSinkStatus reads sc's status from the store alone, as `status`
// shows a relay that is down.
func StoreSinkStatus(db store.Store, sc config.SinkConfig) (SinkStatus, error) {
	s := SinkStatus{Name: sc.Name, Type: sc.Type}
	st, err := db.Stats()
	if err != nil {
		return s, err
	}
	s.Head, s.First = st.Head, st.First
	if s.Cursor, err = db.Cursor(sc.Name); err != nil {
		return s, err
	}
	if s.Dead, err = db.DeadLetters(sc.Name); err != nil {
		return s, err
	}
	s.DeadLetters = len(s.Dead)
	ss, err := db.SinkState(sc.Name)
	if err != nil {
		return s, err
	}
	s.Paused, s.PauseReason, s.LastError = ss.Paused, ss.PauseReason, ss.LastError
	s.LastErrorAt, s.LastDeliveryAt = timePtr(ss.LastErrorAt), timePtr(ss.LastDeliveryAt)
	finishLag(db, &s, true)
	return s, nil
}

// finishLag sets the lag in events and seconds from the cursor and head.
// When the event after the cursor was stored comes from the store's
// memory where it has it (a jetstream store: CachedStoredAt), else, with
// read, from the store. A live cursor (liveCursor) moves with every
// delivery and is finished without read: the stream is not searched on a
// status request, and where memory lacks the event LagSeconds stays as
// the stored cursor gave it, older by at most a cursor flush.
func finishLag(db store.Store, s *SinkStatus, read bool) {
	if s.Head <= s.Cursor {
		s.Lag, s.LagSeconds = 0, 0
		return
	}
	s.Lag = s.Head - s.Cursor
	off := max(s.Cursor+1, s.First)
	if sa, ok := db.(storedAter); ok {
		if at, ok := sa.CachedStoredAt(off); ok {
			s.LagSeconds = time.Since(at).Seconds()
			return
		}
	}
	if !read {
		return
	}
	s.LagSeconds = 0
	if ev, err := db.Event(off); err == nil && !ev.StoredAt.IsZero() {
		s.LagSeconds = time.Since(ev.StoredAt).Seconds()
	}
}

// storedAter is a store that tells, from memory alone, when an event was
// stored (*jsstore.Store).
type storedAter interface {
	CachedStoredAt(off uint64) (time.Time, bool)
}

// timePtr is &t, or nil for the zero time (omitted in JSON).
func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// PollView is what `status` and GET /v1/poll show of the poller.
type PollView struct {
	Strategy            string     `json:"strategy"`
	LastSuccess         *time.Time `json:"last_success,omitempty"`
	LastError           string     `json:"last_error,omitempty"`
	ConsecutiveFailures int        `json:"consecutive_failures"`
	Cycles              int        `json:"cycles"`
	Requests            int        `json:"requests_last_cycle"`
	Tiers               *TierView  `json:"tiers,omitempty"`
	MaxUnseenAgeSeconds *float64   `json:"max_unseen_age_seconds,omitempty"`
	Rules               *RulesView `json:"rules,omitempty"`
	// Cluster is the jetstream store's replicas; nil with bbolt.
	Cluster *ClusterView `json:"cluster,omitempty"`
}

// TierView is the tiered strategy's part of PollView: requests of the last
// cycle by tier, the budget against what the ceilings need, and each
// tier's freshness.
type TierView struct {
	Scan        int     `json:"scan"`
	Newest      int     `json:"newest"`
	Open        int     `json:"open"`
	Sweep       int     `json:"sweep"`
	Budgeted    int     `json:"budgeted"`
	Fetch       int     `json:"fetch"`
	Tasks       int     `json:"tasks"`
	OpenN       int     `json:"open_tasks"`
	Budget      int     `json:"budget"`
	CeilingNeed float64 `json:"ceiling_need"`
	BudgetShort bool    `json:"budget_short,omitempty"`
	SweepMissed bool    `json:"full_sweep_missed,omitempty"`
	Ordered     bool    `json:"updated_order,omitempty"`
	// OpenAge and FinishedAge are the tiers' freshness in seconds; absent
	// before the first full sweep.
	OpenAge     *float64 `json:"open_freshness_seconds,omitempty"`
	FinishedAge *float64 `json:"finished_freshness_seconds,omitempty"`
}

// PollView is what the poller, the tiers, the rules and the cluster say
// now.
func (r *Relay) PollView() PollView {
	r.pipeMu.RLock()
	defer r.pipeMu.RUnlock()
	ps := r.poll.Status()
	v := PollView{Strategy: r.Config().Poll.Strategy, LastSuccess: timePtr(ps.LastSuccess), LastError: ps.LastError,
		ConsecutiveFailures: ps.ConsecutiveFailures, Cycles: ps.Cycles, Requests: ps.Requests}
	if r.tiers != nil {
		t := ps.Tiers
		v.Tiers = &TierView{Scan: t.ScanRequests, Newest: t.NewestRequests, Open: t.OpenRequests, Sweep: t.SweepRequests,
			Budgeted: t.BudgetRequests, Fetch: t.FetchRequests, Tasks: t.Tasks, OpenN: t.Open,
			Budget: t.Budget, CeilingNeed: t.CeilingNeed, BudgetShort: t.BudgetShort, SweepMissed: ps.FullSweepMissed, Ordered: t.Ordered}
		if t.Ready {
			open, fin := ps.OpenAge.Seconds(), ps.FinishedAge.Seconds()
			v.Tiers.OpenAge, v.Tiers.FinishedAge = &open, &fin
		}
	}
	if !ps.SeenThrough.IsZero() {
		age := ps.MaxUnseenAge.Seconds()
		v.MaxUnseenAgeSeconds = &age
	}
	v.Rules = r.rulesView(ps)
	v.Cluster = r.ClusterView()
	return v
}
