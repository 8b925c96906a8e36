// Record packs: the seen records and rule states of a batch's tasks
// packed in a few messages; the view's count of the records each message
// still holds, the deletion of messages none are left in, and the
// compaction of packs few are left in and of small ones.

package jsstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// A seen pack ("$INCS.<Name>.seen.pk.<id>", a subject of its own for each
// pack) holds the seen records of tasks committed in one batch: one
// message for up to maxEventMsg of records instead of one rolled-up
// "seen.<task>" message each, which cost the server a message stored,
// staged and rolled up per changed task (about 100 a page; half the
// store's work once events were compressed). A task's record is in the
// last message that holds one for it: the view counts, for each message,
// the tasks whose record it still holds (view.recs); one that holds none
// is deleted by the leader (sweepDead), and one that holds fewer than
// half the records it was written with is compacted: its tasks' records
// written again into the next batch (compact, at most compactPacks an
// Ingest), so the packs the stream keeps hold about twice the records'
// bytes at most, and a replica's open reads about that much; small
// messages are merged the same way, so they stay few where each batch
// changes a few tasks.
//
// A removed record (a task deleted or pruned) is still a rolled-up empty
// "seen.<task>" message, as before packs: it is never deleted and comes
// after every older pack that held the task, and the tail reads in stream
// order, so a pack never revives a removed task at open.
// Records written by older versions ("seen.<task>") are read as before,
// merged into packs as small messages, and deleted once a pack holds
// their task's record.
const packToken = "pk."

// Rule states are packed the same way ("$INCS.<Name>.rule.pk.<id>", so a
// one-off command's tail, which skips seen records, still reads them): a
// task's rule record ("rule.<task>") and the task kept with it
// ("rtask.<task>") were two rolled-up messages per write, as seen records
// were one. Each record in a pack carries its kind.

// Record kinds in a pack.
const (
	kindSeen  = 's' // a seen record ("seen.<task>")
	kindRule  = 'r' // a rule record ("rule.<task>")
	kindRTask = 't' // the task kept with a rule record ("rtask.<task>")
)

// packKinds maps a rolled-up message's kind to its record kind in a pack,
// and packFamilies a record kind to its pack family: 0 for seen packs, 1
// for rule packs.
var (
	packKinds    = map[string]byte{"seen": kindSeen, "rule": kindRule, "rtask": kindRTask}
	kindNames    = map[byte]string{kindSeen: "seen", kindRule: "rule", kindRTask: "rtask"}
	packSubjects = [2]string{"seen." + packToken, "rule." + packToken}
)

// packFamilyOf returns the pack family of a record kind.
func packFamilyOf(kind byte) int {
	if kind == kindSeen {
		return 0
	}
	return 1
}

// packRec is one record of a pack: a task's whole record of a kind.
type packRec struct {
	kind byte
	task int64
	rec  []byte
}

// appendPackRec appends a record to a pack's (uncompressed) data: the
// task id as a uvarint, the kind, the record's length as a uvarint, then
// the record.
func appendPackRec(dst []byte, kind byte, task int64, rec []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(task))
	dst = append(dst, kind)
	dst = binary.AppendUvarint(dst, uint64(len(rec)))
	return append(dst, rec...)
}

// packRecLen bounds what appendPackRec adds.
func packRecLen(rec []byte) int { return 2*binary.MaxVarintLen64 + 1 + len(rec) }

var errBadPack = errors.New("bad record pack")

// parsePack calls fn with every record of a pack's data as stored (an S2
// block, see compressFrames); rec is a slice of the decompressed data.
func parsePack(data []byte, fn func(kind byte, task int64, rec []byte)) error {
	if len(data) == 0 || data[0] != s2Block {
		return errBadPack
	}
	recs, err := s2.Decode(nil, data[1:])
	if err != nil {
		return fmt.Errorf("%w: %w", errBadPack, err)
	}
	for len(recs) > 0 {
		task, n := binary.Uvarint(recs)
		if n <= 0 || len(recs) == n {
			return errBadPack
		}
		kind := recs[n]
		recs = recs[n+1:]
		l, n := binary.Uvarint(recs)
		if n <= 0 || l == 0 || uint64(len(recs)-n) < l || kindNames[kind] == "" {
			return errBadPack
		}
		recs = recs[n:]
		fn(kind, int64(task), recs[:l:l])
		recs = recs[l:]
	}
	return nil
}

// isPack reports whether arg, a seen or rule message's subject after
// "seen." or "rule.", is a pack's.
func isPack(arg string) bool { return strings.HasPrefix(arg, packToken) }

