package store

import (
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// bbolt reads the store through a shared read-only memory map, so every
// page a transaction touches stays in the process's resident set until the
// kernel needs the memory back: a relay that delivered 80,000 events had
// its whole 80 MB outbox resident although it never reads a delivered
// event again. The store therefore drops its mapping of the file's pages
// (madvise MADV_DONTNEED, Linux only) each time about releaseEvery bytes
// were read or written through it. The pages stay in the kernel's page
// cache, so a later read is a minor fault, not disk I/O; the mapping and
// the data are unchanged.
const releaseEvery = 4 << 20

// touched counts bytes read or written since the last release.
type touched struct{ n atomic.Int64 }

// add counts n bytes and reports whether a release is due.
func (t *touched) add(n int) bool {
	if t.n.Add(int64(n)) < releaseEvery {
		return false
	}
	return t.n.Swap(0) >= releaseEvery
}

// touch counts n bytes read or written and releases the mapped pages when
// enough were. Call it outside any transaction.
func (db *DB) touch(n int) {
	if db.touched.add(n) {
		db.releaseMapped()
	}
}

// releaseMapped drops the process's mapping of the store's pages. It holds
// a read transaction, which keeps bbolt from remapping the file meanwhile.
func (db *DB) releaseMapped() {
	if !canRelease {
		return
	}
	_ = db.view(func(tx *bolt.Tx) error {
		releasePages(db.bolt.Info().Data, tx.Size())
		return nil
	})
}
