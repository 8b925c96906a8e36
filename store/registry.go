package store

// The registry of sinks: which sinks the store knows, where each started,
// and which no config lists any more (for config reload, issue 23).

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// StartMode says where a sink new to the store starts delivering.
type StartMode int

const (
	// StartNow delivers the events stored from the moment the sink is
	// registered: its first offset is Head+1.
	StartNow StartMode = iota
	// StartEarliest delivers everything still retained: cursor 0.
	StartEarliest
	// StartOffset delivers from SinkSpec.Offset inclusive (as a replay
	// --from), clamped to [1, Head+1].
	StartOffset
)

// SinkSpec is one configured sink as the registry needs it.
type SinkSpec struct {
	Name   string
	Start  StartMode
	Offset uint64 // the first offset to deliver, with StartOffset
}

// Check reports an empty name or an unknown start mode.
func (sp SinkSpec) Check() error {
	if sp.Name == "" {
		return errors.New("empty sink name")
	}
	if sp.Start < StartNow || sp.Start > StartOffset {
		return fmt.Errorf("sink %s: unknown start mode %d", sp.Name, sp.Start)
	}
	return nil
}

// StartAt returns the first offset a sink new to the store delivers when
// it is registered while Head is head: Head+1 for StartNow, 1 for
// StartEarliest, Offset clamped to [1, head+1] for StartOffset.
func (sp SinkSpec) StartAt(head uint64) uint64 {
	switch sp.Start {
	case StartEarliest:
		return 1
	case StartOffset:
		return min(max(sp.Offset, 1), head+1)
	}
	return head + 1
}

// RegisteredSink is one sink the store knows.
type RegisteredSink struct {
	Name    string    `json:"name"`
	Start   uint64    `json:"start"`             // the first offset it was to deliver when registered
	Added   time.Time `json:"added"`             // when it was registered
	Removed time.Time `json:"removed,omitzero"`  // zero while some config lists it
	Adopted bool      `json:"adopted,omitempty"` // registered on the first start of this version, at its cursor
}

// SinkRegistry keeps which sinks the store knows: the relay syncs it with
// its config at start (and on reload), and passes the sinks not removed
// to Prune.
type SinkRegistry interface {
	// SyncSinks brings the registry in line with configured (this
	// process's sinks) and returns every entry, by name.
	SyncSinks(configured []SinkSpec, now time.Time) ([]RegisteredSink, error)
	// Sinks returns every entry, by name.
	Sinks() ([]RegisteredSink, error)
	// ForgetSink deletes the sink's entry, cursor(s), dead letters and
	// sink state.
	ForgetSink(name string) error
}

var (
	// bucketRegistry holds the registry: sink name -> RegisteredSink
	// JSON. It is created by the first SyncSinks.
	bucketRegistry = []byte("registry")
	// keyRegistered, in the meta bucket, marks a store whose registry was
	// synced once: sinks new to it are no longer adopted.
	keyRegistered = []byte("sink_registry")
)

