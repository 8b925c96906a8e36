// The leader lease and the cluster's roles: Run campaigns for the lease,
// renews it (lease_renew.go) or releases it and writes the epoch record;
// the members bucket and the partition assignment (Role, Changes,
// Rewound, Refresh).

package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// leaseKey is the lease's key in the "<Name>-lease" bucket.
const leaseKey = "leader"

// Role is what a replica knows of the cluster: who leads, and who delivers
// which partitions.
type Role struct {
	Self         string           // this replica
	Leader       string           // replica holding the lease, "" if none
	Epoch        uint64           // the leader's epoch
	LeaseExpires time.Time        // when the lease lapses unless renewed
	Owned        []int            // partitions this replica delivers now
	Assignments  map[string][]int // replica id -> partitions
	Members      []string         // live replicas
	// Configs is each live replica's config digest (SetConfigDigest), as
	// its heartbeat says; replicas that have not set one are absent.
	Configs map[string]string
}

// leaseVal is the lease's value.
type leaseVal struct {
	Leader string `json:"leader"`
	Hash   string `json:"hash,omitempty"`
	// Renewal is a renewal's nonce (none at the winning create): a
	// read-back tells the renewal whose reply was lost by it.
	Renewal uint64 `json:"renewal,omitempty"`
}

// memberVal is a replica's heartbeat in the "<Name>-members" bucket.
type memberVal struct {
	Owned []int     `json:"owned"`
	Hash  string    `json:"hash,omitempty"`
	At    time.Time `json:"at"`
	// Config is the replica's config digest (SetConfigDigest).
	Config string `json:"config,omitempty"`
}

// assignVal is the partition assignment the leader writes: the owner of
// each partition, "" while it is unassigned.
type assignVal struct {
	Epoch  uint64   `json:"epoch"`
	Owners []string `json:"owners"`
}

// ErrConfigMismatch is returned by Run when the leader runs with another
// config hash than this replica.
var ErrConfigMismatch = errors.New("config differs from the leader's")

// Role returns what this replica knows of the cluster now.
func (s *Store) Role() Role {
	s.roleMu.Lock()
	defer s.roleMu.Unlock()
	r := s.role
	r.Owned = slices.Clone(r.Owned)
	r.Members = slices.Clone(r.Members)
	r.Configs = maps.Clone(r.Configs)
	r.Assignments = make(map[string][]int, len(s.role.Assignments))
	for k, v := range s.role.Assignments {
		r.Assignments[k] = slices.Clone(v)
	}
	return r
}

// Changes returns a channel (buffered 1, sent to without blocking) that
// receives after a change of Role: of the leader, the epoch, the members,
// the assignments or Owned. LeaseExpires alone, which moves with every
// renewal, does not signal; read it from Role when needed.
func (s *Store) Changes() <-chan struct{} { return s.changes }

// Rewound returns a channel of sink names rewound by any replica, so
// running partition dispatchers reread their cursors.
func (s *Store) Rewound() <-chan string { return s.rewound }

// updateRole applies fn to the role and signals Changes if it changed.
func (s *Store) updateRole(fn func(r *Role)) {
	s.roleMu.Lock()
	before := s.role
	beforeOwned, beforeMembers := slices.Clone(before.Owned), slices.Clone(before.Members)
	beforeAssign := fmt.Sprint(before.Assignments)
	fn(&s.role)
	changed := before.Leader != s.role.Leader || before.Epoch != s.role.Epoch ||
		!slices.Equal(beforeOwned, s.role.Owned) || !slices.Equal(beforeMembers, s.role.Members) ||
		beforeAssign != fmt.Sprint(s.role.Assignments)
	s.roleMu.Unlock()
	if changed {
		select {
		case s.changes <- struct{}{}:
		default:
		}
	}
}

