package relay

// The store's registry of sinks: where a sink new to the store starts
// (its `start` key), which sinks hold back retention, and forgetting a
// removed sink once store.retention has passed.

import (
	"time"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/store"
)

// syncRegistry brings the store's registry of sinks in line with cfg's
// sinks: a sink new to the store is registered where its `start` key says
// (the store's first start of this version registers every configured
// sink at its cursor instead), one that cfg lacks is marked removed.
func (r *Relay) syncRegistry(cfg *config.Config) ([]store.RegisteredSink, error) {
	specs := make([]store.SinkSpec, len(cfg.Sinks))
	for i, sc := range cfg.Sinks {
		specs[i] = sinkSpec(sc)
	}
	now := time.Now()
	regs, err := r.db.SyncSinks(specs, now)
	if err != nil {
		return nil, err
	}
	for _, reg := range regs {
		switch {
		case reg.Added.Equal(now) && reg.Adopted:
			r.log.Info().Str("sink", reg.Name).Uint64("from", reg.Start).Msg("sink registered where its cursor is (first start of this version)")
		case reg.Added.Equal(now):
			r.log.Info().Str("sink", reg.Name).Uint64("from", reg.Start).Msg("new sink: delivers from this offset (its start key)")
		case reg.Removed.Equal(now):
			r.log.Info().Str("sink", reg.Name).Msg("sink removed from the config: its cursor and dead letters are kept for store.retention")
		}
	}
	return regs, nil
}

// sinkSpec is what the registry needs of sc.
func sinkSpec(sc config.SinkConfig) store.SinkSpec {
	spec := store.SinkSpec{Name: sc.Name}
	switch mode, off := sc.StartAt(); mode {
	case "earliest":
		spec.Start = store.StartEarliest
	case "offset":
		spec.Start, spec.Offset = store.StartOffset, off
	default:
		spec.Start = store.StartNow
	}
	return spec
}

// pruneSinks lists the sinks whose cursors and dead letters hold events
// back from pruning: every sink the registry has not marked removed (also
// one that another replica's config lists and this one's does not). The
// sinks removed longer than retention ago are forgotten: their cursor,
// dead letters and state go.
func (r *Relay) pruneSinks(retention time.Duration, now time.Time) ([]string, error) {
	regs, err := r.db.Sinks()
	if err != nil {
		return nil, err
	}
	var active []string
	for _, reg := range regs {
		switch {
		case reg.Removed.IsZero():
			active = append(active, reg.Name)
		case retention > 0 && now.Sub(reg.Removed) > retention:
			if err := r.db.ForgetSink(reg.Name); err != nil {
				r.log.Warn().Err(err).Str("sink", reg.Name).Msg("forget removed sink")
				continue
			}
			r.log.Info().Str("sink", reg.Name).Msg("removed sink forgotten: store.retention passed since its removal")
		}
	}
	return active, nil
}
