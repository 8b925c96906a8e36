// Tests of the lease's renewal when its reply or its request is lost:
// a renewal the server stored is recognised (no step-down, same epoch,
// appends go on), one it never got leaves the lease to whoever holds it,
// and a leader never counts on the lease longer than holdFor after the
// last renewal it saw stored.

package jsstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/store/storetest"
)

// loseRenewals makes the next renewals lose what losses say, in order,
// and the later ones nothing, until the test ends.
func loseRenewals(t *testing.T, losses ...renewLoss) {
	t.Helper()
	var n atomic.Int32
	loseRenewal = func() renewLoss {
		if i := int(n.Add(1)) - 1; i < len(losses) {
			return losses[i]
		}
		return lossNone
	}
	t.Cleanup(func() { loseRenewal = nil })
}

// leadAlone opens a store that leads through one step, without Run, so
// each renewal is the test's to call, and returns it with its leadership.
func leadAlone(t *testing.T, url string, o Options) (*Store, leadership) {
	t.Helper()
	s := openStore(t, url, o)
	require.NoError(t, s.step(context.Background()))
	return s, mustLead(t, s, "the first step")
}

// mustLead returns s's leadership, failing the test when s does not lead.
func mustLead(t *testing.T, s *Store, msg string) leadership {
	t.Helper()
	l := s.leading()
	require.NotNil(t, l, "%s: %s stepped down", msg, s.o.ReplicaID)
	return *l
}

// leaseRev reads the lease key's revision from its stream's leader.
func leaseRev(t *testing.T, s *Store) uint64 {
	t.Helper()
	m, err := s.readLease(context.Background())
	require.NoError(t, err)
	return m.seq
}

// renewLosing renews s once, losing what loss says, and returns the lease
// key's revision then and s's leadership, failing if s stepped down.
func renewLosing(t *testing.T, s *Store, loss renewLoss) (uint64, leadership) {
	t.Helper()
	loseRenewals(t, loss)
	l := renewOK(t, s, fmt.Sprintf("renewal losing %d", loss))
	return leaseRev(t, s), l
}

// renewUnknown renews s once, losing what loss says, which leaves s not
// knowing whether the renewal was stored: s leads on as it was, counting
// on nothing more. It returns the lease key's revision then.
func renewUnknown(t *testing.T, s *Store, before leadership, loss renewLoss) uint64 {
	t.Helper()
	rev, l := renewLosing(t, s, loss)
	require.Equal(t, before, l, "not known to be stored: nothing renewed, nothing counted on")
	return rev
}

// renewOK renews s and returns its leadership, failing if s stepped down.
func renewOK(t *testing.T, s *Store, msg string) leadership {
	t.Helper()
	s.renew(context.Background())
	return mustLead(t, s, msg)
}

// ingestOK appends a page with one new log of task id and checks it is
// stored.
func ingestOK(t *testing.T, s *Store, id, log int64) {
	t.Helper()
	res, err := s.Ingest(context.Background(), []diff.Task{storetest.Task(id, log)}, time.UTC, true)
	require.NoError(t, err, "append")
	require.Equal(t, 1, res.Events)
}

// TestLeaseRenewReplyLost: a renewal the server stored but whose reply
// was lost is recognised: the leader keeps leading with the same epoch,
// counts on the lease from that renewal, renews on from its revision, and
// appends go on; on one node and on three (the read-back of a replicated
// bucket).
func TestLeaseRenewReplyLost(t *testing.T) {
	t.Run("one node", func(t *testing.T) {
		renewReplyLost(t, runServer(t).ClientURL(), Options{ReplicaID: "a"})
	})
	t.Run("three nodes", func(t *testing.T) {
		c := runCluster(t, 3)
		renewReplyLost(t, c.nodes[1].ClientURL(), Options{ReplicaID: "a", Replicas: 3})
	})
}