// packMsgs returns the packable records of msgs (non-empty seen records,
// rule records and rule tasks) as pack messages, seen records apart from
// rule states, each of at most maxEventMsg of records unless one record
// is larger, and the other messages as they are.
func (b *batcher) packMsgs(msgs []outMsg) (packs, rest []outMsg) {
	var (
		f    [2]msgFill
		last [2]int // each family's open pack in packs
	)
	for _, m := range msgs {
		fam, ok := m.packFamily()
		if !ok {
			rest = append(rest, m)
			continue
		}
		if f[fam].put(packRecLen(m.data)) {
			last[fam] = len(packs)
			packs = append(packs, outMsg{subj: b.s.subj + packSubjects[fam] + nuid.Next(), hdr: nats.Header{}})
		}
		p := &packs[last[fam]]
		kind := packKinds[m.kind]
		p.data = appendPackRec(p.data, kind, m.task, m.data)
		p.recs = append(p.recs, packRec{kind: kind, task: m.task, rec: m.data})
	}
	for i := range packs {
		packs[i].wire = compressFrames(packs[i].data)
	}
	return packs, rest
}

// packFamily reports whether m is a record a pack takes (a seen record, a
// rule record or rule task, not a removal) and the family of packs.
func (m *outMsg) packFamily() (int, bool) {
	kind, ok := packKinds[m.kind]
	if !ok || len(m.data) == 0 {
		return 0, false
	}
	return packFamilyOf(kind), true
}

// msgLive counts the seen records a message was written with, their
// bytes, and the records it still holds (the tasks whose record it is).
type msgLive struct{ live, total, bytes int32 }

// maxDead bounds the dead messages a view remembers for the leader to
// delete: a replica that follows remembers the latest (those a leader
// that failed may have left), so a new leader's first sweep asks at most
// this many deletions, most of them done already; what a view forgot,
// the next replica's open finds again.
const maxDead = 4096

// setRec makes rec, in the message at seq, task id's record of kind
// (v.mu held); an empty rec removes it. The message that held the record
// before holds one fewer.
func (v *view) setRec(kind byte, id int64, seq uint64, rec []byte) {
	switch kind {
	case kindSeen:
		if old, ok := v.seen[id]; ok {
			v.release(old.seq)
		}
		if len(rec) == 0 {
			delete(v.seen, id)
			return
		}
		kept, apart := keptSeen(rec)
		v.seen[id] = seenEnt{seq: seq, rec: kept, apart: apart}
	default:
		vals, at := v.rules, v.ruleAt
		if kind == kindRTask {
			vals, at = v.ruleTasks, v.rtaskAt
		}
		if old, ok := at[id]; ok {
			v.release(old)
			delete(at, id)
		}
		if len(rec) == 0 {
			delete(vals, id)
			return
		}
		// A copy: rec shares its buffer with the message's headers.
		vals[id], at[id] = bytes.Clone(rec), seq
	}
	l := v.recs[seq]
	if l == nil {
		l = &msgLive{}
		v.recs[seq] = l
	}
	l.live++
	l.total++
	l.bytes += int32(len(rec))
	if int(l.bytes) < smallPack {
		v.small[seq] = struct{}{}
	} else {
		delete(v.small, seq)
	}
}

// release counts one record fewer in the message at seq (v.mu held):
// one left with none is dead, one left with fewer than half is sparse.
func (v *view) release(seq uint64) {
	l := v.recs[seq]
	if l == nil {
		return
	}
	l.live--
	switch {
	case l.live <= 0:
		delete(v.recs, seq)
		delete(v.sparse, seq)
		delete(v.small, seq)
		if len(v.dead) >= maxDead {
			v.dead = append(v.dead[:0], v.dead[maxDead/2:]...) // the newest half
		}
		v.dead = append(v.dead, seq)
	case 2*l.live < l.total:
		v.sparse[seq] = struct{}{}
	}
}

// takeDead returns the dead messages remembered and forgets them.
func (v *view) takeDead() []uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	d := v.dead
	v.dead = nil
	return d
}

