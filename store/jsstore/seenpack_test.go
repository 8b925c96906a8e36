package jsstore

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store"
	"github.com/incs-relay/incs-relay/store/storetest"
)

// sweepDeadNow deletes the dead seen messages and waits until done.
func (s *Store) sweepDeadNow() {
	deadline := time.Now().Add(5 * time.Second)
	for s.sweeping.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	s.sweepDead()
	for s.sweeping.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
}

// seenMsgs returns the sequences of the stream's seen messages.
func seenMsgs(t *testing.T, s *Store) []uint64 {
	t.Helper()
	ctx := context.Background()
	info, err := s.stream.Info(ctx)
	require.NoError(t, err)
	var seqs []uint64
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.stream.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		if strings.HasPrefix(m.Subject, s.subj+"seen.") && len(m.Data) > 0 {
			seqs = append(seqs, seq)
		}
	}
	return seqs
}

// viewSeen returns a copy of the view's seen records.
func viewSeen(s *Store) map[int64]seenEnt {
	s.v.mu.RLock()
	defer s.v.mu.RUnlock()
	return maps.Clone(s.v.seen)
}

// TestSeenPacks: a page's seen records are packed in one message; a pack
// whose every record a later one supersedes is deleted, one left with
// fewer than half is compacted by the next Ingest and then deleted; a
// removed task stays removed although an older pack held it; a replica
// opened afterwards reads the same records, and diffs against them.
func TestSeenPacks(t *testing.T) {
	defer func(n int) { smallPack = n }(smallPack)
	smallPack = 0 // no merging of small packs here: TestSeenPacks_Merge
	srv := runServer(t)
	ctx := context.Background()
	loc := time.FixedZone("CST", 8*3600)
	s := leadingStore(t, srv.ClientURL(), Options{ReplicaID: "a"})

	page := func(from, n int64, logs ...int64) []diff.Task {
		var tasks []diff.Task
		for id := from; id < from+n; id++ {
			ids := []int64{id * 100}
			for _, l := range logs {
				ids = append(ids, id*100+l)
			}
			tasks = append(tasks, storetest.Task(id, ids...))
		}
		return tasks
	}
	// Pack A: tasks 1-10. Pack B: tasks 11-20.
	_, err := s.Ingest(ctx, page(1, 10), loc, true)
	require.NoError(t, err)
	_, err = s.Ingest(ctx, page(11, 10), loc, true)
	require.NoError(t, err)
	packs := seenMsgs(t, s)
	require.Len(t, packs, 2, "a page's records in one message")
	a, b := packs[0], packs[1]
	require.Equal(t, PackStats{Messages: 2}, s.PackStats())

	// Every task of B changes: B holds none and is deleted.
	res, err := s.Ingest(ctx, page(11, 10, 1), loc, true)
	require.NoError(t, err)
	require.Equal(t, 10, res.Events)
	s.sweepDeadNow()
	_, err = s.stream.GetMsg(ctx, b)
	require.ErrorIs(t, err, jetstream.ErrMsgNotFound, "a pack no record is in is deleted")
	require.EqualValues(t, 1, s.PackStats().Swept)

	// Six of A's ten change: A holds four and is sparse, and the next
	// Ingest (of nothing new) writes the four again: A is deleted.
	_, err = s.Ingest(ctx, page(1, 6, 1), loc, true)
	require.NoError(t, err)
	require.Equal(t, 1, s.PackStats().Sparse)
	res, err = s.Ingest(ctx, page(1, 10, 1)[:6], loc, true)
	require.NoError(t, err)
	require.Zero(t, res.Events)
	s.sweepDeadNow()
	_, err = s.stream.GetMsg(ctx, a)
	require.ErrorIs(t, err, jetstream.ErrMsgNotFound, "a compacted pack is deleted")
	require.Zero(t, s.PackStats().Sparse)
	for id := int64(7); id <= 10; id++ {
		require.NotEqual(t, a, s.v.seenRecord(id).seq, "task %d's record written again", id)
	}

	// Task 3 is deleted; its pack still holds tasks 1-6.
	res, err = s.Delete(ctx, []int64{3}, time.Now())
	require.NoError(t, err)
	require.Equal(t, 1, res.Events)
	s.sweepDeadNow()

	// A new replica reads the same records; only live packs are left.
	r := openStore(t, srv.ClientURL(), Options{ReplicaID: "r"})
	head, _ := s.Head()
	require.Eventually(t, func() bool { h, _ := r.Head(); return h == head }, 5*time.Second, 10*time.Millisecond)
	want := viewSeen(s)
	require.NotContains(t, want, int64(3))
	require.Len(t, want, 19)
	require.Equal(t, want, viewSeen(r), "a new replica's view")
	require.Equal(t, s.PackStats().Messages, r.PackStats().Messages)
	require.Equal(t, s.PackStats().Messages, len(seenMsgs(t, s)), "the stream holds only packs some record is in")

	// And the new replica diffs against them once it leads.
	s.Close()
	startRun(t, r)
	require.Eventually(t, r.IsLeader, 15*time.Second, 10*time.Millisecond)
	tasks := page(1, 20, 1)
	tasks[2] = storetest.Task(3, 300, 301, 302)
	res, err = r.Ingest(ctx, tasks, loc, true)
	require.NoError(t, err)
	require.Equal(t, map[string]int{diff.TypeTaskCreated: 1, diff.TypeTaskAssigned: 5, diff.TypeTaskStatusChanged: 1}, res.Types,
		"task 3 comes back whole (3 logs), tasks 7-10 have a new log each, the others none")
}

