// Tests that every task is stored whole (batch.go, ingest.go): a task with
// thousands of new logs commits its events and its seen record in one
// atomic batch, a crash between an Ingest's batches loses and repeats
// nothing, and readers get such a task's events, packed in several
// messages of one batch, in offset order.

package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/diff/difftest"
)

// bigLogs is the number of new logs of the big task of these tests.
const bigLogs = 5000

// decodeTasks decodes a JSON array of tasks (difftest.TasksJSON).
func decodeTasks(t testing.TB, data []byte) []diff.Task {
	t.Helper()
	var tasks []diff.Task
	require.NoError(t, json.Unmarshal(data, &tasks))
	return tasks
}

// bigTask is task 5000 with bigLogs new logs, ids 100,000 on.
func bigTask(t testing.TB) diff.Task {
	return decodeTasks(t, difftest.TasksJSON(5000, 1, bigLogs, 100_000))[0]
}

// mixedPage is 1,200 tasks of one new log (tasks 1-1,200, logs 1-1,200),
// the big task, then 1,000 more (tasks 5,001-6,000, logs 1,201-2,200):
// three batches or so, the big task in one of them.
func mixedPage(t testing.TB) []diff.Task {
	return slices.Concat(
		decodeTasks(t, difftest.TasksJSON(1, 1200, 1, 1)),
		[]diff.Task{bigTask(t)},
		decodeTasks(t, difftest.TasksJSON(5001, 1000, 1, 1201)))
}

// logIDs returns the event id of every log of tasks.
func logIDs(tasks []diff.Task) map[string]bool {
	ids := map[string]bool{}
	for _, tk := range tasks {
		for _, l := range tk.Logs {
			ids["log-"+strconv.FormatInt(l.ID, 10)] = true
		}
	}
	return ids
}

// requireWhole checks that s holds exactly one event per log of page,
// offsets dense from 1, each task's events in the order of its logs, and
// that every log is marked seen (the page again appends nothing).
func requireWhole(t *testing.T, s *Store, page []diff.Task) {
	t.Helper()
	ctx := context.Background()
	want := logIDs(page)
	evs, err := s.Read(ctx, 0, len(want)+10)
	require.NoError(t, err)
	lastLog := map[int64]int64{}
	got := map[string]bool{}
	for i, ev := range evs {
		require.Equal(t, uint64(i+1), ev.Offset, "offsets dense from 1")
		require.False(t, got[ev.ID], "%s stored twice", ev.ID)
		got[ev.ID] = true
		id, err := strconv.ParseInt(strings.TrimPrefix(ev.ID, "log-"), 10, 64)
		require.NoError(t, err)
		require.Greater(t, id, lastLog[ev.Data.TaskID], "task %d's events in log order", ev.Data.TaskID)
		lastLog[ev.Data.TaskID] = id
	}
	require.Equal(t, len(want), len(got), "one event per log")
	for id := range want {
		require.True(t, got[id], "%s lost", id)
	}
	if s.IsLeader() {
		res, err := s.Ingest(ctx, page, benchLoc, true)
		require.NoError(t, err)
		require.Zero(t, res.Events, "every log marked seen")
		require.Equal(t, len(page), res.Skipped)
	}
}

// TestWholeTaskCrash: an Ingest of a page holding a task of 5,000 new
// logs is killed (its connection closed, as a crash would) after its
// first batch, then, on a new server, after its second, and so on up to
// its last; each time a new leader on the same stream ingests the page
// again. Every log has exactly one event, none is stored twice, offsets
// are dense from 1, the big task's seen record marks all its logs.
func TestWholeTaskCrash(t *testing.T) {
	for _, c := range []struct {
		name string
		page func(testing.TB) []diff.Task
	}{
		{"alone", func(t testing.TB) []diff.Task { return []diff.Task{bigTask(t)} }},
		{"mixed", mixedPage},
	} {
		done := false
		for kill := 1; !done; kill++ {
			require.Less(t, kill, 20, "the Ingest never ended")
			if !t.Run(fmt.Sprintf("%s/%d", c.name, kill), func(t *testing.T) {
				done = crashAfter(t, c.page(t), kill)
			}) {
				break // failed, or left out by -run
			}
		}
	}
}

