// Options, Open (version check, binding or creating the stream and the
// buckets: setup, ensure), Close and Notify; the package's layout is told
// below.

// Package jsstore is the JetStream backend of store.Store: the relay's
// outbox, seen-set, rule states, sink cursors, dead letters and small
// values live in a NATS JetStream cluster, so two or three replicas of the
// relay can share them, one of them polling (the leader) and all of them
// delivering.
//
// Layout, every name prefixed with Options.Name ("incs"), every subject
// with "$INCS.<Name>." (SubjectPrefix says why):
//
//   - the stream "<Name>" holds what must commit together: events on
//     "$INCS.<Name>.ev.<partition>" (a batch's events of one partition
//     packed in one message, each with its offset, task, type and commit
//     time and its JSON exactly as the bbolt outbox stores it; see
//     frame.go), seen records packed per batch on
//     "$INCS.<Name>.seen.pk.<id>" and rule states (a task's rule record
//     and the task kept with it) on "$INCS.<Name>.rule.pk.<id>" (a
//     subject each; a removal is a rolled-up empty
//     "$INCS.<Name>.{seen,rule,rtask}.<task>"; see seenpack.go), the head
//     offset on
//     "$INCS.<Name>.head", the leader's epoch records on
//     "$INCS.<Name>.epoch" and prune notes on "$INCS.<Name>.pruned";
//   - the KV bucket "<Name>-lease" holds the leader lease (a per-key TTL),
//     "<Name>-members" the live replicas, and "<Name>-state" the cursors,
//     dead letters, sink states, small values and the partition
//     assignment.
//
// Use: Open the store on a connection, run Run in the background, and
// follow Changes: poll (Ingest, IngestAfter, ApplyRules) only while
// IsLeader, and run a dispatcher per sink on Partition(p) for each p in
// Role().Owned, rereading cursors when Rewound names the sink. Every other
// method works on any replica, also without Run (commands such as status
// and events).
//
// Only the leader appends. Every append is one atomic batch (whole tasks,
// at most 1,000 messages) whose messages expect the last sequence of the
// leader's own epoch record: once a successor wrote its epoch the server
// refuses a stale leader's batch whole (ErrFenced). Every replica tails
// the stream's records (not its events) into memory, so the seen-set the
// leader diffs against and failover need no scan; events are read from
// the stream by sequence, through a bounded cache (outbox.go).
package jsstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/incs-relay/incs-relay/store"
)

// Errors of the JetStream store. Match them with errors.Is.
var (
	// ErrNotLeader is returned by an append (Ingest, IngestAfter,
	// ApplyRules) on a replica that does not hold the lease.
	ErrNotLeader = errors.New("not the leader: this replica does not hold the lease")
	// ErrFenced is returned when the server refused an append because a
	// newer leader wrote its epoch: this replica lost the lease.
	ErrFenced = errors.New("fenced: a newer leader took over")
)

// MinServerVersion is the oldest nats-server the store runs on: atomic
// batch publish, which commits a page whole, came with 2.12.
const MinServerVersion = "2.12.0"

// formatSuffix ends the config hash every replica publishes, naming the
// stream format it writes: replicas of versions that tail the events into
// memory (their hash has no suffix), of versions that write events
// uncompressed (plainFormatSuffix), of versions that write a message per
// seen record (s2FormatSuffix) and this one refuse to run together
// (checkLeaderHash). This version reads what all older ones wrote.
const formatSuffix = "/seen-packs" + s2FormatSuffix

// s2FormatSuffix ends the config hash of versions that write events
// compressed but a rolled-up message per seen record.
const s2FormatSuffix = "/events-s2" + plainFormatSuffix

// plainFormatSuffix ends the config hash of versions that keep the outbox
// in the stream with their events uncompressed.
const plainFormatSuffix = "/outbox-in-stream"

// MaxBatch is the most messages one atomic batch holds (the server's
// limit).
const MaxBatch = 1000