// sweepDead deletes, in the background, the record messages (seen
// records, rule states) that hold no record any more (the leader runs it
// after each commit). A deletion that fails is tried again after the next
// commit; one the server no longer has (a rolled-up "seen.<task>") is
// done.
func (s *Store) sweepDead() {
	if noSweep || !s.sweeping.CompareAndSwap(false, true) {
		return
	}
	seqs := s.v.takeDead()
	s.sweepMu.Lock()
	if len(seqs) == 0 || s.closed.Load() {
		s.sweepMu.Unlock()
		s.sweeping.Store(false)
		return
	}
	s.wg.Add(1) // before Close waits: see sweepMu
	s.sweepMu.Unlock()
	go func() {
		defer s.wg.Done()
		defer s.sweeping.Store(false)
		for i, seq := range seqs {
			ctx, cancel := context.WithTimeout(s.ctx, requestWait)
			err := s.stream.DeleteMsg(ctx, seq)
			cancel()
			if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) && !errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) {
				s.v.mu.Lock()
				s.v.dead = append(s.v.dead, seqs[i:]...)
				s.v.mu.Unlock()
				s.deadFailed.Add(1)
				if s.ctx.Err() == nil {
					s.log.Warn().Err(err).Uint64("seq", seq).Int("left", len(seqs)-i).Msg("jsstore: could not delete a record message no task's record is in; trying again after the next commit")
				}
				return
			}
			s.deadSwept.Add(1)
		}
	}()
}

// noSweep (tests) leaves dead record messages in the stream, as a leader
// that died before it deleted them.
var noSweep bool

// Compaction bounds: an Ingest rewrites the records still held by at most
// compactPacks sparse packs, and merges the oldest small messages (packs
// written with fewer than smallPack bytes of records, and records older
// versions wrote one a message), at least two and up to mergeBytes. Merging keeps the
// record messages few where each batch changes a few tasks (a poll cycle's
// changes in steady operation, or a stream an older version wrote): it
// only runs while two small ones are left, so the count of small messages
// goes down by one an Ingest at least and an idle relay writes nothing.
// Variables for tests.
var (
	compactPacks = 2
	smallPack    = 32 << 10
	mergeBytes   = 256 << 10
	compactWait  = 250 * time.Millisecond
)

