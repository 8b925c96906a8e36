package relay

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/poller/sim"
	"github.com/incs-relay/incs-relay/store"
)

// levelProbe records the levels a reload sets.
type levelProbe struct{ last atomic.Int32 }

func (l *levelProbe) SetLevel(lv zerolog.Level) { l.last.Store(int32(lv) + 100) }

// fileRelay runs a relay on a simulated API from a config file whose
// text is yaml(extra) and returns it, the file and a receiver count.
type fileRelay struct {
	r     *Relay
	path  string
	base  string // the file without extra lines
	hits  atomic.Int64
	level *levelProbe
}

func runFileRelay(t *testing.T, extra string) *fileRelay {
	t.Helper()
	api := httptest.NewServer(sim.New(sim.Options{Token: "tok", Tasks: 20, Seed: 9}))
	t.Cleanup(api.Close)
	f := &fileRelay{level: &levelProbe{}}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		f.hits.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hook.Close)
	dir := t.TempDir()
	f.path = filepath.Join(dir, "relay.yaml")
	f.base = fmt.Sprintf(`upstream:
  base_url: %q
  token: tok
  rate_limit: 500
poll:
  interval: 100ms
  full_sweep: 1s
  initial: replay
store:
  path: %q
  retention: 168h
admin:
  addr: ""
log:
  level: info
sinks:
  - name: hooks
    type: webhook
    url: %q
    secret: %q
`, api.URL, filepath.Join(dir, "relay.db"), hook.URL, testSecret)
	require.NoError(t, os.WriteFile(f.path, []byte(f.base+extra), 0o644))
	cfg, err := config.ReadFile(f.path, os.LookupEnv)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	r, err := Open(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel), Options{LogLevel: f.level})
	if err != nil {
		cancel()
		require.NoError(t, err)
	}
	f.r = r
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(20 * time.Second):
			t.Error("relay did not stop within 20s")
		}
	})
	require.Eventually(t, func() bool { return !r.PollStatus().LastSuccess.IsZero() && f.hits.Load() > 0 }, 20*time.Second, 10*time.Millisecond)
	return f
}

// write replaces the file's text.
func (f *fileRelay) write(t *testing.T, text string) {
	t.Helper()
	require.NoError(t, os.WriteFile(f.path, []byte(text), 0o644))
}

// TestReload_RefusesRestartKeys: a file that changes a key that cannot
// change while the relay runs is refused whole, naming the key and its
// line: not even its other changes (a new sink, a log level) apply.
func TestReload_RefusesRestartKeys(t *testing.T) {
	f := runFileRelay(t, "")
	changed := strings.Replace(f.base, "retention: 168h", "retention: 24h", 1)
	changed = strings.Replace(changed, "level: info", "level: debug", 1)
	f.write(t, changed+"  - name: more\n    type: webhook\n    url: http://127.0.0.1:1/x\n    secret: "+testSecret+"\n")
	st, err := f.r.Reload(context.Background(), "test")
	require.Error(t, err)
	var ce *config.Error
	require.ErrorAs(t, err, &ce)
	assert.Contains(t, err.Error(), "store.retention")
	assert.Contains(t, err.Error(), ":11:", "the key's line")
	assert.Contains(t, err.Error(), "restart")
	assert.False(t, st.OK)
	assert.Equal(t, []string{"hooks"}, f.r.SinkNames(), "no sink added")
	assert.Equal(t, int32(0), f.level.last.Load(), "no level set")
	assert.Equal(t, 168*time.Hour, f.r.Config().Store.Retention.D())
	assert.Equal(t, st.Error, f.r.ReloadStatus().Error)
}