func renewReplyLost(t *testing.T, url string, o Options) {
	s, before := leadAlone(t, url, o)
	ingestOK(t, s, 1, 10)
	epoch := s.Role().Epoch

	stored, lost := renewLosing(t, s, lossReply)
	require.Greater(t, stored, before.leaseRev, "the server stored the renewal")

	next := renewOK(t, s, "the renewal after a lost reply")
	require.Equal(t, stored, lost.leaseRev, "the stored renewal's revision was recognised")
	require.True(t, lost.until.After(before.until), "the recognised renewal extended the lease")
	require.Equal(t, leaseRev(t, s), next.leaseRev)
	require.Greater(t, next.leaseRev, stored)
	require.Equal(t, before.epoch, next.epoch, "same epoch")
	require.Equal(t, before.epochSeq, next.epochSeq, "same epoch record")
	require.Equal(t, epoch, s.Role().Epoch)
	require.Equal(t, "a", s.Role().Leader)
	ingestOK(t, s, 2, 20)
}

// TestLeaseRenewEarlierStored: a renewal stored whose reply and read-back
// were both lost is recognised at the next renewal, whose compare-and-set
// the stored one refuses: the leader adopts its revision without counting
// on the lease any longer (it does not know when that renewal was sent),
// and the renewal after extends the lease again.
func TestLeaseRenewEarlierStored(t *testing.T) {
	srv := runServer(t)
	s, before := leadAlone(t, srv.ClientURL(), Options{ReplicaID: "a"})
	stored := renewUnknown(t, s, before, lossReplyAndReadBack)
	require.Greater(t, stored, before.leaseRev, "the server stored the renewal")

	// This renewal is refused: the key moved on to the stored one.
	adopted := renewOK(t, s, "the earlier renewal stored")
	require.Equal(t, stored, adopted.leaseRev, "its revision adopted")
	require.Equal(t, before.until, adopted.until, "not counted on: when it was sent is unknown")

	renewed := renewOK(t, s, "renewing from the adopted revision")
	require.Greater(t, renewed.leaseRev, stored)
	require.True(t, renewed.until.After(before.until))
	require.Equal(t, before.epoch, renewed.epoch)
	ingestOK(t, s, 1, 10)
}

// TestLeaseRenewNotStored: a renewal the server never got leaves the
// lease as it was: the leader retries at the next tick while the lease
// holds, and steps down at once when the read-back shows another replica
// took the lease meanwhile.
func TestLeaseRenewNotStored(t *testing.T) {
	srv := runServer(t)
	a, before := leadAlone(t, srv.ClientURL(), Options{ReplicaID: "a"})
	ctx := context.Background()

	require.Equal(t, before.leaseRev, renewUnknown(t, a, before, lossRequest), "nothing stored")
	renewed := renewOK(t, a, "the next renewal")
	require.Greater(t, renewed.leaseRev, before.leaseRev)

	// The lease lapses on the server (a delete, as its TTL would) and b
	// takes it; a's next renewal never reaches the server.
	b := openStore(t, srv.ClientURL(), Options{ReplicaID: "b"})
	require.NoError(t, b.leaseKV.Delete(ctx, leaseKey))
	require.NoError(t, b.campaign(ctx))
	require.True(t, b.IsLeader())
	loseRenewals(t, lossRequest)
	a.renew(ctx)
	require.False(t, a.IsLeader(), "a stepped down: b holds the lease")
	require.NotEqual(t, "a", a.Role().Leader)
	_, err := a.Ingest(ctx, []diff.Task{storetest.Task(1, 10)}, time.UTC, true)
	require.ErrorIs(t, err, ErrNotLeader)
	require.True(t, b.IsLeader())
}