// Run campaigns for the lease and renews it while held, keeps this
// replica's membership heartbeat, and, on the leader, assigns the
// partitions to the live replicas. It returns when ctx ends or the store
// is closed, after releasing the lease and its partitions, or with
// ErrConfigMismatch when the leader's config hash differs.
func (s *Store) Run(ctx context.Context) error {
	if err := s.checkOpen("run"); err != nil {
		return err
	}
	if s.o.Reader {
		return errors.New("jsstore: run: a store opened as a Reader (one-off commands) takes no part in the cluster")
	}
	s.runWG.Add(1)
	defer s.runWG.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	defer s.release()

	// A watch on the lease wakes a follower the moment the lease is
	// released or expires (its delete marker), rather than at the next
	// tick.
	var freed <-chan jetstream.KeyValueEntry
	if w, err := s.leaseKV.Watch(ctx, leaseKey, jetstream.UpdatesOnly()); err == nil {
		defer w.Stop()
		freed = w.Updates()
	}
	tick := time.NewTicker(s.tick())
	defer tick.Stop()
	for {
		if err := s.step(ctx); err != nil {
			return err
		}
		for waiting := true; waiting; {
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
				waiting = false
			case <-s.beatNow:
				waiting = false
			case e, ok := <-freed:
				if !ok {
					freed = nil
					continue
				}
				waiting = e == nil || e.Operation() == jetstream.KeyValuePut || s.hasLead()
			}
		}
	}
}

// tick is how often Run renews, campaigns and beats: a quarter lease.
func (s *Store) tick() time.Duration { return s.o.Lease / 4 }

// step is one round of Run.
func (s *Store) step(ctx context.Context) error {
	if s.hasLead() {
		s.renew(ctx)
	} else if err := s.campaign(ctx); err != nil {
		return err
	}
	s.heartbeat(ctx)
	// Bound the rest, so a slow cluster never delays the next renewal
	// much beyond its tick.
	ctx, cancel := context.WithTimeout(ctx, s.tick())
	defer cancel()
	s.refreshRole(ctx)
	if s.IsLeader() {
		s.assign(ctx)
	}
	return nil
}

func (s *Store) hasLead() bool {
	s.leadMu.Lock()
	defer s.leadMu.Unlock()
	return s.lead != nil
}

// holdFor is how long after sending a renewal (or the winning create) this
// replica counts on the lease: the TTL less a tenth for clock rate drift.
func (s *Store) holdFor() time.Duration { return s.o.Lease - s.o.Lease/10 }

// campaign tries to take the lease; on success it writes its epoch record
// and leads. It returns ErrConfigMismatch when the live leader's config
// hash differs from ours.
func (s *Store) campaign(ctx context.Context) error {
	val, _ := json.Marshal(leaseVal{Leader: s.o.ReplicaID, Hash: s.o.ConfigHash})
	started := s.o.Now()
	cctx, cancel := context.WithTimeout(ctx, s.tick())
	rev, err := s.leaseKV.Create(cctx, leaseKey, val, jetstream.KeyTTL(s.o.Lease))
	cancel()
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
			s.log.Debug().Err(err).Msg("jsstore: campaign")
		}
		hctx, cancel := context.WithTimeout(ctx, s.tick())
		defer cancel()
		return s.checkLeaderHash(hctx)
	}
	if err := s.becomeLeader(ctx, rev, started); err != nil {
		s.log.Warn().Err(err).Msg("jsstore: won the lease but could not write the epoch; releasing it")
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.leaseKV.Delete(dctx, leaseKey, jetstream.LastRevision(rev))
		cancel()
	}
	return nil
}