// crashAfter ingests page into a new server's store, closing the store's
// connection right after batch kill committed, then ingests it again
// through a new leader and checks the outbox holds it whole. It reports
// whether kill was the Ingest's last batch.
func crashAfter(t *testing.T, page []diff.Task, kill int) (last bool) {
	srv := runServer(t)
	ctx := context.Background()
	a := leadingStore(t, srv.ClientURL(), Options{ReplicaID: "a"})
	batches := 0
	afterBatch = func() {
		batches++
		if batches == kill {
			a.nc.Close()
		}
	}
	_, err := a.Ingest(ctx, page, benchLoc, true)
	afterBatch = nil
	t.Logf("killed after batch %d; the Ingest returned %v", kill, err)
	a.Close()

	b := leadingStore(t, srv.ClientURL(), Options{ReplicaID: "b"})
	_, err2 := b.Ingest(ctx, page, benchLoc, true)
	require.NoError(t, err2, "the page again, on the new leader")
	requireWhole(t, b, page)
	// A replica reading the stream from the start agrees.
	r := openStore(t, srv.ClientURL(), Options{ReplicaID: "r"})
	want, _ := b.Head()
	require.Eventually(t, func() bool { h, _ := r.Head(); return h == want }, 10*time.Second, 10*time.Millisecond)
	requireWhole(t, r, page)
	return err == nil && batches == kill
}

