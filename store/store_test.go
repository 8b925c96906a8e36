package store

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/incs-relay/incs-relay/diff"
)

// TestMain checks for leaked goroutines and lets the test binary act as a
// second process (see helperCmd).
func TestMain(m *testing.M) {
	switch os.Getenv("STORE_TEST_HELPER") {
	case "hold":
		helperHold(os.Getenv("STORE_TEST_PATH"))
		return
	case "ingest":
		helperIngest(os.Getenv("STORE_TEST_PATH"))
		return
	}
	goleak.VerifyTestMain(m)
}

// helperCmd returns a command that runs this test binary as a helper
// process with the given role on the store at path.
func helperCmd(t *testing.T, role, path string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "STORE_TEST_HELPER="+role, "STORE_TEST_PATH="+path)
	cmd.Stderr = os.Stderr
	return cmd
}

// helperHold opens the store, prints "ready" and keeps it open until its
// stdin closes.
func helperHold(path string) {
	db, err := Open(path, Options{})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	_ = db.Close()
}

// helperIngest ingests pages of new tasks forever, printing the last
// offset of each commit once it is durable.
func helperIngest(path string) {
	db, err := Open(path, Options{})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	for page := int64(0); ; page++ {
		tasks := decodePageOrExit(pageJSON(1+page*10, 10, 4, 1+page*40))
		res, err := db.Ingest(context.Background(), tasks, shanghai, true)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println(res.LastOffset)
	}
}

func TestOpen_CreatesAndReopens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "relay.db")
	db, err := Open(path, Options{})
	require.NoError(t, err)
	assert.Equal(t, path, db.Path())
	ingest(t, db, true, task(1, 10, 11))
	require.NoError(t, db.SetInitialized())
	require.NoError(t, db.Close())

	db = mustOpenPath(t, path)
	head, err := db.Head()
	require.NoError(t, err)
	assert.Equal(t, uint64(2), head)
	ok, err := db.Initialized()
	require.NoError(t, err)
	assert.True(t, ok)
}

func TestOpen_Locked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.db")
	mustOpenPath(t, path)

	start := time.Now()
	_, err := Open(path, Options{Timeout: 300 * time.Millisecond})
	require.ErrorIs(t, err, ErrLocked)
	assert.Less(t, time.Since(start), 2*time.Second)
	assert.Contains(t, err.Error(), "store "+path+" is in use by another process")
}

func TestOpen_LockedByOtherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.db")
	cmd := helperCmd(t, "hold", path)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ready\n", line)

	start := time.Now()
	_, err = Open(path, Options{Timeout: 500 * time.Millisecond})
	require.ErrorIs(t, err, ErrLocked)
	assert.Less(t, time.Since(start), 3*time.Second)

	// Once the other process exits, the store opens.
	require.NoError(t, stdin.Close())
	require.NoError(t, cmd.Wait())
	mustOpenPath(t, path)
}

