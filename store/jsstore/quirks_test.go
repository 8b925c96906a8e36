// Tests pinning server behaviours jsstore relies on (TTL quirks, CAS on
// replicated buckets) and the atomic batch: stored whole or not at all.

package jsstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store/storetest"
)

// TestQuirkUpdateDropsTTL: kv.Update rewrites a key without its per-key
// TTL, so a lease renewed that way would never expire; the store renews
// with a compare-and-set publish that carries the TTL, and its lease does
// expire once renewals stop.
func TestQuirkUpdateDropsTTL(t *testing.T) {
	srv := runServer(t)
	ctx := context.Background()
	s := openStore(t, srv.ClientURL(), Options{ReplicaID: "q"})
	kv := s.leaseKV
	ttl := s.o.Lease

	// The store's renewal.
	require.NoError(t, s.step(ctx))
	require.True(t, s.IsLeader())
	s.renew(ctx)
	require.True(t, s.IsLeader(), "renewed")
	m, err := s.js.Stream(ctx, "KV_"+s.name+"-lease")
	require.NoError(t, err)
	last, err := m.GetLastMsgForSubject(ctx, "$KV."+s.name+"-lease."+leaseKey)
	require.NoError(t, err)
	require.Equal(t, ttl.String(), last.Header.Get(jetstream.MsgTTLHeader), "the renewal carries the TTL")

	// kv.Update on another key created with the same TTL.
	_, err = kv.Create(ctx, "updated", []byte("1"), jetstream.KeyTTL(ttl))
	require.NoError(t, err)
	e, err := kv.Get(ctx, "updated")
	require.NoError(t, err)
	_, err = kv.Update(ctx, "updated", []byte("2"), e.Revision())
	require.NoError(t, err)
	last, err = m.GetLastMsgForSubject(ctx, "$KV."+s.name+"-lease.updated")
	require.NoError(t, err)
	require.Empty(t, last.Header.Get(jetstream.MsgTTLHeader), "kv.Update dropped the TTL")

	// Stop renewing (as a paused leader would) and wait past the TTL.
	time.Sleep(ttl + 1500*time.Millisecond)
	_, err = kv.Get(ctx, leaseKey)
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound, "the store's lease expired")
	_, err = kv.Get(ctx, "updated")
	require.NoError(t, err, "the key kv.Update wrote outlives its TTL")
}

// TestQuirkTTLWholeSeconds: per-message TTLs are whole seconds: below a
// second the server refuses them, fractions are cut off. Options refuse
// a lease that is not whole seconds.
func TestQuirkTTLWholeSeconds(t *testing.T) {
	srv := runServer(t)
	ctx := context.Background()
	s := openStore(t, srv.ClientURL(), Options{ReplicaID: "q"})
	_, err := s.leaseKV.Create(ctx, "short", []byte("x"), jetstream.KeyTTL(500*time.Millisecond))
	var apiErr *jetstream.APIError
	require.ErrorAs(t, err, &apiErr, "a TTL under a second is refused")
	t.Logf("TTL 500ms: %v", err)

	_, err = s.leaseKV.Create(ctx, "fraction", []byte("x"), jetstream.KeyTTL(1900*time.Millisecond))
	require.NoError(t, err)
	start := time.Now()
	require.Eventually(t, func() bool {
		_, err := s.leaseKV.Get(ctx, "fraction")
		return errors.Is(err, jetstream.ErrKeyNotFound)
	}, 5*time.Second, 20*time.Millisecond)
	gone := time.Since(start)
	t.Logf("TTL 1.9s: gone after %s", gone.Round(time.Millisecond))
	require.Less(t, gone, 1800*time.Millisecond, "1.9s is cut to 1s")

	for _, lease := range []time.Duration{1500 * time.Millisecond, 2500 * time.Millisecond, time.Second} {
		o := Options{Lease: lease}
		require.Error(t, o.setDefaults(), "lease %s", lease)
	}
}

