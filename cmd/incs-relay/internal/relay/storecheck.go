package relay

// The complete check of a bbolt store, run in the background once the
// relay runs: opening checks only a bounded part of a large file (see
// store.Open), so damage deep in the outbox is found here, not at start.

import (
	"context"
	"errors"
	"time"

	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/store"
)

// storeCheckDelay is how long a bbolt relay runs before it checks its
// whole store: the first polls and deliveries go first.
const storeCheckDelay = 10 * time.Second

// checkStore waits delay, then runs db's complete check (store.DB's
// CheckAll) and logs what it found: an error naming the corruption, or how
// long a clean check took. A ctx that ends first ends it quietly. A store
// other than bbolt has nothing to check here.
func checkStore(ctx context.Context, db store.Store, log zerolog.Logger, delay time.Duration) error {
	d, ok := db.(*store.DB)
	if !ok {
		return nil
	}
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(delay):
	}
	start := time.Now()
	err := d.CheckAll(ctx)
	switch {
	case err == nil:
		log.Info().Dur("took", time.Since(start)).Msg("store check: the whole file is sound")
	case ctx.Err() != nil || errors.Is(err, store.ErrClosed):
		return nil
	default:
		log.Error().Err(err).Msg("store check: the file is damaged; events that cannot be read are reported by the sinks that reach them (restore from a backup, or migrate what can be read)")
	}
	return err
}