// TestLeaseRenewLostLapses: while renewals go unconfirmed the leader
// counts on the lease until holdFor after the last renewal it saw stored,
// and not a moment longer.
func TestLeaseRenewLostLapses(t *testing.T) {
	srv := runServer(t)
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	s, before := leadAlone(t, srv.ClientURL(), Options{ReplicaID: "a", Now: now})
	ctx := context.Background()

	loseRenewals(t, lossRequest, lossRequest)
	s.renew(ctx)
	require.Equal(t, before, mustLead(t, s, "within the lease"), "nothing renewed")
	skew.Store(int64(time.Until(before.until) + time.Millisecond))
	require.False(t, s.IsLeader(), "no longer counted on past holdFor")
	s.renew(ctx)
	require.Equal(t, "", s.Role().Leader, "stepped down")
	s.leadMu.Lock()
	defer s.leadMu.Unlock()
	require.Nil(t, s.lead, "stepped down")
}

// TestLeadWithTailStuck: a replica whose tail reads nothing (its consumer
// waits to be recreated after a NATS node died, up to 10 s) wins the
// lease and writes its epoch record; it reads what its view lacks with a
// consumer of its own and leads, where it used to wait for its tail, give
// up, release the lease and win it again round after round, no replica
// leading meanwhile (the chaos test's NATS node death, once in CI).
func TestLeadWithTailStuck(t *testing.T) {
	srv := runServer(t)
	ctx := context.Background()
	loc := time.FixedZone("CST", 8*3600)
	a, _ := leadAlone(t, srv.ClientURL(), Options{ReplicaID: "a"})
	_, err := a.Ingest(ctx, []diff.Task{storetest.Task(1, 10, 11)}, loc, true)
	require.NoError(t, err)
	b := openStore(t, srv.ClientURL(), Options{ReplicaID: "b"})
	require.Eventually(t, func() bool { h, _ := b.Head(); return h == 2 }, 5*time.Second, 10*time.Millisecond)

	b.stallTail.Store(true)
	_, err = a.Ingest(ctx, []diff.Task{storetest.Task(2, 20, 21, 22)}, loc, true)
	require.NoError(t, err)
	time.Sleep(100 * time.Millisecond)
	h, _ := b.Head()
	require.Equal(t, uint64(2), h, "b's tail is stuck")

	started := time.Now()
	require.NoError(t, b.becomeLeader(ctx, 0, started), "b leads without its tail")
	require.Less(t, time.Since(started), b.commitWait(), "without waiting out the commit wait")
	h, _ = b.Head()
	require.Equal(t, uint64(5), h, "b's view holds what a stored")
	require.NotNil(t, b.v.seenRecord(2).rec, "and the seen records")
	res, err := b.Ingest(ctx, []diff.Task{storetest.Task(2, 20, 21, 22, 23)}, loc, true)
	require.NoError(t, err)
	require.Equal(t, 1, res.Events, "b appends after a's events")
	require.Equal(t, uint64(6), res.FirstOffset)
}

// TestJoinHandsOverWithinATick: a replica joining a leader that owns
// every partition is given its share as soon as the leader revoked them
// from itself: the leader beats at once when its partitions are revoked
// (beatNow), rather than a tick later, which had left the moving
// partitions undelivered for a whole tick (2.5 s with the default lease).
func TestJoinHandsOverWithinATick(t *testing.T) {
	srv := runServer(t)
	o := Options{Lease: 8 * time.Second, Partitions: 4} // a tick of 2 s
	o.ReplicaID = "a"
	a := leadingStore(t, srv.ClientURL(), o)
	require.Eventually(t, func() bool { return len(a.Role().Owned) == 4 }, 10*time.Second, 10*time.Millisecond)
	o.ReplicaID = "b"
	b := openStore(t, srv.ClientURL(), o)
	startRun(t, b)
	var revoked time.Time
	require.Eventually(t, func() bool {
		if revoked.IsZero() && len(a.Role().Owned) < 4 {
			revoked = time.Now()
		}
		return len(b.Role().Owned) == 2
	}, 15*time.Second, 5*time.Millisecond, "b is given its share")
	require.False(t, revoked.IsZero())
	took := time.Since(revoked)
	t.Logf("b owned its share %s after a's were revoked (tick %s)", took.Round(time.Millisecond), a.tick())
	require.Less(t, took, a.tick()/2, "within a heartbeat's round trip, not a tick")
}