// TestOpen_Corrupt damages a store file in several ways: each gives
// ErrCorrupt with the recovery hint, without panicking, and leaves the file
// exactly as it was.
func TestOpen_Corrupt(t *testing.T) {
	tests := []struct {
		name    string
		damage  func(t *testing.T, path string)
		bounded bool // use the bounded check of big files
		ok      bool // harmless: the store opens with every event
	}{
		{name: "truncated to half", damage: func(t *testing.T, path string) {
			require.NoError(t, os.Truncate(path, usedSize(t, path)/2))
		}},
		{name: "truncated to half, bounded check", bounded: true, damage: func(t *testing.T, path string) {
			require.NoError(t, os.Truncate(path, usedSize(t, path)/2))
		}},
		{name: "truncated to one page short", damage: func(t *testing.T, path string) {
			require.NoError(t, os.Truncate(path, usedSize(t, path)-int64(pageSize)))
		}},
		{name: "free space after the data cut off", ok: true, damage: func(t *testing.T, path string) {
			require.NoError(t, os.Truncate(path, usedSize(t, path)))
		}},
		{name: "garbage over a data page", damage: func(t *testing.T, path string) {
			overwrite(t, path, 4*int64(pageSize), bytes.Repeat([]byte{0xA5}, pageSize))
		}},
		{name: "garbage over every page after the metas", damage: func(t *testing.T, path string) {
			fi, err := os.Stat(path)
			require.NoError(t, err)
			overwrite(t, path, 2*int64(pageSize), bytes.Repeat([]byte{0x5A}, int(fi.Size())-2*pageSize))
		}},
		{name: "garbage over both meta pages", damage: func(t *testing.T, path string) {
			overwrite(t, path, 0, bytes.Repeat([]byte{0xFF}, 2*pageSize))
		}},
		{name: "not a bbolt file", damage: func(t *testing.T, path string) {
			require.NoError(t, os.WriteFile(path, bytes.Repeat([]byte("not a store\n"), 10000), 0o600))
		}},
		{name: "empty file", damage: func(t *testing.T, path string) {
			require.NoError(t, os.Truncate(path, 0))
		}},
		{name: "tiny file", damage: func(t *testing.T, path string) {
			require.NoError(t, os.Truncate(path, 100))
		}},
		{name: "another application's bbolt file", damage: func(t *testing.T, path string) {
			require.NoError(t, os.Remove(path))
			bdb, err := bolt.Open(path, 0o600, nil)
			require.NoError(t, err)
			require.NoError(t, bdb.Update(func(tx *bolt.Tx) error {
				_, err := tx.CreateBucket([]byte("widgets"))
				return err
			}))
			require.NoError(t, bdb.Close())
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "relay.db")
			db, err := Open(path, Options{NoSync: true})
			require.NoError(t, err)
			for p := range 10 {
				_, err := db.Ingest(context.Background(), decodePage(t, pageJSON(int64(1+p*50), 50, 4, int64(1+p*200))), shanghai, true)
				require.NoError(t, err)
			}
			require.NoError(t, db.Close())
			tt.damage(t, path)
			before, err := os.ReadFile(path)
			require.NoError(t, err)
			if tt.bounded {
				old := fullCheckMaxSize
				fullCheckMaxSize = 0
				t.Cleanup(func() { fullCheckMaxSize = old })
			}

			db, err = Open(path, Options{})
			if tt.ok {
				require.NoError(t, err)
				evs, err := db.Read(context.Background(), 0, 1<<20)
				require.NoError(t, err)
				assert.Len(t, evs, 2000)
				require.NoError(t, db.Close())
				return
			}
			if err == nil {
				// Damage the open check cannot see must surface on use.
				_, err = db.Read(context.Background(), 0, 1<<20)
				require.NoError(t, db.Close())
			}
			require.ErrorIs(t, err, ErrCorrupt)
			assert.Contains(t, err.Error(), "move the file aside and restart with poll.initial: snapshot, or restore a backup")
			assert.Contains(t, err.Error(), path)
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(before, after), "the file was modified")
		})
	}
}

// usedSize returns how much of the store file at path holds pages, which
// is less than its size when it grew ahead of its data.
func usedSize(t *testing.T, path string) int64 {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	require.NoError(t, err)
	defer bdb.Close()
	var n int64
	require.NoError(t, bdb.View(func(tx *bolt.Tx) error {
		n = tx.Size()
		return nil
	}))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Less(t, n/2, fi.Size())
	return n
}

func overwrite(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

func TestOpen_BoundedCheck(t *testing.T) {
	old := fullCheckMaxSize
	fullCheckMaxSize = 0
	t.Cleanup(func() { fullCheckMaxSize = old })

	path := filepath.Join(t.TempDir(), "relay.db")
	db := mustOpenPath(t, path)
	for p := range 5 {
		_, err := db.Ingest(context.Background(), decodePage(t, pageJSON(int64(1+p*100), 100, 4, int64(1+p*400))), shanghai, true)
		require.NoError(t, err)
	}
	require.NoError(t, db.Close())
	db = mustOpenPath(t, path)
	head, err := db.Head()
	require.NoError(t, err)
	assert.Equal(t, uint64(2000), head)
	require.NoError(t, db.Check())
}

func TestDB_CorruptValue(t *testing.T) {
	db := mustOpen(t)
	ingest(t, db, true, task(1, 10))
	// Damage the stored value itself (bbolt's pages stay consistent).
	require.NoError(t, db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEvents).Put(u64(1), []byte("junk"))
	}))
	_, err := db.Read(context.Background(), 0, 10)
	require.ErrorIs(t, err, ErrCorrupt)
	_, err = db.OffsetSince(time.Unix(0, 0))
	require.ErrorIs(t, err, ErrCorrupt)
	require.NoError(t, db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSeen).Put(u64(1), []byte{9, 9, 9})
	}))
	_, err = db.Ingest(context.Background(), nil, shanghai, true)
	require.NoError(t, err)
	_, err = db.Ingest(context.Background(), []diff.Task{task(1, 10, 11)}, shanghai, true)
	require.ErrorIs(t, err, ErrCorrupt)
}