// Options configure Open.
type Options struct {
	// Name prefixes every stream and bucket; default "incs".
	Name string
	// Replicas of every stream and bucket created; default 1.
	Replicas int
	// Lease is the leader lease's TTL: whole seconds, at least 2s; default
	// 10s.
	Lease time.Duration
	// Partitions is the number of delivery partitions, fixed when the
	// stream is created; default 12.
	Partitions int
	// ReplicaID names this process; default "<hostname>-<pid>".
	ReplicaID string
	// ConfigHash is compared with the leader's: a replica whose hash
	// differs refuses to join (Run returns an error).
	ConfigHash string
	// Logger receives lease and membership changes; default zerolog.Nop().
	Logger zerolog.Logger
	// Now returns the current time; default time.Now.
	Now func() time.Time
	// CacheBytes bounds the event messages kept in memory for
	// delivery (the newest read or committed); default
	// DefaultCacheBytes, negative for none.
	CacheBytes int
	// Reader opens the store for a one-off command (status, events,
	// replay): the tail reads no seen records, which only a leader diffs
	// against (10,000 tasks of 100 logs are 32 MB of them), so such an
	// open costs the same at any history. Stats reports no tracked
	// tasks, and Run refuses.
	Reader bool
}

// Store is a store.Store on JetStream. It is safe for concurrent use.
type Store struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	o    Options
	log  zerolog.Logger
	name string // stream name, prefix of the buckets' names
	subj string // prefix of the stream's subjects: SubjectPrefix(name)

	stream  jetstream.Stream
	leaseKV jetstream.KeyValue
	members jetstream.KeyValue
	stateKV jetstream.KeyValue

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	closed atomic.Bool
	once   sync.Once
	wg     sync.WaitGroup // the tail and the state watcher
	runWG  sync.WaitGroup // Run

	v     *view
	cache *msgCache // event messages read or committed lately
	// beatNow (buffered 1) wakes Run for a step out of turn: this
	// replica's partitions were revoked, and its next heartbeat, which
	// no longer lists them, is what lets the leader give them on.
	beatNow chan struct{}
	// nexts remembers, per partition, nextIn's last answers that found
	// an event (a few: one per sink, as a rule): events are never
	// rewritten, so the lowest offset at or above from stays the same
	// until pruning takes it.
	nextMu sync.Mutex
	nexts  [][nextMemos]nextMemo
	// stallTail (tests) makes the tail drop what it reads, as one whose
	// consumer waits to be recreated on another node.
	stallTail atomic.Bool
	prune     pruneState
	// sweeping is set while sweepDead deletes dead record messages;
	// deadSwept and deadFailed count its deletions (PackStats).
	sweeping              atomic.Bool
	deadSwept, deadFailed atomic.Uint64
	// sweepMu orders sweepDead's wg.Add before Close's wg.Wait: a sweep
	// starts only while the store is not closed.
	sweepMu sync.Mutex
	direct  directState
	state   *kvState

	appendMu sync.Mutex // one append at a time (but an Ingest's commit: see pipeBatch)
	inflight *pipeBatch // the last Ingest's batch, maybe still being committed (appendMu)
	stagedMu sync.Mutex
	staged   map[int64]stagedSeen // seen records of batches being committed

	leadMu     sync.Mutex
	lead       *leadership // nil unless this replica leads
	mismatches int         // rounds in a row the leader's config hash differed (Run's goroutine only)

	roleMu   sync.Mutex
	role     Role
	lastBeat time.Time              // last membership heartbeat that succeeded
	cutOff   atomic.Bool            // no heartbeat for a lease: deliver nothing
	digest   atomic.Pointer[string] // SetConfigDigest
	changes  chan struct{}
	rewound  chan string

	subMu sync.Mutex
	subs  map[chan struct{}]struct{}
}

var _ store.Store = (*Store)(nil)

