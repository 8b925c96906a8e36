package relay

// Opening the store the config names.

import (
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/store"
)

// OpenStore opens the store the config names (store.type): the bbolt
// file, or the jetstream store with the replica ID "<hostname>-<pid>".
// Every command opens its store here; a new store backend is added here
// and in the config's store section (config/config_store.go).
func OpenStore(cfg *config.Config, opts store.Options) (store.Store, error) {
	if cfg.JetStream() {
		h, err := OpenJetStream(cfg, opts.Logger, "")
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return h, nil
	}
	db, err := store.Open(cfg.Store.Path, opts)
	if err != nil {
		return nil, err
	}
	return db, nil
}