// TestSeenLegacyRecords: records an older version wrote, one rolled-up
// message per task, are read as they are, diffed against, and deleted
// once a pack holds their task's record.
func TestSeenLegacyRecords(t *testing.T) {
	srv := runServer(t)
	ctx := context.Background()
	loc := time.FixedZone("CST", 8*3600)
	// A record as this version writes it, published as the older one did.
	src := leadingStore(t, srv.ClientURL(), Options{Name: "src", ReplicaID: "src"})
	_, err := src.Ingest(ctx, []diff.Task{storetest.Task(7, 70, 71)}, loc, true)
	require.NoError(t, err)
	recs, err := src.recordsAt(ctx, src.v.seenRecord(7).seq)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	nc := connect(t, srv.ClientURL())
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	s := openStore(t, srv.ClientURL(), Options{ReplicaID: "a"})
	var legacy []uint64
	for _, id := range []int64{7, 8, 9} { // task 7's record under three ids: the record names no id
		msg := &nats.Msg{Subject: s.subj + "seen." + strconv.FormatInt(id, 10), Data: recs[0].rec, Header: nats.Header{hdrRollup: []string{"sub"}}}
		ack, err := js.PublishMsg(ctx, msg)
		require.NoError(t, err)
		legacy = append(legacy, ack.Sequence)
	}
	s.Close()

	s = leadingStore(t, srv.ClientURL(), Options{ReplicaID: "b"})
	require.Equal(t, legacy[0], s.v.seenRecord(7).seq, "the older record read")
	require.Equal(t, 3, s.PackStats().Small)
	res, err := s.Ingest(ctx, []diff.Task{storetest.Task(7, 70, 71, 72)}, loc, true)
	require.NoError(t, err)
	require.Equal(t, 1, res.Events, "diffed against the older record")
	s.sweepDeadNow()
	for _, seq := range legacy {
		_, err = s.stream.GetMsg(ctx, seq)
		require.ErrorIs(t, err, jetstream.ErrMsgNotFound, "the older records deleted: task 7's superseded, 8's and 9's merged into the pack")
	}
	require.Equal(t, 1, s.PackStats().Messages)
	res, err = s.Ingest(ctx, []diff.Task{storetest.Task(7, 70, 71, 72), storetest.Task(8, 70, 71), storetest.Task(9, 70, 71)}, loc, true)
	require.NoError(t, err)
	require.Zero(t, res.Events, "the merged records diff as before")
}