// SubjectPrefix returns the prefix of every subject of the store named
// name: "$INCS.<name>.". The stream and the buckets keep names beginning
// with name, but the subjects begin with "$INCS": NATS reserves a first
// token beginning with "$" for the system and its libraries by convention
// ($SYS, $JS, and JetStream's own KV buckets and object stores on
// "$KV.<bucket>." and "$O.<store>."), so applications' ordinary subjects,
// such as the NATS sink's default "incs.tasks.…", never fall under the
// store's, whatever store.name is. (Under "<name>." the default name
// "incs" took the sink's default subjects.)
func SubjectPrefix(name string) string { return "$INCS." + name + "." }

// nameRE is what Options.Name may be: a stream name that is also a single
// subject token and a bucket name prefix.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func (o *Options) setDefaults() error {
	if o.Name == "" {
		o.Name = "incs"
	}
	if !nameRE.MatchString(o.Name) {
		return fmt.Errorf("name %q: only letters, digits, - and _", o.Name)
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.Replicas > 5 {
		return fmt.Errorf("replicas %d: at most 5", o.Replicas)
	}
	if o.Lease == 0 {
		o.Lease = 10 * time.Second
	}
	if o.Lease < 2*time.Second || o.Lease%time.Second != 0 {
		return fmt.Errorf("lease %s: whole seconds, at least 2s", o.Lease)
	}
	if o.Partitions <= 0 {
		o.Partitions = 12
	}
	if o.ReplicaID == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "relay"
		}
		o.ReplicaID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if o.ConfigHash != "" && !strings.HasSuffix(o.ConfigHash, formatSuffix) {
		o.ConfigHash += formatSuffix
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = DefaultCacheBytes
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// Open checks the server's version, creates or binds the stream and the
// buckets, and loads the stream into memory. It does not campaign for the
// lease: Run does.
func Open(ctx context.Context, nc *nats.Conn, o Options) (*Store, error) {
	if err := o.setDefaults(); err != nil {
		return nil, fmt.Errorf("jsstore: %w", err)
	}
	if err := checkVersion(nc.ConnectedServerVersion()); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jsstore: %w", err)
	}
	s := &Store{
		nc: nc, js: js, o: o, log: o.Logger, name: o.Name, subj: SubjectPrefix(o.Name),
		changes: make(chan struct{}, 1),
		rewound: make(chan string, 256),
		subs:    map[chan struct{}]struct{}{},
		staged:  map[int64]stagedSeen{},
	}
	s.role = Role{Self: o.ReplicaID, Assignments: map[string][]int{}}
	if err := s.setup(ctx); err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.cache = newMsgCache(o.Partitions, o.CacheBytes)
	s.nexts = make([][nextMemos]nextMemo, o.Partitions)
	s.beatNow = make(chan struct{}, 1)
	s.v = newView(s.wake, s.cache)
	s.state = newKVState()
	if err := s.startTail(ctx); err != nil {
		s.cancel()
		s.wg.Wait()
		return nil, err
	}
	if err := s.startStateWatch(ctx); err != nil {
		s.cancel()
		s.wg.Wait()
		return nil, err
	}
	return s, nil
}

// checkVersion refuses servers older than MinServerVersion.
func checkVersion(v string) error {
	if v == "" {
		return errors.New("jsstore: not connected to a NATS server")
	}
	if versionLess(v, MinServerVersion) {
		return fmt.Errorf("jsstore: nats-server %s is too old: the jetstream store needs %s or newer (atomic batch publish, which stores a page whole or not at all)", v, MinServerVersion)
	}
	return nil
}

// versionLess compares dotted versions numerically ("2.9.1" < "2.12.0");
// a pre-release or build suffix is ignored.
func versionLess(a, b string) bool {
	pa, pb := versionParts(a), versionParts(b)
	for i := range 3 {
		if pa[i] != pb[i] {
			return pa[i] < pb[i]
		}
	}
	return false
}