// TestQuirkReplicatedCAS: on a replicated bucket a CAS conflict comes
// back as 10164 rather than 10071 when writes race (10071 otherwise), and
// KV Get may be stale; replicas
// campaigning at once, each on its own node, never both win, because
// leadership rests on the CAS result alone.
func TestQuirkReplicatedCAS(t *testing.T) {
	nodes := runCluster(t, 3).nodes
	var stores []*Store
	for i := range 3 {
		stores = append(stores, openStore(t, nodes[i].ClientURL(), Options{Replicas: 3, Name: "camp", ReplicaID: fmt.Sprintf("c%d", i+1)}))
	}
	ctx := context.Background()

	// The error code of a CAS conflict, through kv.Update and through the
	// publish the store renews with.
	kv := stores[0].leaseKV
	rev, err := kv.Create(ctx, "cas", []byte("1"))
	require.NoError(t, err)
	_, err = kv.Update(ctx, "cas", []byte("2"), rev+7)
	var apiErr *jetstream.APIError
	require.ErrorAs(t, err, &apiErr)
	t.Logf("replicated kv.Update conflict: code %d: %v", apiErr.ErrorCode, err)
	require.True(t, isWrongLastSeq(err))
	_, err = stores[1].js.PublishMsg(ctx, &nats.Msg{Subject: "$KV.camp-lease.cas", Data: []byte("3")},
		jetstream.WithExpectLastSequencePerSubject(rev+7), jetstream.WithMsgTTL(2*time.Second))
	require.ErrorAs(t, err, &apiErr)
	t.Logf("replicated CAS publish conflict: code %d", apiErr.ErrorCode)
	require.Contains(t, []jetstream.ErrorCode{jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant}, apiErr.ErrorCode)
	require.True(t, isWrongLastSeq(err), "the store reads either code as a conflict")
	_, err = kv.Create(ctx, "cas", []byte("4"))
	require.ErrorIs(t, err, jetstream.ErrKeyExists)

	// Concurrent CAS writes of one key, one per node: one wins, the
	// others fail with either code.
	codes := map[jetstream.ErrorCode]int{}
	var mu sync.Mutex
	for range 5 {
		e, err := kv.Get(ctx, "cas")
		require.NoError(t, err)
		var wg sync.WaitGroup
		wins := 0
		for i := range 6 {
			s := stores[i%3]
			wg.Go(func() {
				_, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: "$KV.camp-lease.cas", Data: []byte("5")},
					jetstream.WithExpectLastSequencePerSubject(e.Revision()))
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					wins++
					return
				}
				var apiErr *jetstream.APIError
				if errors.As(err, &apiErr) {
					codes[apiErr.ErrorCode]++
				}
				require.True(t, isWrongLastSeq(err), "%v", err)
			})
		}
		wg.Wait()
		require.Equal(t, 1, wins)
	}
	t.Logf("concurrent CAS conflicts by code: %v", codes)

	stale := 0
	for round := range 5 {
		var wg sync.WaitGroup
		for _, s := range stores {
			wg.Go(func() { require.NoError(t, s.campaign(ctx)) })
		}
		wg.Wait()
		leaders := 0
		var lead *Store
		for _, s := range stores {
			if s.IsLeader() {
				leaders++
				lead = s
			}
		}
		require.Equal(t, 1, leaders, "round %d: exactly one winner", round)
		// Each replica reads the lease from its own node right away; a
		// stale answer would name no one or the previous winner.
		for _, s := range stores {
			e, err := s.leaseKV.Get(ctx, leaseKey)
			if err != nil || !bytesContain(e.Value(), lead.o.ReplicaID) {
				stale++
			}
		}
		lead.release()
	}
	t.Logf("stale lease reads right after a win: %d of 15", stale)
}

func bytesContain(b []byte, id string) bool {
	return strings.Contains(string(b), strconv.Quote(id))
}