// SyncSinks brings the registry in line with configured, the sinks of
// this process's config, in one transaction, and returns every entry
// sorted by name:
//
//  1. On the first call for this store (no registry marker yet: a store
//     of an earlier version, or a new one), every configured sink not
//     registered is adopted: registered at its cursor (Start =
//     cursor+1; 1 for a sink that never saved one), Adopted set, the
//     cursor untouched, so a sink whose receiver was down keeps its
//     backlog. Then the marker is written.
//  2. Afterwards a configured sink with no entry is registered per its
//     mode (SinkSpec.StartAt): StartNow at Head+1, StartEarliest at 1,
//     StartOffset at Offset clamped to [1, Head+1]; its cursor is set to
//     Start-1 unless it has one already.
//  3. A configured sink whose entry is removed is listed again (Removed
//     cleared): it resumes from the cursor it kept.
//  4. An entry no longer configured, not removed yet, gets Removed =
//     now. Its cursor, dead letters and state stay until ForgetSink.
//
// A sink listed twice counts once. A call that changes nothing writes
// nothing.
func (db *DB) SyncSinks(configured []SinkSpec, now time.Time) ([]RegisteredSink, error) {
	for _, sp := range configured {
		if err := sp.Check(); err != nil {
			return nil, db.wrap("sync sinks", err)
		}
	}
	now = now.UTC()
	var out []RegisteredSink
	err := db.update(func(tx *bolt.Tx) error {
		out = nil
		meta := tx.Bucket(bucketMeta)
		adopt := meta.Get(keyRegistered) == nil
		changed := adopt
		reg, err := tx.CreateBucketIfNotExists(bucketRegistry)
		if err != nil {
			return err
		}
		head := tx.Bucket(bucketEvents).Sequence()
		cursors := tx.Bucket(bucketCursors)
		listed := make(map[string]bool, len(configured))
		for _, sp := range configured {
			if listed[sp.Name] {
				continue
			}
			listed[sp.Name] = true
			e, ok, err := db.registered(reg, sp.Name)
			if err != nil {
				return err
			}
			switch {
			case ok && e.Removed.IsZero():
				continue
			case ok:
				e.Removed = time.Time{}
			case adopt:
				e = RegisteredSink{Name: sp.Name, Start: cursor(tx, sp.Name) + 1, Added: now, Adopted: true}
			default:
				e = RegisteredSink{Name: sp.Name, Start: sp.StartAt(head), Added: now}
				if cursors.Get([]byte(sp.Name)) == nil {
					if err := cursors.Put([]byte(sp.Name), u64(e.Start-1)); err != nil {
						return err
					}
				}
			}
			if err := putRegistered(reg, e); err != nil {
				return err
			}
			changed = true
		}
		out, err = db.registry(reg)
		if err != nil {
			return err
		}
		for i, e := range out {
			if listed[e.Name] || !e.Removed.IsZero() {
				continue
			}
			out[i].Removed = now
			if err := putRegistered(reg, out[i]); err != nil {
				return err
			}
			changed = true
		}
		if adopt {
			if err := meta.Put(keyRegistered, []byte(now.Format(time.RFC3339Nano))); err != nil {
				return err
			}
		}
		if !changed {
			return errNoop
		}
		return nil
	})
	if errors.Is(err, errNoop) {
		err = nil
	}
	if err != nil {
		return nil, db.wrap("sync sinks", err)
	}
	return out, nil
}

// registered returns the sink's registry entry, if any.
func (db *DB) registered(reg *bolt.Bucket, name string) (RegisteredSink, bool, error) {
	v := reg.Get([]byte(name))
	if v == nil {
		return RegisteredSink{}, false, nil
	}
	e, err := db.decodeRegistered([]byte(name), v)
	return e, err == nil, err
}

// registry returns every entry of reg, by name.
func (db *DB) registry(reg *bolt.Bucket) ([]RegisteredSink, error) {
	var out []RegisteredSink
	err := reg.ForEach(func(k, v []byte) error {
		e, err := db.decodeRegistered(k, v)
		out = append(out, e)
		return err
	})
	return out, err
}

func (db *DB) decodeRegistered(k, v []byte) (RegisteredSink, error) {
	var e RegisteredSink
	if err := json.Unmarshal(v, &e); err != nil {
		return e, corrupt(db.path, fmt.Errorf("registry entry of sink %s: %w", k, err))
	}
	e.Name = string(k)
	return e, nil
}

func putRegistered(reg *bolt.Bucket, e RegisteredSink) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return reg.Put([]byte(e.Name), b)
}

// Sinks returns every registry entry, removed ones too, sorted by name;
// none before the first SyncSinks.
func (db *DB) Sinks() ([]RegisteredSink, error) {
	var out []RegisteredSink
	err := db.view(func(tx *bolt.Tx) error {
		reg := tx.Bucket(bucketRegistry)
		if reg == nil {
			return nil
		}
		var err error
		out, err = db.registry(reg)
		return err
	})
	return out, db.wrap("sinks", err)
}

// ForgetSink deletes everything the store keeps of a sink, in one
// transaction: its registry entry, cursor, dead letters and state. A sink
// the store does not know is no error. The caller makes sure no
// dispatcher delivers to it; a sink of that name configured later is new
// to the store.
func (db *DB) ForgetSink(name string) error {
	if err := checkSink(name); err != nil {
		return db.wrap("forget sink", err)
	}
	err := db.update(func(tx *bolt.Tx) error {
		key := []byte(name)
		if err := tx.Bucket(bucketCursors).Delete(key); err != nil {
			return err
		}
		if err := tx.Bucket(bucketDead).DeleteBucket(key); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
			return err
		}
		if err := tx.Bucket(bucketSinks).Delete(key); err != nil {
			return err
		}
		if reg := tx.Bucket(bucketRegistry); reg != nil {
			return reg.Delete(key)
		}
		return nil
	})
	return db.wrap("forget sink", err)
}