// TestWholeTaskBatch: a page of many small tasks and one of 5,000 new
// logs commits with each task whole: every batch holds each of its tasks'
// events and seen record, the big task's events packed in several event
// messages of one batch; readers (the leader's view, a tailing replica,
// one whose evicted bodies are read back from the stream, a partition)
// get them in offset order.
func TestWholeTaskBatch(t *testing.T) {
	srv := runServer(t)
	ctx := context.Background()
	s := leadingStore(t, srv.ClientURL(), Options{ReplicaID: "a"})
	page := mixedPage(t)
	type batch struct{ first, last uint64 } // stream sequences
	var batches []batch
	last := func() uint64 {
		info, err := s.stream.Info(ctx)
		require.NoError(t, err)
		return info.State.LastSeq
	}
	prev := last()
	afterBatch = func() {
		s.v.mu.RLock()
		seq := s.v.headSeq
		s.v.mu.RUnlock()
		batches = append(batches, batch{prev + 1, seq})
		prev = seq
	}
	res, err := s.Ingest(ctx, page, benchLoc, true)
	afterBatch = nil
	require.NoError(t, err)
	require.Equal(t, len(logIDs(page)), res.Events)
	require.Equal(t, len(page), res.Changed)
	require.Greater(t, len(batches), 1, "the page needs several batches")

	// Each task's events and seen record are in one batch.
	inBatch := func(seq uint64) int {
		for i, b := range batches {
			if seq >= b.first && seq <= b.last {
				return i
			}
		}
		t.Fatalf("sequence %d in no batch", seq)
		return -1
	}
	evBatch := map[int64]map[int]bool{}   // task -> batches holding its events
	evMsgs := map[int64]map[uint64]bool{} // task -> messages holding its events
	seenBatch := map[int64]int{}          // task -> batch holding its seen record
	for seq := batches[0].first; seq <= batches[len(batches)-1].last; seq++ {
		m, err := s.stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // an earlier batch's head, rolled up by the next one's
		}
		require.NoError(t, err)
		kind, arg, _ := strings.Cut(strings.TrimPrefix(m.Subject, s.subj), ".")
		switch kind {
		case "ev":
			require.Equal(t, byte(s2Block), m.Data[0], "event messages are stored compressed")
			frames, err := eventFrames(m.Data)
			require.NoError(t, err)
			require.NoError(t, parseFrames(frames, func(_ uint64, task, _ int64, _ string, _ []byte) {
				if evBatch[task] == nil {
					evBatch[task], evMsgs[task] = map[int]bool{}, map[uint64]bool{}
				}
				evBatch[task][inBatch(seq)] = true
				evMsgs[task][seq] = true
			}))
		case "seen":
			require.True(t, isPack(arg), "seen records are packed: %s", m.Subject)
			require.NoError(t, parsePack(m.Data, func(_ byte, task int64, _ []byte) { seenBatch[task] = inBatch(seq) }))
		}
	}
	require.Len(t, evBatch, len(page))
	require.Len(t, seenBatch, len(page))
	for task, b := range seenBatch {
		require.Equal(t, map[int]bool{b: true}, evBatch[task], "task %d's events and seen record in one batch", task)
	}
	require.Greater(t, len(evMsgs[5000]), 1, "the big task's events fill several messages")
	t.Logf("%d batches; the big task's events in %d messages", len(batches), len(evMsgs[5000]))

	requireWhole(t, s, page)
	r := openStore(t, srv.ClientURL(), Options{ReplicaID: "r"})
	want, _ := s.Head()
	require.Eventually(t, func() bool { h, _ := r.Head(); return h == want }, 10*time.Second, 10*time.Millisecond)
	requireWhole(t, r, page)

	// A replica without a cache reads the big task's events back from
	// its messages; its partition reads its events in order.
	e := openStore(t, srv.ClientURL(), Options{ReplicaID: "e", CacheBytes: -1})
	require.Eventually(t, func() bool { h, _ := e.Head(); return h == want }, 10*time.Second, 10*time.Millisecond)
	bigFirst := uint64(1201) // after tasks 1-1,200's events
	for _, from := range []uint64{bigFirst, bigFirst + bigLogs/2, bigFirst + bigLogs - 10} {
		got, err := e.Read(ctx, from, 10)
		require.NoError(t, err)
		full, err := s.Read(ctx, from, 10)
		require.NoError(t, err)
		require.Len(t, got, 10)
		for i := range got {
			require.Equal(t, full[i].ID, got[i].ID)
			require.Equal(t, string(full[i].Body), string(got[i].Body), "offset %d", got[i].Offset)
			require.Equal(t, int64(5000), got[i].Data.TaskID)
		}
	}
	p := r.Partition(s.partition(5000))
	part, err := p.Read(ctx, 0, bigLogs+len(page))
	require.NoError(t, err)
	n, bytes := 0, 0
	for i, ev := range part {
		if i > 0 {
			require.Greater(t, ev.Offset, part[i-1].Offset)
		}
		if ev.Data.TaskID == 5000 {
			require.Equal(t, fmt.Sprintf("log-%d", 100_000+n), ev.ID)
			n++
			bytes += len(ev.Body)
		}
	}
	require.Equal(t, bigLogs, n)
	t.Logf("the big task's events: %d bytes of bodies on average", bytes/n)
}

// TestWholeTaskTooBig: a task whose events cannot fit one atomic batch
// even packed is refused, naming the task, and nothing of it is added;
// one that just fits is taken. Each event here is over half a message,
// so it takes a message of its own (the body is shared: no 250 MB).
func TestWholeTaskTooBig(t *testing.T) {
	srv := runServer(t)
	s := leadingStore(t, srv.ClientURL(), Options{ReplicaID: "a"})
	b := s.newBatcher(s.leading())
	body := make([]byte, maxEventMsg/2+1)
	unit := func(task int64, n int) ([]evOut, []outMsg) {
		evs := make([]evOut, n)
		for i := range evs {
			evs[i] = b.event(task, b.next(), diff.TypeTaskCommented, body, b.at)
		}
		return evs, []outMsg{b.rollupMsg("seen", task, []byte{1})}
	}
	evs, msgs := unit(42, MaxBatch-1)
	err := b.add(context.Background(), evs, msgs, nil)
	require.ErrorContains(t, err, "task 42:")
	require.ErrorContains(t, err, "refused rather than stored in parts")
	require.Zero(t, b.count)
	require.Empty(t, b.evs)

	evs, msgs = unit(43, MaxBatch-2)
	require.NoError(t, b.add(context.Background(), evs, msgs, nil))
	require.Equal(t, MaxBatch-1, b.count, "its events, its seen record; the head makes MaxBatch")
}