// TestAtomicBatch: a page is stored whole or not at all.
func TestAtomicBatch(t *testing.T) {
	srv := runServer(t)
	ctx := context.Background()
	loc := time.FixedZone("CST", 8*3600)
	s := leadingStore(t, srv.ClientURL(), Options{ReplicaID: "a"})
	_, err := s.Ingest(ctx, []diff.Task{storetest.Task(1, 10)}, loc, true)
	require.NoError(t, err)
	lastSeq := func() uint64 {
		info, err := s.stream.Info(ctx)
		require.NoError(t, err)
		return info.State.LastSeq
	}
	seq0 := lastSeq()

	// A batch whose last message fails its check stores none of the
	// messages before it.
	lead := s.leading()
	b := s.newBatcher(lead)
	msgs := append(b.packEvents([]evOut{b.event(2, 2, diff.TypeTaskCreated, []byte(`{}`), b.at)}),
		b.rollupMsg("seen", 2, []byte{1}),
		outMsg{subj: s.subj + "head", hdr: nats.Header{hdrExpSubjSeq: []string{"999999"}}, data: []byte("2")})
	_, err = s.publishBatch(ctx, lead, msgs)
	require.True(t, isWrongLastSeq(err), "%v", err)
	require.Equal(t, seq0, lastSeq(), "nothing of the refused batch is stored")

	// A batch missing a message (sequence 2 never arrives) is refused
	// whole at its commit.
	id := "gap"
	for i, seqNo := range []int{1, 3} {
		m := nats.NewMsg(s.subj + "ev.0")
		m.Header.Set(hdrBatchID, id)
		m.Header.Set(hdrBatchSeq, strconv.Itoa(seqNo))
		if i == 1 {
			m.Header.Set(hdrBatchCommit, "1")
			resp, err := s.nc.RequestMsg(m, 5*time.Second)
			require.NoError(t, err)
			require.Contains(t, string(resp.Data), `"error"`)
			continue
		}
		require.NoError(t, s.nc.PublishMsg(m))
	}
	require.Equal(t, seq0, lastSeq(), "an incomplete batch stores nothing")

	// A commit the leader did not see (here a foreign head message) makes
	// its next page fail whole rather than reuse offsets; the retry
	// succeeds.
	s.v.mu.RLock()
	seenHead := s.v.headSeq
	s.v.mu.RUnlock()
	ack, err := s.js.Publish(ctx, s.subj+"head", []byte("1"))
	require.NoError(t, err)
	require.NoError(t, s.v.waitApplied(ctx, ack.Sequence))
	s.v.mu.Lock()
	s.v.headSeq = seenHead // as if the tail had not read it yet
	s.v.mu.Unlock()
	seq1 := lastSeq()
	_, err = s.Ingest(ctx, []diff.Task{storetest.Task(2, 20, 21)}, loc, true)
	require.Error(t, err)
	require.NotErrorIs(t, err, ErrFenced)
	require.Equal(t, seq1, lastSeq(), "the refused page stored nothing")
	require.Nil(t, s.v.seenRecord(2).rec, "nor its seen record")
	s.v.mu.Lock()
	s.v.headSeq = max(s.v.headSeq, ack.Sequence) // the tail reads it at last
	s.v.mu.Unlock()
	res, err := s.Ingest(ctx, []diff.Task{storetest.Task(2, 20, 21)}, loc, true)
	require.NoError(t, err)
	require.Equal(t, uint64(2), res.FirstOffset)

	// A page of 1,400 events and 700 seen records is one batch: events
	// and records count by the messages they are packed in (a page of more than
	// MaxBatch messages goes in several batches of whole tasks:
	// TestWholeTaskBatch); offsets stay dense.
	var tasks []diff.Task
	for i := range int64(700) {
		tasks = append(tasks, storetest.Task(100+i, 1000+10*i, 1001+10*i))
	}
	seq2 := lastSeq()
	batches := 0
	afterBatch = func() { batches++ }
	res, err = s.Ingest(ctx, tasks, loc, true)
	afterBatch = nil
	require.NoError(t, err)
	require.Equal(t, 1, batches)
	require.Equal(t, 1400, res.Events)
	require.Equal(t, 700, res.Changed)
	require.Equal(t, uint64(4), res.FirstOffset)
	require.Equal(t, uint64(1403), res.LastOffset)
	// The seen records packed, the events packed in a message or more
	// per partition, the head.
	require.GreaterOrEqual(t, lastSeq(), seq2+1+uint64(s.Partitions())+1)
	evs, err := s.Read(ctx, 0, 5000)
	require.NoError(t, err)
	require.Len(t, evs, 1403)
	for i, ev := range evs {
		require.Equal(t, uint64(i+1), ev.Offset)
	}
}