func versionParts(v string) [3]int {
	v = strings.TrimPrefix(v, "v")
	if i := strings.IndexAny(v, "-+"); i >= 0 {
		v = v[:i]
	}
	var out [3]int
	for i, p := range strings.SplitN(v, ".", 3) {
		out[i], _ = strconv.Atoi(p)
	}
	return out
}

// setup binds the stream and the buckets, creating those not found.
func (s *Store) setup(ctx context.Context) error {
	cfg := jetstream.StreamConfig{
		Name:               s.name,
		Description:        "incs-relay outbox, seen-set and rule states",
		Subjects:           []string{s.subj + ">"},
		Storage:            jetstream.FileStorage,
		Replicas:           s.o.Replicas,
		AllowRollup:        true,
		AllowAtomicPublish: true,
		AllowDirect:        true,
		Metadata:           map[string]string{"incs.partitions": strconv.Itoa(s.o.Partitions)},
	}
	st, err := ensure(ctx, "stream "+s.name,
		func(ctx context.Context) (jetstream.Stream, error) { return s.js.Stream(ctx, s.name) },
		func(ctx context.Context) (jetstream.Stream, error) { return s.js.CreateStream(ctx, cfg) },
		func(err error) bool { return errors.Is(err, jetstream.ErrStreamNotFound) })
	if err != nil {
		return err
	}
	if p, err := strconv.Atoi(st.CachedInfo().Config.Metadata["incs.partitions"]); err == nil && p != s.o.Partitions {
		return fmt.Errorf("jsstore: stream %s was created with %d partitions, not %d: partitions are fixed when the stream is created", s.name, p, s.o.Partitions)
	}
	if r := st.CachedInfo().Config.Replicas; r != s.o.Replicas {
		s.log.Warn().Int("stream", r).Int("configured", s.o.Replicas).Msg("jsstore: the stream " + s.name + " exists with another replica count; it keeps its own (change it with the nats CLI)")
	}
	if !st.CachedInfo().Config.AllowDirect {
		// A stream made by an older version: turn direct gets on, or
		// read through the leader's API if that is not allowed.
		up := st.CachedInfo().Config
		up.AllowDirect = true
		uctx, cancel := context.WithTimeout(ctx, setupTimeout)
		st2, err := s.js.UpdateStream(uctx, up)
		cancel()
		if err == nil {
			st = st2
		} else {
			s.direct.off.Store(true)
			s.log.Warn().Err(err).Msg("jsstore: could not turn on direct gets on the stream " + s.name + "; events are read through its leader")
		}
	}
	s.stream = st
	bucket := func(suffix, desc string, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
		cfg.Bucket, cfg.Description = s.name+"-"+suffix, desc
		cfg.Replicas, cfg.Storage = s.o.Replicas, jetstream.FileStorage
		return ensure(ctx, "bucket "+cfg.Bucket,
			func(ctx context.Context) (jetstream.KeyValue, error) { return s.js.KeyValue(ctx, cfg.Bucket) },
			func(ctx context.Context) (jetstream.KeyValue, error) { return s.js.CreateKeyValue(ctx, cfg) },
			func(err error) bool { return errors.Is(err, jetstream.ErrBucketNotFound) })
	}
	if s.leaseKV, err = bucket("lease", "incs-relay leader lease", jetstream.KeyValueConfig{LimitMarkerTTL: s.o.Lease}); err != nil {
		return err
	}
	if s.members, err = bucket("members", "incs-relay live replicas", jetstream.KeyValueConfig{TTL: s.o.Lease}); err != nil {
		return err
	}
	s.stateKV, err = bucket("state", "incs-relay cursors, dead letters, sink states and small values", jetstream.KeyValueConfig{})
	return err
}