// checkLeaderHash compares the live leader's config hash with ours.
func (s *Store) checkLeaderHash(ctx context.Context) error {
	if s.o.ConfigHash == "" {
		return nil
	}
	e, err := s.leaseKV.Get(ctx, leaseKey)
	if err != nil {
		return nil
	}
	var lv leaseVal
	if json.Unmarshal(e.Value(), &lv) != nil || lv.Hash == "" || lv.Hash == s.o.ConfigHash || lv.Leader == s.o.ReplicaID {
		s.mismatches = 0
		return nil
	}
	// A KV Get may be stale (an old leader's value): believe a mismatch
	// seen on two rounds in a row.
	if s.mismatches++; s.mismatches < 2 {
		return nil
	}
	if !strings.HasSuffix(lv.Hash, formatSuffix) && strings.HasSuffix(lv.Hash, s2FormatSuffix) {
		return fmt.Errorf("jsstore: replica %s: %w: the leader %s runs an older incs-relay, which writes a message per seen record and cannot read the packed ones this version writes: old and new replicas cannot run side by side; stop every replica, then start them all on this version (docs/ha.md, Upgrades)", s.o.ReplicaID, ErrConfigMismatch, lv.Leader)
	}
	if !strings.HasSuffix(lv.Hash, s2FormatSuffix) && strings.HasSuffix(lv.Hash, plainFormatSuffix) {
		return fmt.Errorf("jsstore: replica %s: %w: the leader %s runs an older incs-relay, which writes its events uncompressed and cannot read the compressed ones this version writes: old and new replicas cannot run side by side; stop every replica, then start them all on this version (docs/ha.md, Upgrades)", s.o.ReplicaID, ErrConfigMismatch, lv.Leader)
	}
	if !strings.HasSuffix(lv.Hash, plainFormatSuffix) {
		return fmt.Errorf("jsstore: replica %s: %w: the leader %s runs an older incs-relay, which reads the stream's events into memory and prunes them one by one: old and new replicas cannot run side by side; stop every replica, then start them all on this version (docs/ha.md, Upgrades)", s.o.ReplicaID, ErrConfigMismatch, lv.Leader)
	}
	return fmt.Errorf("jsstore: replica %s: %w (leader %s): run every replica with the same config", s.o.ReplicaID, ErrConfigMismatch, lv.Leader)
}