func TestDB_Close(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "relay.db"), Options{})
	require.NoError(t, err)
	ch := db.Notify(context.Background())
	require.NoError(t, db.Close())
	require.NoError(t, db.Close())
	_, ok := <-ch
	assert.False(t, ok, "Notify channel closed by Close")

	_, err = db.Head()
	assert.ErrorIs(t, err, ErrClosed)
	_, err = db.Ingest(context.Background(), []diff.Task{task(1, 1)}, shanghai, true)
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, db.SetCursor("bus", 0), ErrClosed)
	assert.ErrorIs(t, db.Check(), ErrClosed)
	ch2, cancel := db.Subscribe()
	cancel()
	_, ok = <-ch2
	assert.False(t, ok)
}

func TestDB_Check(t *testing.T) {
	db := mustOpen(t)
	ingest(t, db, true, task(1, 10, 11), task(2, 12))
	require.NoError(t, db.Check())
}

// TestCrash kills a process in the middle of ingesting, reopens the store
// and checks that every event it reported committed is there, exactly once
// per log, with contiguous offsets.
func TestCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.db")
	cmd := helperCmd(t, "ingest", path)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	sc := bufio.NewScanner(stdout)
	var committed uint64
	for i := 0; i < 30 && sc.Scan(); i++ {
		committed, err = strconv.ParseUint(strings.TrimSpace(sc.Text()), 10, 64)
		require.NoError(t, err, sc.Text())
	}
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	require.NotZero(t, committed)

	db := mustOpenPath(t, path, func(o *Options) { o.Logger = zerolog.Nop() })
	evs := readAll(t, db)
	require.GreaterOrEqual(t, uint64(len(evs)), committed)
	ids := make(map[string]bool)
	for i, ev := range evs {
		assert.Equal(t, uint64(i+1), ev.Offset)
		assert.False(t, ids[ev.ID], "duplicate %s", ev.ID)
		ids[ev.ID] = true
	}
	// Ingesting everything again adds nothing.
	pages := len(evs) / 40
	for page := range pages {
		res := ingest(t, db, true, decodePage(t, pageJSON(int64(1+page*10), 10, 4, int64(1+page*40)))...)
		assert.Zero(t, res.Events)
	}
}

func decodePageOrExit(b []byte) []diff.Task {
	tasks, err := decodePageErr(b)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	return tasks
}

// TestOpen_DamagedPages fills the body of a sample of pages with random
// bytes, page header intact. Whatever Open, reads and writes do, they must
// not crash the process, and every error must wrap ErrCorrupt.
func TestOpen_DamagedPages(t *testing.T) {
	for _, bounded := range []bool{false, true} {
		t.Run(fmt.Sprintf("bounded=%t", bounded), func(t *testing.T) {
			path := closedStore(t, 20)
			orig, err := os.ReadFile(path)
			require.NoError(t, err)
			if bounded {
				boundedOpen(t)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			pages := len(orig) / pageSize
			for pg := 2; pg < pages; pg += max(1, pages/20) {
				b := bytes.Clone(orig)
				for i := pg*pageSize + 16; i < (pg+1)*pageSize; i++ {
					b[i] = byte(rng.UintN(256))
				}
				require.NoError(t, os.WriteFile(path, b, 0o600))
				err := useDamaged(t, path)
				if err != nil {
					assert.ErrorIs(t, err, ErrCorrupt, "page %d", pg)
				}
			}
		})
	}
}

func useDamaged(t *testing.T, path string) error {
	db, err := Open(path, Options{NoSync: true})
	if err != nil {
		return err
	}
	defer db.Close()
	ctx := context.Background()
	if _, err := db.Read(ctx, 0, 1<<20); err != nil {
		return err
	}
	if _, err := db.Ingest(ctx, decodePage(t, pageJSON(100, 50, 5, 100000)), shanghai, true); err != nil {
		return err
	}
	if _, err := db.Prune(ctx, PruneOptions{Retention: 1, Lookback: 1, Sinks: []string{"bus"}}); err != nil {
		return err
	}
	return db.Check()
}