// TestBatchCount: the messages the batcher counts are those packEvents
// and packMsgs pack, for units of events of any sizes in several
// partitions and seen records of any sizes.
func TestBatchCount(t *testing.T) {
	defer func(n int) { maxBatchBytes = n }(maxBatchBytes)
	maxBatchBytes = math.MaxInt // counting only: this batcher has no stream to flush to
	s := &Store{o: Options{Partitions: 5}, subj: "$INCS.t."}
	b := &batcher{s: s, fill: map[int]msgFill{}, subjs: map[string]bool{}}
	buf := make([]byte, maxEventMsg+100)
	rnd := rand.New(rand.NewPCG(1, 2))
	for task := range int64(300) {
		evs := make([]evOut, rnd.IntN(8))
		for i := range evs {
			size := rnd.IntN(20 << 10)
			if rnd.IntN(50) == 0 {
				size = len(buf) // larger than a message
			}
			evs[i] = b.event(task, b.next(), diff.TypeTaskCommented, buf[:size], 0)
		}
		rec := make([]byte, 1+rnd.IntN(8<<10))
		if rnd.IntN(50) == 0 {
			rec = buf // larger than a pack
		}
		require.NoError(t, b.add(context.Background(), evs, []outMsg{b.rollupMsg("seen", task, rec)}, nil))
		if task%50 == 49 {
			packs, rest := b.packMsgs(b.msgs)
			require.Equal(t, b.count, len(packs)+len(rest)+len(b.packEvents(b.evs)), "after task %d", task)
			require.Greater(t, len(packs), 1, "records fill several packs")
		}
	}
	byOff := map[uint64][]byte{}
	for _, e := range b.evs {
		byOff[e.off] = e.body
	}
	for _, m := range b.packEvents(b.evs) {
		n := 0
		require.NoError(t, parseFrames(m.data, func(off uint64, _, _ int64, _ string, body []byte) {
			// The entry the cache keeps is the frame's body, in the data.
			e := m.evs[n]
			require.Equal(t, off, e.off)
			require.Equal(t, byOff[off], e.body)
			if len(body) > 0 {
				require.Same(t, &body[0], &e.body[0], "entry %d shares the message's data", off)
			}
			n++
		}))
		require.Equal(t, len(m.evs), n)
		require.True(t, len(m.data) <= maxEventMsg || n == 1, "a message of %d bytes, %d events", len(m.data), n)
	}
}

// TestBatchBytes: a page whose events pass maxBatchBytes commits in
// several batches of about that size, each task whole in one of them, so
// a leader holds a few batches' events at a time, not whole pages.
func TestBatchBytes(t *testing.T) {
	defer func(n int) { maxBatchBytes = n }(maxBatchBytes)
	maxBatchBytes = 64 << 10
	srv := runServer(t)
	s := leadingStore(t, srv.ClientURL(), Options{ReplicaID: "a"})
	page := decodeTasks(t, difftest.TasksJSON(1, 60, 10, 1)) // 600 events of about 1 KB
	batches := 0
	afterBatch = func() { batches++ }
	res, err := s.Ingest(context.Background(), page, benchLoc, true)
	afterBatch = nil
	require.NoError(t, err)
	require.Equal(t, 600, res.Events)
	require.GreaterOrEqual(t, batches, 6, "about 600 KB of events in batches of at most 64 KiB")
	requireWhole(t, s, page)
}
