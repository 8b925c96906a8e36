// The state bucket (cursors, dead letters, sink states, the registry of
// sinks, small values, the partition assignment) as this replica's
// in-memory copy, kept current by a watch, and the writes to it.

package jsstore

import (
	"context"
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Keys of the state bucket; names are encoded with keyToken.
const (
	keyCursor  = "cur."    // cur.<sink>.<partition> -> offset
	keyDead    = "dead."   // dead.<sink>.<offset> -> DeadLetter JSON
	keySink    = "sink."   // sink.<sink> -> SinkState JSON
	keyMeta    = "meta."   // meta.<key> -> value
	keyRewind  = "rewind." // rewind.<sink> -> time of the last rewind
	keyInit    = "init"    // present once SetInitialized was called
	keyAssign  = "assign"  // the partition assignment, JSON
	keyReg     = "reg."    // reg.<sink> -> store.RegisteredSink JSON
	keyRegMark = "regmark" // present once the registry of sinks was synced
	opDelete   = "DEL"
	kvOpHeader = "KV-Operation"
)

var plainToken = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// keyToken encodes a sink name or meta key as one KV key token: names of
// letters, digits, - and _ as they are, others base64url with a leading =.
func keyToken(name string) string {
	if plainToken.MatchString(name) {
		return name
	}
	return "=" + base64.RawURLEncoding.EncodeToString([]byte(name))
}

// kvEntry is one key of the state bucket as last seen.
type kvEntry struct {
	val     []byte
	rev     uint64
	deleted bool
}

// kvState is a replica's in-memory copy of the state bucket, kept by a
// watcher and written through by this replica's own writes, so a write is
// read back at once and reads cost no round trip.
type kvState struct {
	mu   sync.RWMutex
	keys map[string]kvEntry
}

func newKVState() *kvState { return &kvState{keys: map[string]kvEntry{}} }

// set records a value (or deletion) at rev unless a later one is known.
// It reports whether it changed the entry.
func (k *kvState) set(key string, val []byte, rev uint64, deleted bool) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if cur, ok := k.keys[key]; ok && cur.rev >= rev {
		return false
	}
	k.keys[key] = kvEntry{val: val, rev: rev, deleted: deleted}
	return true
}

func (k *kvState) get(key string) ([]byte, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	e, ok := k.keys[key]
	if !ok || e.deleted {
		return nil, false
	}
	return e.val, true
}

// prefixed calls fn with every live key starting with prefix and its
// value.
func (k *kvState) prefixed(prefix string, fn func(key string, val []byte)) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	for key, e := range k.keys {
		if !e.deleted && strings.HasPrefix(key, prefix) {
			fn(key, e.val)
		}
	}
}

// startStateWatch watches the state bucket into s.state and waits for its
// initial values.
func (s *Store) startStateWatch(ctx context.Context) error {
	w, err := s.stateKV.WatchAll(s.ctx)
	if err != nil {
		return fmt.Errorf("jsstore: watch %s-state: %w", s.name, err)
	}
	ready := make(chan struct{})
	s.wg.Go(func() {
		defer w.Stop()
		initial := true
		for {
			select {
			case <-s.ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					if initial {
						initial = false
						close(ready)
					}
					continue
				}
				deleted := e.Operation() != jetstream.KeyValuePut
				if s.state.set(e.Key(), e.Value(), e.Revision(), deleted) && !initial {
					s.stateChanged(e.Key())
				}
			}
		}
	})
	select {
	case <-ready:
		s.refreshAssignment()
		return nil
	case <-ctx.Done():
		return fmt.Errorf("jsstore: watch %s-state: %w", s.name, ctx.Err())
	case <-time.After(30 * time.Second):
		return fmt.Errorf("jsstore: watch %s-state: no initial values after 30s", s.name)
	}
}

// stateChanged reacts to another write of the state bucket.
func (s *Store) stateChanged(key string) {
	switch {
	case key == keyAssign:
		s.refreshAssignment()
	case strings.HasPrefix(key, keyRewind):
		sink, err := tokenName(strings.TrimPrefix(key, keyRewind))
		if err != nil {
			return
		}
		select {
		case s.rewound <- sink:
		default:
			s.log.Warn().Str("sink", sink).Msg("jsstore: rewind notice dropped: nobody reads Rewound")
		}
	}
}

// tokenName decodes keyToken.
func tokenName(tok string) (string, error) {
	if !strings.HasPrefix(tok, "=") {
		return tok, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok[1:])
	return string(b), err
}

// kvPut writes key and records the write.
func (s *Store) kvPut(ctx context.Context, key string, val []byte) error {
	rev, err := s.stateKV.Put(ctx, key, val)
	if err != nil {
		return err
	}
	if s.state.set(key, val, rev, false) {
		s.stateChanged(key)
	}
	return nil
}

// kvDelete deletes key and records the deletion. It publishes the delete
// marker itself (as kv.Delete does) to learn its revision.
func (s *Store) kvDelete(ctx context.Context, key string) error {
	m := &nats.Msg{Subject: "$KV." + s.name + "-state." + key, Header: nats.Header{}}
	m.Header.Set(kvOpHeader, opDelete)
	ack, err := s.js.PublishMsg(ctx, m)
	if err != nil {
		return err
	}
	s.state.set(key, nil, ack.Sequence, true)
	return nil
}

// opCtx bounds one call's round trips.
func (s *Store) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.ctx, 10*time.Second)
}