// TestSeenPacks_Merge: where every batch changes one task, the small
// packs are merged as the Ingests go, so the seen messages stay far fewer
// than the tasks; an idle relay writes nothing; a new replica reads the
// same records.
func TestSeenPacks_Merge(t *testing.T) {
	srv := runServer(t)
	ctx := context.Background()
	loc := time.FixedZone("CST", 8*3600)
	s := leadingStore(t, srv.ClientURL(), Options{ReplicaID: "a"})
	const tasks = 300
	for id := int64(1); id <= tasks; id++ {
		_, err := s.Ingest(ctx, []diff.Task{storetest.Task(id, id*10)}, loc, true)
		require.NoError(t, err)
	}
	st := s.PackStats()
	t.Logf("%d tasks, one a batch: %+v", tasks, st)
	require.LessOrEqual(t, st.Messages, 10, "%+v", st)
	require.LessOrEqual(t, st.Small, 2, "%+v", st)
	s.sweepDeadNow()
	require.Len(t, seenMsgs(t, s), st.Messages, "the merged ones deleted")

	head, _ := s.Head()
	for range 3 {
		_, err := s.Ingest(ctx, nil, loc, true)
		require.NoError(t, err)
	}
	info, err := s.stream.Info(ctx)
	require.NoError(t, err)
	for range 2 {
		_, err := s.Ingest(ctx, nil, loc, true)
		require.NoError(t, err)
	}
	again, err := s.stream.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, info.State.LastSeq, again.State.LastSeq, "an idle relay writes nothing")

	r := openStore(t, srv.ClientURL(), Options{ReplicaID: "r"})
	require.Eventually(t, func() bool { h, _ := r.Head(); return h == head }, 5*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return r.PackStats().Messages == s.PackStats().Messages }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, viewSeen(s), viewSeen(r))
	require.Len(t, viewSeen(r), tasks)
}

// TestParsePack: a pack's records round-trip with their kinds, seen
// records and rule states in packs of their own; damaged data is refused.
func TestParsePack(t *testing.T) {
	b := &batcher{s: &Store{subj: "$INCS.t."}}
	msgs := []outMsg{
		b.rollupMsg("seen", 1, []byte("one")),
		b.rollupMsg("seen", 2, nil), // a removal stays a message of its own
		b.rollupMsg("rule", 1, []byte("rule one")),
		b.rollupMsg("seen", 1<<40, []byte(strings.Repeat("x", 1000))),
		b.rollupMsg("rtask", 1, []byte(`{"id":1}`)),
		b.rollupMsg("rtask", 3, nil),
	}
	packs, rest := b.packMsgs(msgs)
	require.Len(t, packs, 2)
	require.Len(t, rest, 2)
	require.Equal(t, "$INCS.t.seen.2", rest[0].subj)
	require.Equal(t, "$INCS.t.rtask.3", rest[1].subj)
	require.True(t, strings.HasPrefix(packs[0].subj, "$INCS.t.seen.pk."), packs[0].subj)
	require.True(t, strings.HasPrefix(packs[1].subj, "$INCS.t.rule.pk."), packs[1].subj)
	n, _ := recordMsgs([2]msgFill{}, msgs)
	require.Equal(t, 4, n, "two packs, two removals")
	got := map[string]string{}
	for _, p := range packs {
		require.NoError(t, parsePack(p.wire, func(kind byte, task int64, rec []byte) {
			got[string(kind)+strconv.FormatInt(task, 10)] = string(rec)
		}))
	}
	require.Equal(t, map[string]string{"s1": "one", "s1099511627776": strings.Repeat("x", 1000), "r1": "rule one", "t1": `{"id":1}`}, got)
	require.Less(t, len(packs[0].wire), 100, "stored compressed")
	for _, bad := range [][]byte{nil, packs[0].data, packs[0].wire[:len(packs[0].wire)-3], append([]byte{s2Block}, 0xff)} {
		require.ErrorIs(t, parsePack(bad, func(byte, int64, []byte) {}), errBadPack)
	}
}

