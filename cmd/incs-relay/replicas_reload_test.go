package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/admin"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/poller/sim"
)

// TestReplicas_RollingReload is issue 23's third must-show: three
// replicas of one jetstream store, each reading its own file, under a
// simulated API that fails 5 % of requests; the files change one after
// another (as a ConfigMap update reaches the pods), each replica reloads
// its own: the webhook sink's secret rotates and its retry changes, the
// budget rises. While the files differ the cluster view says so; no lease
// moves (the leader and its epoch are the same), no partition moves, and
// every log reaches the webhook and the NATS stream exactly once.
func TestReplicas_RollingReload(t *testing.T) {
	world := sim.New(sim.Options{Token: "tok", Tasks: 60, Seed: 31, Extra: true, Faults: sim.Faults{Rate: 0.05}})
	api := httptest.NewServer(world)
	defer api.Close()
	ns := runNATS(t)
	rh := newReloadHook(t, reloadNew, reloadOld)
	hooks, hook := rh.got, rh.srv

	file := func(step string) string {
		budget, secret, retry := 10, `secret: "`+reloadOld+`"`, "retry: {initial: 5ms, max: 50ms, max_elapsed: 1m}"
		if step == "after" {
			budget, secret, retry = 30, `secrets: ["`+reloadNew+`", "`+reloadOld+`"]`, "retry: {initial: 10ms, max: 100ms, max_elapsed: 2m}"
		}
		return fmt.Sprintf(`upstream:
  base_url: %q
  token: tok
  rate_limit: 200
  timeout: 1s
poll:
  interval: 150ms
  full_sweep: 1s
  budget: %d
  initial: replay
store:
  type: jetstream
  url: %q
  name: relay
  lease: 2s
  partitions: 4
admin:
  addr: "127.0.0.1:0"
sinks:
  - name: bus
    type: nats
    url: %q
    subject: "incs.tasks.{task_id}.{event}"
    jetstream: true
    stream: {name: INCS, subjects: ["incs.tasks.>"]}
  - name: hooks
    type: webhook
    url: %q
    %s
    max_in_flight: 8
    %s
`, api.URL, budget, ns.ClientURL(), ns.ClientURL(), hook.URL, secret, retry)
	}

	ids := []string{"replica-a", "replica-b", "replica-c"}
	paths := map[string]string{}
	reps := map[string]*replica{}
	for _, id := range ids {
		paths[id] = filepath.Join(t.TempDir(), "config.yaml")
		require.NoError(t, os.WriteFile(paths[id], []byte(file("before")), 0o644))
		cfg, err := config.ReadFile(paths[id], func(string) (string, bool) { return "", false })
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Str("replica", id).Logger()
		r, err := admin.Open(ctx, cfg, log, relay.Options{ReplicaID: id})
		require.NoError(t, err)
		rep := &replica{id: id, r: r, cancel: cancel, done: make(chan error, 1)}
		go func() { rep.done <- r.Run(ctx) }()
		t.Cleanup(func() { rep.stop(t) })
		reps[id] = rep
		if id == ids[0] {
			require.Eventually(t, func() bool { return r.JetStream().IsLeader() }, 10*time.Second, 20*time.Millisecond)
		}
	}
	a := reps[ids[0]]
	assigned := func() map[string][]int { return a.r.JetStream().Role().Assignments }
	require.Eventually(t, func() bool {
		as := assigned()
		return len(as[ids[0]]) > 0 && len(as[ids[1]]) > 0 && len(as[ids[2]]) > 0
	}, 15*time.Second, 50*time.Millisecond, "every replica delivers partitions")

	step := func(n int) {
		for range n {
			world.Step(3)
			time.Sleep(40 * time.Millisecond)
		}
	}
	step(20)
	require.Eventually(t, func() bool { return hooks.total() > 20 }, 20*time.Second, 50*time.Millisecond)
	epoch, leader := a.r.JetStream().Role().Epoch, a.r.JetStream().Role().Leader
	before := assigned()

	// The rolling reload, one replica after another, the world changing.
	for i, id := range ids {
		require.NoError(t, os.WriteFile(paths[id], []byte(file("after")), 0o644))
		st, err := reps[id].r.Reload(context.Background(), "test")
		require.NoError(t, err, id)
		assert.Contains(t, st.Changes, "~hooks (")
		if i == 0 {
			// The files differ now: the cluster view says so once the
			// heartbeats carried the new digest.
			require.Eventually(t, func() bool {
				v := reps[ids[2]].r.ClusterView()
				return v.ConfigsDiffer && len(v.Configs) == 3
			}, 10*time.Second, 50*time.Millisecond, "the replicas' configs differ during the roll")
		}
		step(10)
	}
	require.Eventually(t, func() bool {
		v := reps[ids[1]].r.ClusterView()
		return !v.ConfigsDiffer && len(v.Configs) == 3
	}, 10*time.Second, 50*time.Millisecond, "one config again once every replica reloaded")
	step(15)
	world.SetFaults(sim.Faults{})
	logs := world.Logs()
	require.Eventually(t, func() bool { return hooks.logCount() >= len(logs) }, 60*time.Second, 50*time.Millisecond,
		"all %d logs delivered (webhook %d)", len(logs), hooks.logCount())

	role := a.r.JetStream().Role()
	assert.Equal(t, leader, role.Leader, "no failover: the same leader")
	assert.Equal(t, epoch, role.Epoch, "no failover: the leader's epoch unchanged")
	assert.Equal(t, before, assigned(), "no partition moved")
	for _, id := range ids {
		st := reps[id].r.ReloadStatus()
		assert.True(t, st.OK, id)
		assert.Equal(t, reps[id].r.Config().Digest(), st.Digest)
	}
	hooks.checkAgainst(t, "webhook", logs)
	assert.Zero(t, hooks.dups, "a rolling reload delivers nothing twice")
	t.Logf("%d logs, %d events at the webhook, %d delivered twice; epoch %d", len(logs), hooks.total(), hooks.dups, role.Epoch)
}
