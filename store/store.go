package store

// The bbolt store: opening (with its bounded check), the schema version,
// the buckets, errors and closing.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Errors returned by the store. Match them with errors.Is.
var (
	// ErrLocked is returned by Open when another process (or another Open in
	// this process) holds the store and the lock was not released within
	// Options.Timeout.
	ErrLocked = errors.New("in use by another process")

	// ErrCorrupt is returned when the store file is truncated, damaged or not
	// an incs-relay store. The file is left untouched; the error message says
	// how to recover.
	ErrCorrupt = errors.New("store file is corrupt")

	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("store is closed")

	// ErrNotFound is returned when a requested event or key does not exist.
	ErrNotFound = errors.New("not found")
)

// recoverHint tells an operator what to do with a corrupt store.
const recoverHint = "move the file aside and restart with poll.initial: snapshot, or restore a backup"

// schemaVersion is the layout version written to new stores. Open refuses
// stores with a higher version.
const schemaVersion = 1

// Bucket names and meta keys.
var (
	bucketMeta    = []byte("meta")     // schema, initialized, event count
	bucketEvents  = []byte("events")   // offset (8 bytes BE) -> event value
	bucketSeen    = []byte("seen")     // task id (8 bytes BE) -> seen record
	bucketCursors = []byte("cursors")  // sink name -> offset (8 bytes BE)
	bucketDead    = []byte("dead")     // sink name -> bucket: offset -> dead letter JSON
	bucketSinks   = []byte("sinks")    // sink name -> SinkState JSON
	bucketKV      = []byte("kv")       // Meta/SetMeta keys
	bucketRules   = []byte("rules")    // task id (8 bytes BE) -> rule state record (rules.Engine's)
	bucketRuleTsk = []byte("ruletask") // task id (8 bytes BE) -> the task as last read, without logs

	allBuckets = [][]byte{bucketMeta, bucketEvents, bucketSeen, bucketCursors, bucketDead, bucketSinks, bucketKV, bucketRules, bucketRuleTsk}

	keySchema      = []byte("schema")
	keyInitialized = []byte("initialized")
	keyEventCount  = []byte("event_count")
)

// pageSize is the bbolt page size of new store files. Events are about
// 1 KiB; 16 KiB pages hold a dozen of them and cut the write calls of a
// commit fourfold compared with 4 KiB pages.
var pageSize = 16 << 10

// initialMmapSize is the address space mapped for the store at open: 1 GiB
// on 64-bit platforms, bbolt's default growth elsewhere.
const initialMmapSize = (1 << 30) * (strconv.IntSize / 64)

// allocSize is how much the store file grows at a time once it is full.
const allocSize = 4 << 20

// Options configure Open. The zero value is usable.
type Options struct {
	// Timeout bounds the wait for the file lock; default 2s. When another
	// process holds the store, Open returns ErrLocked after it.
	Timeout time.Duration
	// NoSync skips fsync on commit. Only for benchmarks: a crash can lose or
	// corrupt data.
	NoSync bool
	// Logger receives open and prune summaries; default zerolog.Nop().
	Logger zerolog.Logger
	// Now returns the current time; default time.Now. Tests inject a clock.
	Now func() time.Time
}

// DB is an open store. It is safe for concurrent use by multiple goroutines.
type DB struct {
	path string
	bolt *bolt.DB
	log  zerolog.Logger
	now  func() time.Time

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	subMu sync.Mutex
	subs  map[chan struct{}]struct{}

	gcMu    sync.Mutex // group commit of Ingest
	gcBusy  bool
	gcQueue []*ingestReq

	touched touched // bytes read and written since the mapped pages were released

	bg sync.WaitGroup // background work started by Open (countSeen); Close waits
}

