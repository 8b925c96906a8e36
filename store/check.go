package store

// This file owns the corruption checks of the store file: the bounded
// check Open runs before bbolt may write to a file (precheck), and the full
// check (CheckAll, Check) that runs after the store is ready, in the
// background or on an operator's request.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// fullCheckMaxSize is the largest file Open checks completely (every page
// walked and bbolt's consistency check: about 6 ms for 16 MiB in the page
// cache). Larger files get the bounded check, whose cost does not depend on
// the size of the outbox: bbolt's meta page checks, truncation, and a few
// root-to-leaf paths per bucket. CheckAll checks the rest once the store
// is ready.
var fullCheckMaxSize int64 = 64 << 20

// checkYield is how many keys CheckAll's walk visits between looks at its
// context.
const checkYield = 4096

// precheck opens an existing file read-only (shared lock, so it waits for
// a writer like a normal open) and checks it before bbolt is allowed to
// write to it: completely up to fullCheckMaxSize, else bounded.
func precheck(path string, size int64, timeout time.Duration) error {
	rdb, err := openBolt(path, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		return openError(path, timeout, err)
	}
	defer rdb.Close()
	err = func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("bbolt panic: %v", r)
			}
		}()
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		return rdb.View(func(tx *bolt.Tx) error { return checkTx(tx, size, size <= fullCheckMaxSize) })
	}()
	if err != nil {
		return corrupt(path, err)
	}
	return nil
}

// checkTx checks a store file of the given size. It always checks that the
// file holds every page the meta page counts and walks a few root-to-leaf
// paths of every bucket; with full it walks every page of every bucket and
// runs bbolt's consistency check. It must run with SetPanicOnFault, and
// with full in a transaction no writer runs alongside (a read-only file, or
// the write transaction).
func checkTx(tx *bolt.Tx, size int64, full bool) error {
	if need := tx.Size(); need > size {
		return fmt.Errorf("file is truncated: %d bytes, its pages need %d", size, need)
	}
	if !full {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return sampleBucket(b, bytes.Equal(name, bucketDead))
		})
	}
	if err := tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		return walkBucket(context.Background(), b, name, 0, nil)
	}); err != nil {
		return err
	}
	return bboltCheck(tx)
}

// bboltCheck runs bbolt's page accounting check (every page below the high
// water mark reachable once or free, key order within and across pages)
// and returns its first error. It must not run in a read transaction while
// writers run: it reads the writer's freelist.
func bboltCheck(tx *bolt.Tx) error {
	var first error
	for err := range tx.Check() {
		if first == nil {
			first = err
		}
	}
	return first
}

// walker visits every key of a bucket tree. Its tick is called every
// checkYield keys.
type walker struct {
	n    int
	tick func() error
}

// walkBucket visits every key of b and its nested buckets, which makes
// bbolt read every branch and leaf page, and checks that keys strictly
// increase and that outbox values have a valid header. w may be nil.
func walkBucket(ctx context.Context, b *bolt.Bucket, name []byte, depth int, w *walker) error {
	if depth > 4 {
		return errors.New("buckets nested too deep")
	}
	events := depth == 0 && bytes.Equal(name, bucketEvents)
	var prev []byte
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if prev != nil && bytes.Compare(prev, k) >= 0 {
			return fmt.Errorf("bucket %s: key %x after %x", name, k, prev)
		}
		prev = append(prev[:0], k...)
		if w != nil {
			if w.n++; w.n%checkYield == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
				if err := w.tick(); err != nil {
					return err
				}
			}
		}
		if v == nil {
			if nb := b.Bucket(k); nb != nil {
				if err := walkBucket(ctx, nb, k, depth+1, w); err != nil {
					return err
				}
			}
			continue
		}
		if events {
			if len(k) != 8 {
				return fmt.Errorf("outbox key %x", k)
			}
			if _, err := decodeHeader(v); err != nil {
				return fmt.Errorf("event %d: %w", binary.BigEndian.Uint64(k), err)
			}
		}
	}
	return nil
}