// compact adds to the batch, as units of their own, the records that the
// sparsest packs and the oldest small messages still hold, so those hold
// none once it commits and are deleted (append lock held). A record that
// a batch under way or this one already writes is left: that write
// supersedes it anyway.
//
// Compacting is housekeeping: its reads get compactWait, and what it
// could not read is left for the next Ingest, so a read that waits (the
// connection's node died: a request then waits out its timeout) never
// holds up or fails the page it rides with (TestNodeDeathPause).
func (b *batcher) compact(ctx context.Context) error {
	seqs := b.s.v.compactable()
	if len(seqs) == 0 {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, compactWait)
	msgs, err := b.s.recordMsgsAt(rctx, seqs)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("jsstore: compacting records: %w", ctx.Err())
		}
		b.s.log.Debug().Err(err).Int("read", len(msgs)).Int("of", len(seqs)).Msg("jsstore: compacting records: a read took too long; the rest is left for the next Ingest")
	}
	for _, seq := range seqs {
		for _, r := range msgs[seq] {
			name := kindNames[r.kind]
			if b.s.v.recAt(r.kind, r.task) != seq || (r.kind == kindSeen && b.s.isStaged(r.task)) || b.subjs[b.s.subj+name+"."+strconv.FormatInt(r.task, 10)] {
				continue
			}
			if err := b.add(ctx, nil, []outMsg{b.rollupMsg(name, r.task, r.rec)}, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// recAt returns the sequence of the message holding task id's record of
// kind; 0 if it has none.
func (v *view) recAt(kind byte, id int64) uint64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	switch kind {
	case kindSeen:
		return v.seen[id].seq
	case kindRule:
		return v.ruleAt[id]
	default:
		return v.rtaskAt[id]
	}
}

// compactable returns the record messages compact rewrites, oldest first:
// up to compactPacks sparse packs, then, while at least two small messages
// are left, the oldest of them up to mergeBytes.
func (v *view) compactable() []uint64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	sparse := slices.Sorted(maps.Keys(v.sparse))
	seqs := sparse[:min(len(sparse), compactPacks)]
	if len(v.small) < 2 {
		return seqs
	}
	small := slices.Sorted(maps.Keys(v.small))
	n, bytes := 0, 0
	for _, seq := range small {
		if slices.Contains(seqs, seq) {
			continue
		}
		size := int(v.recs[seq].bytes)
		if n >= 2 && bytes+size > mergeBytes {
			break
		}
		seqs = append(seqs, seq)
		n, bytes = n+1, bytes+size
	}
	if n < 2 {
		seqs = seqs[:len(seqs)-n] // a single small one is left as it is
	}
	return seqs
}

// isStaged reports whether a batch under way holds a record of task id.
func (s *Store) isStaged(id int64) bool {
	s.stagedMu.Lock()
	defer s.stagedMu.Unlock()
	_, ok := s.staged[id]
	return ok
}

// recordsAt returns the records of the message at seq: a pack's (seen
// records or rule states), or one record an older version wrote alone on
// "seen.<task>", "rule.<task>" or "rtask.<task>". It reads by a direct
// get, and from the stream's leader when that finds nothing (see
// getNext).
func (s *Store) recordsAt(ctx context.Context, seq uint64) ([]packRec, error) {
	m, err := s.getNext(ctx, seq, "")
	if err != nil {
		return nil, fmt.Errorf("records at sequence %d: %w", seq, err)
	}
	if m.Sequence != seq {
		return nil, fmt.Errorf("records at sequence %d: found %d", seq, m.Sequence)
	}
	name, arg, _ := strings.Cut(strings.TrimPrefix(m.Subject, s.subj), ".")
	kind, ok := packKinds[name]
	if !ok || !strings.HasPrefix(m.Subject, s.subj) {
		return nil, fmt.Errorf("records at sequence %d: the message is on %s", seq, m.Subject)
	}
	if isPack(arg) {
		var recs []packRec
		if err := parsePack(m.Data, func(kind byte, task int64, rec []byte) { recs = append(recs, packRec{kind, task, rec}) }); err != nil {
			return nil, fmt.Errorf("records at sequence %d: %w", seq, err)
		}
		return recs, nil
	}
	id, err := strconv.ParseInt(arg, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("records at sequence %d: %s: %w", seq, m.Subject, err)
	}
	return []packRec{{kind: kind, task: id, rec: m.Data}}, nil
}

// fetchers bounds the messages fullRecords reads at once.
const fetchers = 16

// fullRecords fetches the whole seen records of tasks ids, in the
// messages at seqs[id]: each message once however many of ids it holds,
// up to fetchers at a time, by direct gets from any replica and from the
// stream's leader where a replica lags behind the last commit.
func (s *Store) fullRecords(ctx context.Context, ids []int64, seqs map[int64]uint64) (map[int64][]byte, error) {
	bySeq := map[uint64][]int64{}
	for _, id := range ids {
		bySeq[seqs[id]] = append(bySeq[seqs[id]], id)
	}
	msgs, err := s.recordMsgsAt(ctx, slices.Collect(maps.Keys(bySeq)))
	if err != nil {
		return nil, fmt.Errorf("jsstore: %w", err)
	}
	full := make(map[int64][]byte, len(ids))
	for seq, want := range bySeq {
		for _, r := range msgs[seq] {
			if r.kind == kindSeen && slices.Contains(want, r.task) {
				full[r.task] = r.rec
			}
		}
		for _, id := range want {
			if _, ok := full[id]; !ok {
				return nil, fmt.Errorf("jsstore: the seen message at sequence %d holds no record of task %d", seq, id)
			}
		}
	}
	return full, nil
}

// recordMsgsAt reads the record messages at seqs (recordsAt), up to fetchers at
// a time, and returns their records by sequence: those it read, with the
// first error if it could not read them all.
func (s *Store) recordMsgsAt(ctx context.Context, seqs []uint64) (map[uint64][]packRec, error) {
	out := make(map[uint64][]packRec, len(seqs))
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
		sem   = make(chan struct{}, fetchers)
	)
	for _, seq := range seqs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			recs, err := s.recordsAt(ctx, seq)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if first == nil {
					first = err
				}
				return
			}
			out[seq] = recs
		})
	}
	wg.Wait()
	return out, first
}

// PackStats is what Store.PackStats reports.
type PackStats struct {
	// Messages is how many record messages (seen records, rule states)
	// hold a current record.
	Messages int
	// Sparse is how many of them hold fewer than half the records they
	// were written with, Small how many were written with fewer than
	// smallPack bytes of records (both compacted by the next Ingests).
	Sparse, Small int
	// Swept counts the messages deleted since the store opened, Failed
	// the deletions that failed (each tried again).
	Swept, Failed uint64
}

// PackStats reports the record messages of this replica's view.
func (s *Store) PackStats() PackStats {
	s.v.mu.RLock()
	defer s.v.mu.RUnlock()
	return PackStats{Messages: len(s.v.recs), Sparse: len(s.v.sparse), Small: len(s.v.small), Swept: s.deadSwept.Load(), Failed: s.deadFailed.Load()}
}