// becomeLeader writes the next epoch record, expecting the last one read
// (so two winners cannot both write one), waits until the tail read it
// (and with it everything the previous leader committed) and leads.
func (s *Store) becomeLeader(ctx context.Context, leaseRev uint64, started time.Time) error {
	subj := s.subj + "epoch"
	var last epochRec
	var lastSeq uint64
	m, err := s.lastMsg(ctx, subj)
	switch {
	case err == nil:
		if err := json.Unmarshal(m.Data, &last); err != nil {
			return fmt.Errorf("epoch record %d: %w", m.Sequence, err)
		}
		lastSeq = m.Sequence
	case errors.Is(err, jetstream.ErrMsgNotFound):
	default:
		return err
	}
	rec := epochRec{Epoch: last.Epoch + 1, Leader: s.o.ReplicaID, At: s.o.Now().UTC()}
	body, _ := json.Marshal(rec)
	ack, err := s.js.Publish(ctx, subj, body, jetstream.WithExpectLastSequencePerSubject(lastSeq))
	if err != nil {
		return fmt.Errorf("epoch record: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, s.commitWait())
	defer cancel()
	if err := s.waitOrCatchUp(wctx, ack.Sequence); err != nil {
		return err
	}
	s.leadMu.Lock()
	s.lead = &leadership{epoch: rec.Epoch, epochSeq: ack.Sequence, leaseRev: leaseRev, until: started.Add(s.holdFor())}
	s.leadMu.Unlock()
	s.log.Info().Str("replica", s.o.ReplicaID).Uint64("epoch", rec.Epoch).Msg("jsstore: leading")
	s.updateRole(func(r *Role) {
		r.Leader, r.Epoch = s.o.ReplicaID, rec.Epoch
		r.LeaseExpires = started.Add(s.o.Lease)
	})
	return nil
}

// stepDown stops leading.
func (s *Store) stepDown(reason string) {
	s.leadMu.Lock()
	was := s.lead != nil
	s.lead = nil
	s.leadMu.Unlock()
	if was {
		s.log.Warn().Str("replica", s.o.ReplicaID).Str("reason", reason).Msg("jsstore: no longer leading")
		s.updateRole(func(r *Role) {
			if r.Leader == s.o.ReplicaID {
				r.Leader = ""
			}
		})
	}
}

// release gives up the lease and the partitions when Run ends.
func (s *Store) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.leadMu.Lock()
	l := s.lead
	s.lead = nil
	s.leadMu.Unlock()
	if l != nil {
		if err := s.leaseKV.Delete(ctx, leaseKey, jetstream.LastRevision(l.leaseRev)); err != nil {
			s.log.Debug().Err(err).Msg("jsstore: release lease")
		}
	}
	_ = s.members.Delete(ctx, s.o.ReplicaID)
	s.updateRole(func(r *Role) {
		if r.Leader == s.o.ReplicaID {
			r.Leader = ""
		}
		r.Owned = nil
	})
}

// heartbeat renews this replica's membership; a replica that could not
// beat for most of a lease gives up its partitions, which the leader moves
// on once the membership lapses.
func (s *Store) heartbeat(ctx context.Context) {
	r := s.Role()
	mv := memberVal{Owned: r.Owned, Hash: s.o.ConfigHash, At: s.o.Now().UTC()}
	if d := s.digest.Load(); d != nil {
		mv.Config = *d
	}
	val, _ := json.Marshal(mv)
	hctx, cancel := context.WithTimeout(ctx, s.tick())
	_, err := s.members.Put(hctx, s.o.ReplicaID, val)
	cancel()
	now := s.o.Now()
	s.roleMu.Lock()
	if err == nil {
		s.lastBeat = now
	}
	// Give up a tick before the membership lapses, so the leader never
	// hands a partition on while this replica may still deliver it.
	cut := now.Sub(s.lastBeat) > s.o.Lease-s.tick()
	s.roleMu.Unlock()
	if cut != s.cutOff.Load() {
		s.cutOff.Store(cut)
		s.refreshAssignment()
	}
}

// Refresh reads who holds the lease and which replicas are live into
// Role, for a store that does not Run (a one-off command such as status);
// Run keeps Role current by itself.
func (s *Store) Refresh(ctx context.Context) {
	s.refreshRole(ctx)
	s.refreshAssignment()
}

// refreshRole reads the lease and the members.
func (s *Store) refreshRole(ctx context.Context) {
	var leader string
	var expires time.Time
	if e, err := s.leaseKV.Get(ctx, leaseKey); err == nil {
		var lv leaseVal
		if json.Unmarshal(e.Value(), &lv) == nil {
			leader, expires = lv.Leader, e.Created().Add(s.o.Lease)
		}
	}
	if l := s.leading(); l != nil {
		leader = s.o.ReplicaID
	} else if leader == s.o.ReplicaID {
		leader = "" // a lease this replica no longer counts on
	}
	members, err := s.liveMembers(ctx)
	s.v.mu.RLock()
	epoch := s.v.epoch.Epoch
	s.v.mu.RUnlock()
	s.updateRole(func(r *Role) {
		r.Leader, r.LeaseExpires, r.Epoch = leader, expires, epoch
		if leader == "" {
			r.LeaseExpires = time.Time{}
		}
		if err == nil {
			r.Members = slices.Sorted(maps.Keys(members))
			r.Configs = make(map[string]string, len(members))
			for id, mv := range members {
				if mv.Config != "" {
					r.Configs[id] = mv.Config
				}
			}
		}
	})
}

// liveMembers returns the live replicas and the heartbeat of each (the
// partitions it reports delivering, its config digest).
func (s *Store) liveMembers(ctx context.Context) (map[string]memberVal, error) {
	keys, err := s.members.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]memberVal{}
	for id := range keys.Keys() {
		e, err := s.members.Get(ctx, id)
		if err != nil {
			continue
		}
		var mv memberVal
		_ = json.Unmarshal(e.Value(), &mv)
		out[id] = mv
	}
	return out, nil
}

// SetConfigDigest sets the config digest this replica's heartbeats carry
// from the next one on (each replica reads its own file; a reload changes
// it), so that every replica's Role.Configs shows which file each runs.
func (s *Store) SetConfigDigest(d string) { s.digest.Store(&d) }