// Open opens the store at path, creating the file and its parent directory
// if needed, and checks it. It blocks for at most about opts.Timeout waiting
// for the file lock and returns an error wrapping ErrLocked if the store stays
// in use. A truncated or damaged file gives an error wrapping ErrCorrupt and
// is never replaced or modified. Files up to 64 MiB are checked completely;
// larger ones get a bounded check whose cost does not grow with the outbox:
// run CheckAll once the relay is ready for the rest. Open reads no page in
// proportion to the store's size.
func Open(path string, opts Options) (*DB, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	deadline := time.Now().Add(opts.Timeout)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("store %s: create directory: %w", path, err)
	}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// A new store; bbolt creates and initializes it.
	case err != nil:
		return nil, fmt.Errorf("store %s: %w", path, err)
	case st.IsDir():
		return nil, fmt.Errorf("store %s: is a directory", path)
	case st.Size() == 0:
		return nil, corrupt(path, errors.New("file is empty"))
	default:
		if err := precheck(path, st.Size(), opts.Timeout); err != nil {
			return nil, err
		}
	}

	timeout := max(time.Until(deadline), 100*time.Millisecond)
	bdb, err := openBolt(path, &bolt.Options{
		Timeout:      timeout,
		NoSync:       opts.NoSync,
		FreelistType: bolt.FreelistMapType,
		PageSize:     pageSize, // used for new files only
		// Map address space for a large store up front. bbolt remaps as the
		// file grows, and a remap waits for every read transaction:
		// ingestion stalled for up to 250 ms at each doubling while sinks
		// were reading. Address space is not memory; only pages touched
		// are resident.
		InitialMmapSize: initialMmapSize,
	})
	if err != nil {
		return nil, openError(path, opts.Timeout, err)
	}
	// With the large map, bbolt would grow the file 16 MiB at a time from
	// the start; grow it in smaller steps so that a small store stays small.
	bdb.AllocSize = allocSize
	db := &DB{
		path: path,
		bolt: bdb,
		log:  opts.Logger,
		now:  opts.Now,
		subs: make(map[chan struct{}]struct{}),
	}
	counted, err := db.init()
	if err != nil {
		_ = bdb.Close()
		return nil, err
	}
	if !counted {
		db.bg.Go(db.countSeen)
	}
	if e := db.log.Debug(); e.Enabled() {
		if s, err := db.Stats(); err == nil {
			e.Str("path", path).Uint64("head", s.Head).Uint64("first", s.First).
				Int("events", s.Events).Int64("bytes", s.FileSize).Msg("store opened")
		} else {
			e.Discard()
		}
	}
	return db, nil
}

// init checks the schema version and creates missing buckets. A store
// that has them all is not written to. counted reports whether the store
// has its seen total (a new store gets it here).
func (db *DB) init() (counted bool, err error) {
	complete := false
	err = db.view(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				return nil
			}
		}
		complete = true
		_, counted = seenCount(tx)
		return checkSchema(db.path, tx.Bucket(bucketMeta).Get(keySchema))
	})
	if err != nil || complete {
		return counted, db.wrapInit(err)
	}
	err = db.update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			foreign := false
			_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
				foreign = true
				return nil
			})
			if foreign {
				return corrupt(db.path, errors.New("not an incs-relay store (no meta bucket)"))
			}
		}
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta = tx.Bucket(bucketMeta)
		_, counted = seenCount(tx)
		if k, _ := tx.Bucket(bucketSeen).Cursor().First(); k == nil && !counted {
			if err := meta.Put(keySeenCount, u64(0)); err != nil {
				return err
			}
			counted = true
		}
		v := meta.Get(keySchema)
		if v == nil {
			return meta.Put(keySchema, u64(schemaVersion))
		}
		return checkSchema(db.path, v)
	})
	return counted, db.wrapInit(err)
}

func (db *DB) wrapInit(err error) error {
	var ce *corruptError
	if err == nil || errors.As(err, &ce) {
		return err
	}
	return fmt.Errorf("store %s: init: %w", db.path, err)
}

// checkSchema checks the stored schema version v.
func checkSchema(path string, v []byte) error {
	switch {
	case len(v) != 8:
		return corrupt(path, errors.New("bad schema version"))
	case binary.BigEndian.Uint64(v) > schemaVersion:
		return fmt.Errorf("schema version %d is newer than this build knows (%d)", binary.BigEndian.Uint64(v), schemaVersion)
	}
	return nil
}

// Path returns the path of the store file.
func (db *DB) Path() string { return db.path }

// Close closes the store, waiting for running transactions, and closes every
// Notify channel. It is idempotent; later calls return the first result.
// Every other method returns ErrClosed afterwards.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		db.closed.Store(true)
		db.bg.Wait()
		if err := db.bolt.Close(); err != nil {
			db.closeErr = fmt.Errorf("store %s: close: %w", db.path, err)
		}
		db.subMu.Lock()
		for ch := range db.subs {
			close(ch)
		}
		db.subs = nil
		db.subMu.Unlock()
	})
	return db.closeErr
}

