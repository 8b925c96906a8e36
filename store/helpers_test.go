package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/diff/difftest"
	"github.com/incs-relay/incs-relay/diff/jsonscan"
)

var shanghai = func() *time.Location {
	loc, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		return time.FixedZone("CST", 8*3600)
	}
	return loc
}()

// testClock is an injectable clock.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *testClock {
	return &testClock{t: time.Date(2026, 4, 8, 9, 30, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// mustOpen opens a store in t.TempDir(). Its cleanup closes the store and
// runs bbolt's consistency check on the file.
func mustOpen(tb testing.TB, opts ...func(*Options)) *DB {
	tb.Helper()
	return mustOpenPath(tb, filepath.Join(tb.TempDir(), "data", "relay.db"), opts...)
}

func mustOpenPath(tb testing.TB, path string, opts ...func(*Options)) *DB {
	tb.Helper()
	o := Options{Logger: zerolog.New(zerolog.NewTestWriter(tb)).Level(zerolog.InfoLevel)}
	for _, f := range opts {
		f(&o)
	}
	db, err := Open(path, o)
	require.NoError(tb, err)
	tb.Cleanup(func() {
		require.NoError(tb, db.Close())
		verifyFile(tb, path)
	})
	return db
}

func withClock(c *testClock) func(*Options) { return func(o *Options) { o.Now = c.Now } }

func noSync(o *Options) { o.NoSync = true }

// verifyFile runs bbolt's consistency check on a closed store file.
func verifyFile(tb testing.TB, path string) {
	tb.Helper()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	require.NoError(tb, err)
	defer bdb.Close()
	require.NoError(tb, bdb.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	}))
}

// task returns a task with logs of the given ids, created an hour before
// its first log; log types cycle created, assigned, status changed, comment.
func task(id int64, logIDs ...int64) diff.Task {
	t := diff.Task{
		ID:               id,
		CreationID:       104,
		AuthID:           30058,
		Name:             fmt.Sprintf("任务 %d", id),
		Description:      "1111",
		Type:             3,
		UserName:         "Erin",
		UserPhone:        "6281519140316",
		AssigneeUsername: "incs_1",
		Status:           1,
		CreatedAt:        "2026-04-08 17:22:01",
		UpdatedAt:        "2026-04-08 17:28:54",
	}
	for i, lid := range logIDs {
		l := diff.Log{
			ID:        lid,
			Type:      i%4 + 1,
			CreatedAt: fmt.Sprintf("2026-04-08 17:%02d:%02d", 22+int(lid/60%30), lid%60),
		}
		switch l.Type {
		case diff.LogAssigned:
			l.AssigneeUsername = "incs_1"
		case diff.LogStatusChanged:
			l.Status, l.PreStatus = 1, 0
		case diff.LogCommented:
			l.Comment = "已经跟进"
		}
		l.UpdatedAt = l.CreatedAt
		t.Logs = append(t.Logs, l)
	}
	return t
}

// ingest calls Ingest and requires success.
func ingest(tb testing.TB, db *DB, emit bool, tasks ...diff.Task) IngestResult {
	tb.Helper()
	res, err := db.Ingest(context.Background(), tasks, shanghai, emit)
	require.NoError(tb, err)
	return res
}

// readAll returns every stored event.
func readAll(tb testing.TB, db *DB) []diff.Event {
	tb.Helper()
	evs, err := db.Read(context.Background(), 0, 1<<30)
	require.NoError(tb, err)
	return evs
}

// apiPage is the envelope of GET /external/tasks.
type apiPage struct {
	Status  string `json:"status"`
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    struct {
		Total int         `json:"total"`
		Data  []diff.Task `json:"data"`
	} `json:"data"`
	Error json.RawMessage `json:"error"`
}

// pageJSON returns an API response with n tasks of logsPer logs each, task
// ids from firstTask and log ids from firstLog, shaped like the vendor's
// example (Chinese comments and names included).
func pageJSON(firstTask int64, n, logsPer int, firstLog int64) []byte {
	return fmt.Appendf(nil, `{"status":"success","code":200,"message":"","data":{"total":%d,"data":%s},"error":{}}`,
		5000, difftest.TasksJSON(firstTask, n, logsPer, firstLog))
}

// decodePage decodes an API response into its tasks.
func decodePage(tb testing.TB, b []byte) []diff.Task {
	tasks, err := decodePageErr(b)
	if err != nil {
		tb.Fatal(err)
	}
	return tasks
}

// decodePageErr decodes a page the way the poller does: one encoding/json
// pass into a method-less task type, then diff's raw-span attach.
func decodePageErr(b []byte) ([]diff.Task, error) {
	var p wirePage
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, err
	}
	if p.Status != "success" || p.Code != 200 {
		return nil, fmt.Errorf("bad envelope %q %d", p.Status, p.Code)
	}
	tasks := make([]diff.Task, len(p.Data.Data))
	for i := range tasks {
		tasks[i] = diff.Task(p.Data.Data[i])
	}
	data, _ := jsonscan.RawMember(b, "data")
	arr, _ := jsonscan.RawMember(data, "data")
	if els := jsonscan.RawElements(bytes.Clone(arr)); len(els) == len(tasks) {
		for i := range tasks {
			tasks[i].AttachRaw(els[i])
		}
	}
	return tasks, nil
}

type wireTask diff.Task

type wirePage struct {
	Status string `json:"status"`
	Code   int    `json:"code"`
	Data   struct {
		Data []wireTask `json:"data"`
	} `json:"data"`
}