// refreshAssignment recomputes Owned and Assignments from the state
// bucket's assignment.
func (s *Store) refreshAssignment() {
	var a assignVal
	if v, ok := s.state.get(keyAssign); ok {
		_ = json.Unmarshal(v, &a)
	}
	assignments := map[string][]int{}
	var owned []int
	for p, id := range a.Owners {
		if id == "" {
			continue
		}
		assignments[id] = append(assignments[id], p)
		if id == s.o.ReplicaID && !s.cutOff.Load() {
			owned = append(owned, p)
		}
	}
	revoked := false
	s.updateRole(func(r *Role) {
		for _, p := range r.Owned {
			revoked = revoked || !slices.Contains(owned, p)
		}
		r.Owned, r.Assignments = owned, assignments
	})
	if revoked {
		// Beat now rather than at the next tick: the leader gives a
		// revoked partition on only once this replica's heartbeat no
		// longer lists it, and a join left half the partitions
		// undelivered for a whole tick (2.5 s with the default lease).
		select {
		case s.beatNow <- struct{}{}:
		default:
		}
	}
}

// assign (on the leader) gives every partition to a live replica, evenly.
// A partition moves in two steps: revoked from its owner, then, once the
// owner's heartbeat no longer lists it, given to another; a dead owner's
// partitions move at once.
func (s *Store) assign(ctx context.Context) {
	lead := s.leading()
	if lead == nil {
		return
	}
	live, err := s.liveMembers(ctx)
	if err != nil {
		return
	}
	if _, ok := live[s.o.ReplicaID]; !ok {
		live[s.o.ReplicaID] = memberVal{Owned: s.Role().Owned}
	}
	ids := make([]string, 0, len(live))
	for id := range live {
		ids = append(ids, id)
	}
	sort.Strings(ids)

	var cur assignVal
	raw, _ := s.state.get(keyAssign)
	if raw != nil {
		_ = json.Unmarshal(raw, &cur)
	}
	if cur.Epoch > lead.epoch {
		return // a newer leader assigns
	}
	P := s.o.Partitions
	owners := make([]string, P)
	copy(owners, cur.Owners)
	load := map[string]int{}
	for p, id := range owners {
		if _, ok := live[id]; id != "" && !ok {
			owners[p] = ""
			continue
		}
		if id != "" {
			load[id]++
		}
	}
	// Revoke beyond an even share.
	share := (P + len(ids) - 1) / len(ids)
	for p := P - 1; p >= 0; p-- {
		if id := owners[p]; id != "" && load[id] > share {
			owners[p] = ""
			load[id]--
		}
	}
	// Give free partitions that no live replica still delivers.
	claimed := map[int]string{}
	for id, ps := range live {
		for _, p := range ps.Owned {
			claimed[p] = id
		}
	}
	for p := range owners {
		if owners[p] != "" {
			continue
		}
		target := ""
		if id, ok := claimed[p]; ok {
			if load[id] >= share {
				continue // wait until its owner lets it go
			}
			target = id
		} else {
			for _, id := range ids {
				if target == "" || load[id] < load[target] {
					target = id
				}
			}
		}
		owners[p] = target
		load[target]++
	}
	if slices.Equal(owners, cur.Owners) && cur.Epoch == lead.epoch {
		return
	}
	val, _ := json.Marshal(assignVal{Epoch: lead.epoch, Owners: owners})
	var rev uint64
	s.state.mu.RLock()
	if e, ok := s.state.keys[keyAssign]; ok {
		rev = e.rev
	}
	s.state.mu.RUnlock()
	actx, cancel := context.WithTimeout(ctx, s.tick())
	defer cancel()
	var nrev uint64
	if rev == 0 {
		nrev, err = s.stateKV.Create(actx, keyAssign, val)
	} else {
		nrev, err = s.stateKV.Update(actx, keyAssign, val, rev)
	}
	if err != nil {
		s.log.Debug().Err(err).Msg("jsstore: assign partitions")
		return
	}
	if s.state.set(keyAssign, val, nrev, false) {
		s.refreshAssignment()
	}
}