// TestReload_NoChangeAndLevel: the same file again changes nothing (the
// sink's dispatcher runs on, the same one); a new log.level reaches the
// logger; an unchanged sink keeps its dispatcher across a reload that
// changes something else.
func TestReload_NoChangeAndLevel(t *testing.T) {
	f := runFileRelay(t, "")
	before := f.r.output("hooks")
	st, err := f.r.Reload(context.Background(), "test")
	require.NoError(t, err)
	assert.Equal(t, "no changes", st.Changes)
	assert.Same(t, before, f.r.output("hooks"), "the sink was not touched")

	f.write(t, strings.Replace(f.base, "level: info", "level: warn", 1))
	st, err = f.r.Reload(context.Background(), "test")
	require.NoError(t, err)
	assert.Contains(t, st.Changes, "log level")
	assert.Equal(t, int32(zerolog.WarnLevel)+100, f.level.last.Load())
	assert.Same(t, before, f.r.output("hooks"), "the sink was not touched")
	assert.True(t, before.disp.State().Running)
}

// TestReload_RulesRebuildPolling: adding a rule builds polling again at
// the next cycle; the poll status carries over (the relay stays ready
// and its last success is kept), and polling goes on.
func TestReload_RulesRebuildPolling(t *testing.T) {
	f := runFileRelay(t, "")
	last := f.r.PollStatus().LastSuccess
	f.write(t, f.base+`rules:
  - name: stalled
    event: task.stalled
    when: {status: [1]}
    since: last_log
    after: 4h
`)
	st, err := f.r.Reload(context.Background(), "test")
	require.NoError(t, err)
	assert.Contains(t, st.Changes, "poll")
	require.Eventually(t, func() bool {
		f.r.pipeMu.RLock()
		defer f.r.pipeMu.RUnlock()
		return f.r.rules != nil
	}, 10*time.Second, 10*time.Millisecond, "the rules engine is built")
	ps := f.r.PollStatus()
	assert.False(t, ps.LastSuccess.Before(last), "the poll status carried over")
	assert.Empty(t, f.r.NotReady(time.Now()))
	require.Eventually(t, func() bool { return f.r.PollStatus().LastSuccess.After(last) }, 10*time.Second, 10*time.Millisecond,
		"the rebuilt poller polls")
}

// TestReload_RemovedSinkPruning: a removed sink is kept in the registry,
// holds nothing back, and is forgotten (cursor, dead letters, state) once
// store.retention passed since its removal.
func TestReload_RemovedSinkPruning(t *testing.T) {
	f := runFileRelay(t, "  - name: old\n    type: webhook\n    url: http://127.0.0.1:1/x\n    secret: "+testSecret+"\n    retry: {initial: 10ms, max: 10ms, max_elapsed: 50ms}\n")
	require.Eventually(t, func() bool {
		dl, _ := f.r.Store().DeadLetters("old")
		return len(dl) > 0
	}, 20*time.Second, 10*time.Millisecond, "the unreachable sink dead-letters")
	f.write(t, f.base)
	st, err := f.r.Reload(context.Background(), "test")
	require.NoError(t, err)
	assert.Contains(t, st.Changes, "-old")
	assert.Equal(t, []string{"hooks"}, f.r.SinkNames())

	removed, err := RemovedSinkStatuses(f.r.Store(), f.r.SinkNames())
	require.NoError(t, err)
	require.Len(t, removed, 1)
	assert.Equal(t, "old", removed[0].Name)
	assert.NotNil(t, removed[0].RemovedAt)
	assert.NotZero(t, removed[0].DeadLetters, "its dead letters are kept")

	sinks, err := f.r.pruneSinks(168*time.Hour, time.Now())
	require.NoError(t, err)
	assert.Equal(t, []string{"hooks"}, sinks, "a removed sink holds nothing back")
	sinks, err = f.r.pruneSinks(168*time.Hour, time.Now().Add(169*time.Hour))
	require.NoError(t, err)
	assert.Equal(t, []string{"hooks"}, sinks)
	regs, err := f.r.Store().Sinks()
	require.NoError(t, err)
	assert.Equal(t, []string{"hooks"}, names(regs), "forgotten after retention")
	dl, err := f.r.Store().DeadLetters("old")
	require.NoError(t, err)
	assert.Empty(t, dl)
}

func names(regs []store.RegisteredSink) []string {
	out := make([]string, len(regs))
	for i, r := range regs {
		out[i] = r.Name
	}
	return out
}