// TestRulePacks: rule states are packed as seen records are: a write of
// many tasks' rule records and tasks takes one message, not two a task; a
// removed state stays removed although an older pack held it; older
// versions' rule messages are merged; a new replica, and a one-off
// command's reader, read the same states.
func TestRulePacks(t *testing.T) {
	srv := runServer(t)
	ctx := context.Background()
	s := leadingStore(t, srv.ClientURL(), Options{ReplicaID: "a"})
	nc := connect(t, srv.ClientURL())
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	// Two rule states as an older version wrote them, one a message.
	for _, id := range []int64{98, 99} {
		for _, kind := range []string{"rule", "rtask"} {
			msg := &nats.Msg{Subject: s.subj + kind + "." + strconv.FormatInt(id, 10), Data: []byte(fmt.Sprintf(`{"old":%d}`, id)), Header: nats.Header{hdrRollup: []string{"sub"}}}
			_, err := js.PublishMsg(ctx, msg)
			require.NoError(t, err)
		}
	}
	require.Eventually(t, func() bool { return s.PackStats().Messages == 4 }, 5*time.Second, 10*time.Millisecond)

	info, err := s.stream.Info(ctx)
	require.NoError(t, err)
	var ws []store.RuleWrite
	for id := int64(1); id <= 50; id++ {
		ws = append(ws, store.RuleWrite{TaskID: id, Record: []byte(fmt.Sprintf(`{"rule":%d}`, id)), Task: json.RawMessage(fmt.Sprintf(`{"id":%d}`, id))})
	}
	_, err = s.ApplyRules(ctx, ws)
	require.NoError(t, err)
	after, err := s.stream.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, info.State.LastSeq+2, after.State.LastSeq, "50 tasks' rule states in one pack, and the head")

	// Task 1's state removed; task 2's rewritten: the pack of 50 keeps 48.
	_, err = s.ApplyRules(ctx, []store.RuleWrite{{TaskID: 1}, {TaskID: 2, Record: []byte(`{"rule":"two"}`)}})
	require.NoError(t, err)
	// An Ingest merges the small messages: the older ones among them.
	_, err = s.Ingest(ctx, nil, benchLoc, true)
	require.NoError(t, err)
	s.sweepDeadNow()

	states := func(s *Store) map[int64]string {
		got := map[int64]string{}
		require.NoError(t, s.RuleStates(func(id int64, rec []byte) error { got[id] = string(rec); return nil }))
		return got
	}
	want := states(s)
	require.Len(t, want, 51, "50 written, 1 removed, 2 older")
	require.NotContains(t, want, int64(1))
	require.Equal(t, `{"rule":"two"}`, want[2])
	require.Equal(t, `{"old":98}`, want[98])
	s.v.mu.RLock()
	require.Equal(t, `{"id":3}`, string(s.v.ruleTasks[3]))
	require.Equal(t, `{"old":99}`, string(s.v.ruleTasks[99]))
	s.v.mu.RUnlock()
	for _, id := range []int64{98, 99} {
		_, err := s.stream.GetLastMsgForSubject(ctx, s.subj+"rule."+strconv.FormatInt(id, 10))
		require.ErrorIs(t, err, jetstream.ErrMsgNotFound, "task %d's older rule message merged and deleted", id)
	}

	head, _ := s.Head()
	for _, o := range []Options{{ReplicaID: "r"}, {ReplicaID: "reader", Reader: true}} {
		r := openStore(t, srv.ClientURL(), o)
		require.Eventually(t, func() bool { h, _ := r.Head(); return h == head }, 5*time.Second, 10*time.Millisecond)
		require.Equal(t, want, states(r), "%s reads the same states", o.ReplicaID)
	}
}

// TestStageSeenOnly: a batch under way stages its seen records for the
// next Ingest, and not the rule states a compaction packed beside them:
// a rule record taken for a seen record would be diffed against.
func TestStageSeenOnly(t *testing.T) {
	s := &Store{subj: "$INCS.t.", staged: map[int64]stagedSeen{}}
	b := &batcher{s: s}
	packs, rest := b.packMsgs([]outMsg{
		b.rollupMsg("rule", 7, []byte(`{"rule":7}`)),
		b.rollupMsg("rtask", 7, []byte(`{"id":7}`)),
		b.rollupMsg("seen", 8, []byte(`{"seen":8}`)),
		b.rollupMsg("seen", 9, nil),
	})
	p := &pipeBatch{done: make(chan struct{})}
	s.stage(append(rest, packs...), p)
	require.Equal(t, map[int64]stagedSeen{8: {rec: []byte(`{"seen":8}`), by: p}, 9: {by: p}}, s.staged)
}