// Notify returns a new channel that receives a value (non-blocking send,
// buffer 1) after every commit that appended events. The subscription lasts
// until ctx ends, which drops it (the channel is not closed), or until
// Close, which closes the channel.
func (db *DB) Notify(ctx context.Context) <-chan struct{} {
	ch, unsubscribe := db.Subscribe()
	context.AfterFunc(ctx, unsubscribe)
	return ch
}

// Subscribers returns how many Notify and Subscribe subscriptions the
// store holds (for tests: a released one is not counted).
func (db *DB) Subscribers() int {
	db.subMu.Lock()
	defer db.subMu.Unlock()
	return len(db.subs)
}

// Subscribe is Notify with an unsubscribe function, which is idempotent and
// stops further sends (it does not close the channel). After Close it
// returns an already closed channel.
func (db *DB) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	db.subMu.Lock()
	defer db.subMu.Unlock()
	if db.subs == nil {
		close(ch)
		return ch, func() {}
	}
	db.subs[ch] = struct{}{}
	return ch, func() {
		db.subMu.Lock()
		defer db.subMu.Unlock()
		delete(db.subs, ch)
	}
}

// wake signals every subscriber without blocking.
func (db *DB) wake() {
	db.subMu.Lock()
	defer db.subMu.Unlock()
	for ch := range db.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// view runs fn in a read transaction. A panic or memory fault raised by
// bbolt on a damaged page becomes an error wrapping ErrCorrupt.
func (db *DB) view(fn func(tx *bolt.Tx) error) (err error) {
	if db.closed.Load() {
		return ErrClosed
	}
	defer db.recoverCorrupt(&err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	err = db.bolt.View(fn)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		err = ErrClosed
	}
	return err
}

// update runs fn in a write transaction, like view.
func (db *DB) update(fn func(tx *bolt.Tx) error) (err error) {
	if db.closed.Load() {
		return ErrClosed
	}
	defer db.recoverCorrupt(&err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	err = db.bolt.Update(fn)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		err = ErrClosed
	}
	return err
}

// recoverCorrupt turns a panic of bbolt (a failed page assertion, or a
// memory fault under SetPanicOnFault) into an error wrapping ErrCorrupt.
func (db *DB) recoverCorrupt(err *error) {
	if r := recover(); r != nil {
		*err = corrupt(db.path, fmt.Errorf("bbolt panic: %v", r))
	}
}

// corrupt returns an error wrapping ErrCorrupt that names the file, the
// problem and the way out.
func corrupt(path string, detail error) error {
	return &corruptError{path: path, err: detail}
}

type corruptError struct {
	path string
	err  error
}

func (e *corruptError) Error() string {
	return fmt.Sprintf("store %s: %v: %v; %s", e.path, ErrCorrupt, e.err, recoverHint)
}
func (e *corruptError) Unwrap() []error { return []error{ErrCorrupt, e.err} }

// openBolt opens a bbolt file, turning panics and memory faults into errors
// and closing the file descriptor (and so the lock) if that happens.
func openBolt(path string, o *bolt.Options) (db *bolt.DB, err error) {
	var f *os.File
	o.OpenFile = func(name string, flag int, perm os.FileMode) (*os.File, error) {
		ff, err := os.OpenFile(name, flag, perm)
		f = ff
		return ff, err
	}
	defer func() {
		if r := recover(); r != nil {
			if f != nil {
				_ = f.Close()
			}
			db, err = nil, fmt.Errorf("bbolt panic: %v", r)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return bolt.Open(path, 0o600, o)
}

// openError classifies an error of bolt.Open.
func openError(path string, timeout time.Duration, err error) error {
	var pe *fs.PathError
	var errno syscall.Errno
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("store %s is %w (waited %s)", path, ErrLocked, timeout)
	case errors.Is(err, ErrCorrupt):
		return err
	case errors.As(err, &pe), errors.As(err, &errno):
		return fmt.Errorf("store %s: open: %w", path, err)
	}
	// ErrInvalid, ErrChecksum, ErrVersionMismatch, "file size too small",
	// invalid meta pages, panics on damaged pages.
	return corrupt(path, err)
}

func be64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}