// sampleBucket reads the first and last keys of b and a few keys spread
// between them, which makes bbolt read a few root-to-leaf paths. For the
// dead-letter bucket it samples every sink's nested bucket.
func sampleBucket(b *bolt.Bucket, nested bool) error {
	c := b.Cursor()
	first, _ := c.First()
	last, _ := c.Last()
	if len(first) == 8 && len(last) == 8 {
		lo, hi := binary.BigEndian.Uint64(first), binary.BigEndian.Uint64(last)
		for i := uint64(1); i < 16 && hi-lo >= 16; i++ {
			c.Seek(u64(lo + (hi-lo)/16*i))
		}
	}
	if !nested {
		return nil
	}
	return b.ForEachBucket(func(k []byte) error {
		return sampleBucket(b.Bucket(k), false)
	})
}

// CheckAll runs the full consistency check of the store file that Open
// leaves out for files over 64 MiB, and returns the first corruption found
// as an error wrapping ErrCorrupt, nil if there is none, or ctx.Err() if ctx
// ends first. Run it in the background once the relay is ready, and when an
// operator asks for it.
//
// It works in two steps. First, in a read transaction that does not block
// writers and stops within a few milliseconds of ctx ending, it reads every
// page of every bucket and checks that keys increase and that every outbox
// value has a valid header. Then, in a write transaction that is rolled
// back, bbolt's check accounts for every page (reachable exactly once, or
// free) and checks key order across pages; writers wait for this step
// (about 0.4 s per GiB in the page cache), which does not look at ctx once
// started. The pages both steps read are dropped from the process's mapping
// as they go, so the resident set grows by a few MB, not by the file size.
func (db *DB) CheckAll(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := db.walkAll(ctx); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return db.checkPages()
}

// Check is CheckAll without a context.
func (db *DB) Check() error { return db.CheckAll(context.Background()) }

// walkAll is CheckAll's first step.
func (db *DB) walkAll(ctx context.Context) (err error) {
	err = db.view(func(tx *bolt.Tx) error {
		size := tx.Size()
		w := &walker{tick: func() error {
			releasePages(db.bolt.Info().Data, size)
			return nil
		}}
		if !canRelease {
			w.tick = func() error { return nil }
		}
		defer func() { _ = w.tick() }()
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return walkBucket(ctx, b, name, 0, w)
		})
	})
	var ce *corruptError
	switch {
	case err == nil || errors.Is(err, ErrClosed) || errors.As(err, &ce):
		return err
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return err
	}
	return corrupt(db.path, err)
}

// checkPages is CheckAll's second step.
func (db *DB) checkPages() (err error) {
	if db.closed.Load() {
		return ErrClosed
	}
	defer db.recoverCorrupt(&err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	// bbolt's check is only safe alongside writers when it runs in the
	// write transaction itself; it is rolled back.
	tx, err := db.bolt.Begin(true)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	} else if err != nil {
		return fmt.Errorf("store %s: check: %w", db.path, err)
	}
	defer func() { _ = tx.Rollback() }()
	defer db.releaseWhile(tx.Size())()
	if err := bboltCheck(tx); err != nil {
		return corrupt(db.path, err)
	}
	return nil
}

// releaseInterval is how often releaseWhile drops the mapped pages. bbolt's
// check reads some 10-20 MB in that time, which bounds what it adds to the
// resident set (for 1M events: 43-54 MB instead of 941 MB, for 0.4 s of
// check instead of 0.3 s).
const releaseInterval = 2 * time.Millisecond

// releaseWhile drops the process's mapping of the first size bytes of the
// file every releaseInterval, and once more when the returned function is
// called, which waits for it to stop. The caller must hold a transaction
// for the whole time, so that bbolt does not remap the file meanwhile.
func (db *DB) releaseWhile(size int64) (stop func()) {
	if !canRelease {
		return func() {}
	}
	data := db.bolt.Info().Data
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(releaseInterval)
		defer t.Stop()
		for {
			releasePages(data, size)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
		releasePages(data, size)
	}
}
