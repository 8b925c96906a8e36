// Migrate: copying a bbolt store's events (same offsets) and its state
// into a JetStream store.

package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/incs-relay/incs-relay/store"
)

// MigrateResult counts what Migrate carried over.
type MigrateResult struct {
	Events      int    // events, with their offsets, ids, bodies and commit times
	Head        uint64 // the head carried over: offsets continue after it
	Tasks       int    // seen records
	Rules       int    // rule states
	Sinks       int    // sinks whose cursor, dead letters and state were copied
	DeadLetters int
	Meta        int // small values
}

// MigrateSource is what Migrate reads besides the store.Store methods:
// *store.DB (bbolt) has it.
type MigrateSource interface {
	store.Store
	ForEachSeen(fn func(taskID int64, rec []byte) error) error
	ForEachRuleTask(fn func(taskID int64, task []byte) error) error
	SinkNames() ([]string, error)
	ForEachMeta(fn func(key string, value []byte) error) error
}

// Migrate carries src's events (same offsets, ids, bodies and commit
// times), seen-set, rule states, cursors, dead letters, sink states, the
// registry of sinks and small values over to dst, which must be empty and leading; src must be
// a MigrateSource (a bbolt store). The outbox, seen-set and rule states go
// in fenced atomic batches, the head last, so offsets continue after
// src's; the rest is written after them. A Migrate that failed half way
// leaves dst not empty: start again on a fresh stream (store.name).
func Migrate(ctx context.Context, dst *Store, src store.Store) (MigrateResult, error) {
	var res MigrateResult
	from, ok := src.(MigrateSource)
	if !ok {
		return res, fmt.Errorf("jsstore: migrate: a %T cannot be migrated from", src)
	}
	lead, unlock, err := dst.beginAppend(ctx, "migrate")
	if err != nil {
		return res, err
	}
	defer unlock()
	dst.v.mu.RLock()
	empty := dst.v.head == 0 && len(dst.v.seen) == 0 && len(dst.v.rules) == 0
	dst.v.mu.RUnlock()
	if !empty {
		return res, errors.New("jsstore: migrate: the jetstream store is not empty")
	}
	if err := migrateAppends(ctx, dst, lead, from, &res); err != nil {
		return res, err
	}
	return res, migrateState(ctx, dst, from, &res)
}

// migrateAppends carries the outbox, the seen-set and the rule states.
func migrateAppends(ctx context.Context, dst *Store, lead *leadership, src MigrateSource, res *MigrateResult) error {
	head, err := src.Head()
	if err != nil {
		return err
	}
	b := dst.newBatcher(lead)
	for next := uint64(0); ; {
		evs, err := src.Read(ctx, next, store.DefaultLimit)
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			break
		}
		for _, ev := range evs {
			e := b.event(ev.Data.TaskID, ev.Offset, ev.Type, ev.Body, ev.StoredAt.UnixNano())
			if err := b.add(ctx, []evOut{e}, nil, func() { res.Events++ }); err != nil {
				return err
			}
		}
		next = evs[len(evs)-1].Offset + 1
	}
	if err := src.ForEachSeen(func(id int64, rec []byte) error {
		return b.add(ctx, nil, []outMsg{b.rollupMsg("seen", id, rec)}, func() { res.Tasks++ })
	}); err != nil {
		return err
	}
	if err := src.RuleStates(func(id int64, rec []byte) error {
		return b.add(ctx, nil, []outMsg{b.rollupMsg("rule", id, rec)}, func() { res.Rules++ })
	}); err != nil {
		return err
	}
	if err := src.ForEachRuleTask(func(id int64, task []byte) error {
		return b.add(ctx, nil, []outMsg{b.rollupMsg("rtask", id, task)}, nil)
	}); err != nil {
		return err
	}
	// The last batch carries src's head, even past its last stored event.
	b.committed = head
	if b.count == 0 {
		if err := b.add(ctx, nil, []outMsg{b.rollupMsg("seen", 0, nil)}, nil); err != nil {
			return err
		}
	}
	if err := b.flush(ctx); err != nil {
		return err
	}
	res.Head = head
	return nil
}

// migrateState carries cursors, dead letters, sink states, the registry
// of sinks and small values.
func migrateState(ctx context.Context, dst *Store, src MigrateSource, res *MigrateResult) error {
	sinks, err := src.SinkNames()
	if err != nil {
		return err
	}
	for _, sink := range sinks {
		c, err := src.Cursor(sink)
		if err != nil {
			return err
		}
		if err := dst.SetCursor(sink, c); err != nil {
			return err
		}
		dls, err := src.DeadLetters(sink)
		if err != nil {
			return err
		}
		for _, dl := range dls {
			b, err := json.Marshal(dl)
			if err != nil {
				return err
			}
			if err := dst.kvPut(ctx, deadKey(sink, dl.Offset), b); err != nil {
				return fmt.Errorf("jsstore: migrate: %w", err)
			}
			res.DeadLetters++
		}
		st, err := src.SinkState(sink)
		if err != nil {
			return err
		}
		if err := dst.SetSinkState(sink, st); err != nil {
			return err
		}
		res.Sinks++
	}
	if err := migrateRegistry(ctx, dst, src); err != nil {
		return err
	}
	if err := src.ForEachMeta(func(key string, value []byte) error {
		res.Meta++
		return dst.SetMeta(key, append([]byte(nil), value...))
	}); err != nil {
		return err
	}
	if ok, err := src.Initialized(); err != nil {
		return err
	} else if ok {
		return dst.SetInitialized()
	}
	return nil
}

// migrateRegistry carries the registry of sinks, and with any entry its
// marker: the first SyncSinks on dst then adopts no sink, as src's next
// one would not have.
func migrateRegistry(ctx context.Context, dst *Store, src MigrateSource) error {
	entries, err := src.Sinks()
	if err != nil || len(entries) == 0 {
		return err
	}
	for _, e := range entries {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if err := dst.kvPut(ctx, regKey(e.Name), b); err != nil {
			return fmt.Errorf("jsstore: migrate: %w", err)
		}
	}
	if err := dst.kvPut(ctx, keyRegMark, []byte(dst.o.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		return fmt.Errorf("jsstore: migrate: %w", err)
	}
	return nil
}
