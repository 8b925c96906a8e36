// The registry of sinks (store.SinkRegistry) in the state bucket: an
// entry per sink, created compare-and-set so the first replica to
// register a sink decides where it starts, and a marker written by the
// first sync.

package jsstore

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/incs-relay/incs-relay/store"
)

func regKey(sink string) string { return keyReg + keyToken(sink) }

// SyncSinks brings the registry in line with configured, this replica's
// sinks, and returns every entry sorted by name, as *store.DB's does:
// adoption at the sinks' cursors while the store has no registry marker
// (then the marker is written), a sink new afterwards registered per its
// mode (store.SinkSpec.StartAt, Head as this replica knows it), a removed
// sink configured again listed again, an entry not configured marked
// removed at now.
//
// Each entry is created compare-and-set: when replicas register the same
// sink at once, the first one's entry (and so its Start) stands and the
// others take it. Then every caller that finds or creates a configured
// sink's entry creates each partition's cursor record that does not
// exist yet at Start-1, also compare-and-set, so racing replicas end
// with the same records and a crash between the steps is completed by
// the next sync. No dispatcher of a sink may read before SyncSinks
// returned: that is the caller's job. The removal marks are per replica:
// each syncs with its own config.
func (s *Store) SyncSinks(configured []store.SinkSpec, now time.Time) ([]store.RegisteredSink, error) {
	if err := s.checkOpen("sync sinks"); err != nil {
		return nil, err
	}
	for _, sp := range configured {
		if err := sp.Check(); err != nil {
			return nil, fmt.Errorf("jsstore: sync sinks: %w", err)
		}
	}
	now = now.UTC()
	_, marked := s.state.get(keyRegMark)
	listed := make(map[string]bool, len(configured))
	for _, sp := range configured {
		if listed[sp.Name] {
			continue
		}
		listed[sp.Name] = true
		e, err := s.register(sp, !marked, now)
		if err != nil {
			return nil, fmt.Errorf("jsstore: sync sinks: sink %s: %w", sp.Name, err)
		}
		for p := range s.o.Partitions {
			if _, err := s.casState(cursorKey(sp.Name, p), func(_ []byte, live bool) ([]byte, bool) {
				val, _ := json.Marshal(cursorRec{Off: e.Start - 1})
				return val, !live
			}); err != nil {
				return nil, fmt.Errorf("jsstore: sync sinks: cursor of sink %s in partition %d: %w", sp.Name, p, err)
			}
		}
	}
	entries, err := s.registry()
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if listed[e.Name] || !e.Removed.IsZero() {
			continue
		}
		if err := s.updateEntry(e.Name, func(cur store.RegisteredSink, live bool) (store.RegisteredSink, bool) {
			if !live || !cur.Removed.IsZero() {
				return cur, false
			}
			cur.Removed = now
			return cur, true
		}); err != nil {
			return nil, fmt.Errorf("jsstore: sync sinks: removing sink %s: %w", e.Name, err)
		}
	}
	if !marked {
		if _, err := s.casState(keyRegMark, func(_ []byte, live bool) ([]byte, bool) {
			return []byte(now.Format(time.RFC3339Nano)), !live
		}); err != nil {
			return nil, fmt.Errorf("jsstore: sync sinks: %w", err)
		}
	}
	return s.registry()
}

// register returns the configured sink's entry: the one stored (listed
// again if it was removed), or a new one, Adopted at the sink's cursor
// when adopt, else at sp's start.
func (s *Store) register(sp store.SinkSpec, adopt bool, now time.Time) (store.RegisteredSink, error) {
	var out store.RegisteredSink
	var startErr error
	err := s.updateEntry(sp.Name, func(cur store.RegisteredSink, live bool) (store.RegisteredSink, bool) {
		switch {
		case live:
			out = cur
			out.Removed = time.Time{}
			return out, !cur.Removed.IsZero()
		case adopt:
			ctx, cancel := s.opCtx()
			defer cancel()
			var c uint64
			c, startErr = s.cursor(ctx, sp.Name, nil)
			out = store.RegisteredSink{Name: sp.Name, Start: c + 1, Added: now, Adopted: true}
		default:
			_, head := s.floorHead()
			out = store.RegisteredSink{Name: sp.Name, Start: sp.StartAt(head), Added: now}
		}
		return out, startErr == nil
	})
	if err == nil {
		err = startErr
	}
	return out, err
}

// updateEntry writes fn's entry over the sink's registry entry,
// compare-and-set (casState): fn sees the entry as last known (live
// false: none) and returns the entry to write, or false to write nothing.
func (s *Store) updateEntry(sink string, fn func(cur store.RegisteredSink, live bool) (store.RegisteredSink, bool)) error {
	var bad error
	_, err := s.casState(regKey(sink), func(v []byte, live bool) ([]byte, bool) {
		var cur store.RegisteredSink
		if live {
			if cur, bad = decodeEntry(regKey(sink), v); bad != nil {
				return nil, false
			}
		}
		next, write := fn(cur, live)
		if !write {
			return nil, false
		}
		val, err := json.Marshal(next)
		bad = err
		return val, err == nil
	})
	if err == nil {
		err = bad
	}
	return err
}

// decodeEntry decodes the registry entry stored under key.
func decodeEntry(key string, v []byte) (store.RegisteredSink, error) {
	var e store.RegisteredSink
	name, err := tokenName(strings.TrimPrefix(key, keyReg))
	if err == nil {
		err = json.Unmarshal(v, &e)
	}
	if err != nil {
		return e, fmt.Errorf("jsstore: registry entry %s: %w", key, err)
	}
	e.Name = name
	return e, nil
}

// registry returns every entry as this replica knows it, by name.
func (s *Store) registry() ([]store.RegisteredSink, error) {
	var out []store.RegisteredSink
	var bad error
	s.state.prefixed(keyReg, func(key string, v []byte) {
		e, err := decodeEntry(key, v)
		if err != nil {
			bad = err
			return
		}
		out = append(out, e)
	})
	if bad != nil {
		return nil, bad
	}
	slices.SortFunc(out, func(a, b store.RegisteredSink) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

// Sinks returns every registry entry, removed ones too, sorted by name,
// as this replica knows them; none before the first SyncSinks.
func (s *Store) Sinks() ([]store.RegisteredSink, error) {
	if err := s.checkOpen("sinks"); err != nil {
		return nil, err
	}
	return s.registry()
}

// ForgetSink deletes everything the store keeps of a sink: its cursor
// record in every partition, its dead letters, its state and, last, its
// registry entry, so a forget cut short is completed by calling it again.
// (The copies of dead-lettered events and the time of its last rewind
// stay.) A sink the store does not know is no error. No replica may
// deliver to the sink meanwhile: that is the caller's job.
func (s *Store) ForgetSink(name string) error {
	if err := s.checkOpen("forget sink"); err != nil {
		return err
	}
	if err := checkSink(name); err != nil {
		return fmt.Errorf("jsstore: forget sink: %w", err)
	}
	keys := make([]string, 0, s.o.Partitions+2)
	for p := range s.o.Partitions {
		keys = append(keys, cursorKey(name, p))
	}
	s.state.prefixed(keyDead+keyToken(name)+".", func(key string, _ []byte) { keys = append(keys, key) })
	keys = append(keys, keySink+keyToken(name), regKey(name))
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	for _, key := range keys {
		if err := s.kvDelete(ctx, key); err != nil {
			return fmt.Errorf("jsstore: forget sink %s: %w", name, err)
		}
	}
	return nil
}