// Bounds of ensure: replicas started together contend for the same
// stream's creation on a replicated cluster, where one create may take
// seconds while the Raft group forms and the others time out or get "in
// use", and a request may hang until its timeout (seen in
// TestOpenConcurrent). A short timeout per attempt and a few jittered
// retries bind to whichever create won.
var (
	setupAttempts   = 8
	setupTimeout    = 2 * time.Second        // per bind or create request
	setupBackoffMax = 800 * time.Millisecond // before jitter
)

// ensure binds what (a stream or a bucket) and creates it only when the
// bind finds nothing. A create that fails for any reason (another replica
// created it first: "already in use" or "exists"; a timeout while the
// cluster forms its group) is followed by a fresh bind after a jittered
// pause, at most setupAttempts times, so replicas started at the same
// moment end up bound to the one that won.
func ensure[T any](ctx context.Context, what string, bind, create func(context.Context) (T, error), notFound func(error) bool) (T, error) {
	var last error
	attempts, pauses := 0, 0
	v, err := backoff.RetryNotifyWithData(func() (T, error) {
		attempts++
		v, err := attemptWith(ctx, bind)
		if err != nil && notFound(err) {
			v, err = attemptWith(ctx, create)
		}
		last = err
		return v, err
	}, backoff.WithContext(backoff.WithMaxRetries(setupBackOff(), uint64(setupAttempts-1)), ctx),
		func(error, time.Duration) { pauses++ })
	var zero T
	switch {
	case err == nil:
		return v, nil
	case pauses == attempts: // the context ended during a pause
		return zero, fmt.Errorf("jsstore: %s: %w (last attempt: %v)", what, err, last)
	default:
		return zero, fmt.Errorf("jsstore: %s: neither bound nor created after %d attempts: %w", what, attempts, last)
	}
}

// setupBackOff is ensure's pause between attempts: 100ms doubling up to
// setupBackoffMax, each drawn from half to one and a half times that
// (jitter, so contending replicas spread out), for as long as attempts
// are left.
func setupBackOff() backoff.BackOff {
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(100*time.Millisecond),
		backoff.WithRandomizationFactor(0.5),
		backoff.WithMultiplier(2),
		backoff.WithMaxInterval(setupBackoffMax),
		backoff.WithMaxElapsedTime(0))
}

// attemptWith runs fn with setupTimeout.
func attemptWith[T any](ctx context.Context, fn func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	return fn(ctx)
}

// Partitions returns the number of delivery partitions.
func (s *Store) Partitions() int { return s.o.Partitions }

// partition returns the delivery partition of a task.
func (s *Store) partition(taskID int64) int {
	return int(uint64(taskID) % uint64(s.o.Partitions))
}

// Close stops Run (releasing the lease), the tail and the watchers. It
// does not close the NATS connection. Calls after it fail with
// store.ErrClosed.
func (s *Store) Close() error {
	s.once.Do(func() {
		s.closed.Store(true)
		s.sweepMu.Lock() // no sweep starts from here on
		s.sweepMu.Unlock()
		s.cancel()
		s.runWG.Wait()
		s.wg.Wait()
	})
	return nil
}

func (s *Store) checkOpen(op string) error {
	if s.closed.Load() {
		return fmt.Errorf("jsstore: %s: %w", op, store.ErrClosed)
	}
	return nil
}

// Notify returns a new subscription: a channel (buffered 1, sent to
// without blocking) that receives after each commit that appended events,
// by this replica or, once tailed, any other. The subscription lasts until
// ctx ends, which drops it (the channel is not closed).
func (s *Store) Notify(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	s.subMu.Lock()
	s.subs[ch] = struct{}{}
	s.subMu.Unlock()
	context.AfterFunc(ctx, func() {
		s.subMu.Lock()
		delete(s.subs, ch)
		s.subMu.Unlock()
	})
	return ch
}

// Subscribers returns how many Notify subscriptions the store holds (for
// tests: one whose context ended is not counted).
func (s *Store) Subscribers() int {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	return len(s.subs)
}

func (s *Store) wake() {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	for ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
