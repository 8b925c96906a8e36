package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller/sim"
	"github.com/incs-relay/incs-relay/sink/consume"
)

// Webhook secrets of the reload test: the changed sink's secret rotates
// from reloadOld to reloadNew.
const (
	reloadKeep = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	reloadOld  = "whsec_c2VjcmV0LW9mLXRoZS1vbGQtc2luaw=="
	reloadNew  = "whsec_c2VjcmV0LW9mLXRoZS1uZXctc2luaw=="
)

// reloadHook is a webhook receiver that checks each delivery's signature
// with its secrets and records the bodies it acknowledges.
type reloadHook struct {
	srv    *httptest.Server
	got    *received
	badSig atomic.Int64
	n      atomic.Int64 // deliveries acknowledged
}

func newReloadHook(t *testing.T, secrets ...string) *reloadHook {
	t.Helper()
	v, err := consume.NewVerifier(secrets)
	require.NoError(t, err)
	h := &reloadHook{got: newReceived()}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev, err := v.Verify(r)
		if err != nil {
			h.badSig.Add(1)
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		h.got.add(ev.Body)
		h.n.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// reloadWorld is what the reload tests share: the simulated API, changing
// while the relay runs, and the receivers of the four sinks.
type reloadWorld struct {
	world                      *sim.Sim
	api                        *httptest.Server
	keep, old, next, gone, add *reloadHook
	adminAddr, dbPath          string
}

func newReloadWorld(t *testing.T) *reloadWorld {
	t.Helper()
	w := &reloadWorld{world: sim.New(sim.Options{Token: "tok", Tasks: 120, Seed: 23})}
	w.api = httptest.NewServer(w.world)
	t.Cleanup(w.api.Close)
	w.keep = newReloadHook(t, reloadKeep)
	w.old = newReloadHook(t, reloadOld)
	w.next = newReloadHook(t, reloadNew) // signed with the new secret only
	w.gone = newReloadHook(t, reloadKeep)
	w.add = newReloadHook(t, reloadKeep)
	w.adminAddr = fmt.Sprintf("127.0.0.1:%d", freePortT(t))
	w.dbPath = filepath.Join(t.TempDir(), "relay.db")
	return w
}

// config is the YAML of one step: before the reload (three sinks,
// budget 4), after it (the changed sink at its new URL and secret, the
// removed one gone, a new one starting now, budget 20), or a bad file
// (after, with a misspelt key).
func (w *reloadWorld) config(step string) string {
	budget, changeURL, secrets := 4, w.old.srv.URL, `secret: "`+reloadOld+`"`
	if step != "before" {
		// Rotating: sign with both while the receiver moves over.
		budget, changeURL, secrets = 20, w.next.srv.URL, `secrets: ["`+reloadNew+`", "`+reloadOld+`"]`
	}
	retry := "retry: {initial: 10ms, max: 100ms, max_elapsed: 10m}"
	s := fmt.Sprintf(`upstream:
  base_url: %q
  token: tok
  rate_limit: 200
  timeout: 2s
poll:
  interval: 150ms
  full_sweep: 1s
  budget: %d
  initial: replay
store:
  path: %q
admin:
  addr: %q
log:
  level: %s
  format: json
sinks:
  - name: keep
    type: webhook
    url: %q
    secret: %q
    %s
  - name: change
    type: webhook
    url: %q
    %s
    %s
`, w.api.URL, budget, w.dbPath, w.adminAddr, logLevel(), w.keep.srv.URL, reloadKeep, retry, changeURL, secrets, retry)
	if step == "before" {
		s += fmt.Sprintf(`  - name: gone
    type: webhook
    url: %q
    secret: %q
    %s
`, w.gone.srv.URL, reloadKeep, retry)
	} else {
		s += fmt.Sprintf(`  - name: added
    type: webhook
    url: %q
    secret: %q
    start: now
    %s
`, w.add.srv.URL, reloadKeep, retry)
	}
	if step == "bad" {
		s += "    max_inflight: 4\n" // a misspelt key
	}
	return s
}

// logLevel is the child's log.level: debug with RELOAD_DEBUG set.
func logLevel() string {
	if os.Getenv("RELOAD_DEBUG") != "" {
		return "debug"
	}
	return "info"
}

// lineOf is the 1-based line of the first line of s containing sub.
func lineOf(s, sub string) int {
	for i, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return i + 1
		}
	}
	return 0
}

// adminJSON decodes GET path of the relay's admin API into v.
func adminJSON(t *testing.T, addr, path string, v any) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, path)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
}

// reloadState is GET /v1/reload's answer.
type reloadState struct {
	At      *time.Time `json:"at"`
	Trigger string     `json:"trigger"`
	OK      bool       `json:"ok"`
	Error   string     `json:"error"`
	Changes string     `json:"changes"`
	Digest  string     `json:"config_digest"`
}

// adminEvents reads every stored event through the admin API.
func adminEvents(t *testing.T, addr string) []diff.Event {
	t.Helper()
	var out []diff.Event
	from := uint64(1)
	for {
		var page struct {
			Events []diff.Event `json:"events"`
			Next   uint64       `json:"next"`
			Head   uint64       `json:"head"`
		}
		adminJSON(t, addr, fmt.Sprintf("/v1/events?from=%d&limit=1000", from), &page)
		out = append(out, page.Events...)
		if len(page.Events) == 0 || page.Next > page.Head {
			return out
		}
		from = page.Next
	}
}

// head is the store's head offset, through the admin API.
func head(t *testing.T, addr string) uint64 {
	var page struct {
		Head uint64 `json:"head"`
	}
	adminJSON(t, addr, "/v1/events?latest=1", &page)
	return page.Head
}

// TestReload_UnderLoad is issue 23's first two must-shows: while the
// world changes and events flow to three webhook sinks, one reload adds a
// sink (start: now), moves one to a new URL with a rotated secret,
// removes one and raises the budget; then a reload of a bad file changes
// nothing. It runs the real `incs-relay run` as a child process and
// reloads it each way there is: POST /v1/reload, SIGHUP, and run --watch
// seeing a Kubernetes-style symlink swap of the config.
//
// Each must hold: the untouched sink receives every stored event exactly
// once; the changed sink loses nothing (its old and new receivers
// together have every event, each body identical, and the new one only
// events signed with the new secret) and delivers at the new URL after
// the reload; the removed sink receives nothing once the reload is
// answered; the new sink receives every event stored after it was added
// and none stored before the reload; the budget in force is the new one;
// the bad file is refused naming its line and key, and delivery goes on.
func TestReload_UnderLoad(t *testing.T) {
	for _, how := range []string{"api", "sighup", "watch"} {
		t.Run(how, func(t *testing.T) { testReload(t, how) })
	}
}

func testReload(t *testing.T, how string) {
	w := newReloadWorld(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	var swap func(string)
	if how == "watch" {
		// What the kubelet does with a ConfigMap mounted as a directory:
		// config.yaml -> ..data/config.yaml, ..data -> ..<version>; an
		// update writes a new version and renames a new ..data link
		// over the old one.
		version := 0
		swap = func(content string) {
			version++
			v := fmt.Sprintf("..v%d", version)
			require.NoError(t, os.Mkdir(filepath.Join(dir, v), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dir, v, "config.yaml"), []byte(content), 0o644))
			require.NoError(t, os.Symlink(v, filepath.Join(dir, "..data_tmp")))
			require.NoError(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
		}
		swap(w.config("before"))
		require.NoError(t, os.Symlink(filepath.Join("..data", "config.yaml"), cfgPath))
	} else {
		require.NoError(t, os.WriteFile(cfgPath, []byte(w.config("before")), 0o644))
	}
	args := []string{"run", "--config", cfgPath}
	if how == "watch" {
		args = append(args, "--watch")
	}
	c := startRelayChild(t, args...)
	defer func() {
		if c.cmd.ProcessState == nil {
			c.terminate(t, 30*time.Second)
		}
	}()
	c.waitRunning(t, 20*time.Second)

	// reload makes the relay read content as its config, the way how
	// says, and returns the reload's state once it is answered.
	reload := func(content string) reloadState {
		var prev reloadState
		adminJSON(t, w.adminAddr, "/v1/reload", &prev)
		if how != "watch" {
			require.NoError(t, os.WriteFile(cfgPath, []byte(content), 0o644))
		}
		switch how {
		case "api":
			resp, err := http.Post("http://"+w.adminAddr+"/v1/reload", "", nil)
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var st reloadState
			require.NoError(t, json.Unmarshal(body, &st), string(body))
			if st.OK {
				assert.Equal(t, http.StatusOK, resp.StatusCode)
			} else {
				assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "a bad file is bad input")
			}
			return st
		case "sighup":
			require.NoError(t, c.cmd.Process.Signal(syscall.SIGHUP))
		case "watch":
			swap(content)
		}
		var st reloadState
		ok := waitFor(15*time.Second, func() bool {
			adminJSON(t, w.adminAddr, "/v1/reload", &st)
			return st.At != nil && (prev.At == nil || !st.At.Equal(*prev.At))
		})
		require.True(t, ok, "reload not answered within 15s\n%s", c.output())
		assert.Equal(t, how, st.Trigger)
		return st
	}

	// Load: the world keeps changing until stop.
	stop := make(chan struct{})
	var stepping sync.WaitGroup
	stepping.Add(1)
	go func() {
		defer stepping.Done()
		for i := 0; i < 400; i++ { // bounded: at most 400 steps
			select {
			case <-stop:
				return
			case <-time.After(30 * time.Millisecond):
				w.world.Step(2)
			}
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		stepping.Wait()
	}()

	require.True(t, waitFor(20*time.Second, func() bool {
		return w.keep.n.Load() > 50 && w.old.n.Load() > 50 && w.gone.n.Load() > 50
	}), "events flow to the three sinks\n%s", c.output())

	h0 := head(t, w.adminAddr)
	st := reload(w.config("after"))
	require.True(t, st.OK, "reload: %+v\n%s", st, c.output())
	goneAt := w.gone.n.Load() // what the removed sink had when the reload was answered
	h1 := head(t, w.adminAddr)
	for _, want := range []string{"+added", "-gone", "change (", "poll"} {
		assert.Contains(t, st.Changes, want)
	}
	assert.NotContains(t, st.Changes, "keep", "the untouched sink is not listed")
	assert.NotContains(t, st.Changes, reloadNew, "no secret in the summary")
	var poll struct {
		Tiers *struct {
			Budget int `json:"budget"`
		} `json:"tiers"`
	}
	require.True(t, waitFor(10*time.Second, func() bool {
		adminJSON(t, w.adminAddr, "/v1/poll", &poll)
		return poll.Tiers != nil && poll.Tiers.Budget == 20
	}), "the budget raised to 20: %+v", poll.Tiers)

	// The changed sink delivers at its new URL; the new sink starts.
	require.True(t, waitFor(20*time.Second, func() bool { return w.next.n.Load() > 20 && w.add.n.Load() > 20 }),
		"new URL %d, added sink %d\n%s", w.next.n.Load(), w.add.n.Load(), c.output())

	// A bad file changes nothing and names its line and key.
	bad := reload(w.config("bad"))
	assert.False(t, bad.OK)
	assert.Contains(t, bad.Error, fmt.Sprintf(":%d:", lineOf(w.config("bad"), "max_inflight")), "the error names the line")
	assert.Contains(t, bad.Error, "max_inflight", "the error names the key")
	assert.Equal(t, st.Digest, bad.Digest, "the config in force is still the last good one")
	var metrics string
	func() {
		resp, err := http.Get("http://" + w.adminAddr + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		metrics = string(b)
	}()
	assert.Contains(t, metrics, "incs_relay_config_last_reload_successful 0")
	keepAt, nextAt, addAt := w.keep.n.Load(), w.next.n.Load(), w.add.n.Load()
	require.True(t, waitFor(20*time.Second, func() bool {
		return w.keep.n.Load() > keepAt+10 && w.next.n.Load() > nextAt+10 && w.add.n.Load() > addAt+10
	}), "every sink goes on delivering after the bad reload\n%s", c.output())

	// Let the world settle and every sink catch up.
	close(stop)
	stepping.Wait()
	var events []diff.Event
	require.True(t, waitFor(60*time.Second, func() bool {
		events = adminEvents(t, w.adminAddr)
		n := len(events)
		return n > 0 && w.keep.got.total() == n && unionCount(w.old.got, w.next.got) == n && w.add.got.total() >= countAbove(events, h1)
	}), "every sink caught up: stored %d, keep %d, change %d, added %d (of %d above %d)\n%s",
		len(events), w.keep.got.total(), unionCount(w.old.got, w.next.got), w.add.got.total(), countAbove(events, h1), h1, c.output())
	c.terminate(t, 30*time.Second)

	// status, reading the store, lists the removed sink as removed.
	good := filepath.Join(t.TempDir(), "good.yaml")
	require.NoError(t, os.WriteFile(good, []byte(w.config("after")), 0o644))
	code, out, errOut := runMain("status", "--config", good)
	require.Equal(t, 0, code, errOut)
	var goneLine string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "gone ") {
			goneLine = l
		}
	}
	assert.Contains(t, goneLine, "removed", "status:\n%s", out)

	// keep: every event exactly once.
	assert.Zero(t, w.keep.got.dups, "the untouched sink received nothing twice")
	assert.Len(t, w.keep.got.bodies, len(events))
	// change: no loss, identical bodies, the new receiver only got events
	// signed with the new secret (others fail its check).
	for _, h := range []*reloadHook{w.keep, w.old, w.next, w.gone, w.add} {
		assert.Empty(t, h.got.differ, "a redelivery carries the identical body")
	}
	assert.Zero(t, w.next.badSig.Load(), "the new receiver checks the new secret only: every delivery signed with it")
	for _, ev := range events {
		_, a := w.old.got.bodies[ev.ID]
		_, b := w.next.got.bodies[ev.ID]
		assert.True(t, a || b, "changed sink lost event %d (%s)", ev.Offset, ev.ID)
	}
	// gone: nothing once the reload was answered.
	assert.Equal(t, goneAt, w.gone.n.Load(), "the removed sink received nothing after the reload")
	// added (start: now): nothing stored before the reload, everything
	// after it was added.
	for _, ev := range w.add.got.events {
		assert.Greater(t, ev.Offset, h0, "the new sink got event %d, stored before the reload", ev.Offset)
	}
	for _, ev := range events {
		if ev.Offset > h1 {
			_, ok := w.add.got.bodies[ev.ID]
			assert.True(t, ok, "the new sink lost event %d", ev.Offset)
		}
	}
	if os.Getenv("RELOAD_DEBUG") != "" {
		var offs []uint64
		for _, ev := range w.old.got.events {
			offs = append(offs, ev.Offset)
		}
		slices.Sort(offs)
		t.Logf("old URL offsets: %v", offs)
		for _, l := range strings.Split(c.output(), "\n") {
			if strings.Contains(l, "dispatcher") || strings.Contains(l, "reload") || strings.Contains(l, "sink") {
				t.Log(l)
			}
		}
	}
	t.Logf("%s: %d events; keep %d; change: old URL %d, new URL %d (%d twice); gone %d; added %d (from head %d..%d)",
		how, len(events), w.keep.got.total(), w.old.got.total(), w.next.got.total(), w.old.got.dups+w.next.got.dups+overlap(w.old.got, w.next.got),
		w.gone.got.total(), w.add.got.total(), h0, h1)
}

// unionCount is how many distinct events a and b received together.
func unionCount(a, b *received) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(a.bodies)
	for id := range b.bodies {
		if _, ok := a.bodies[id]; !ok {
			n++
		}
	}
	return n
}

// overlap is how many events both a and b received.
func overlap(a, b *received) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for id := range b.bodies {
		if _, ok := a.bodies[id]; ok {
			n++
		}
	}
	return n
}

// countAbove counts the events above offset h.
func countAbove(events []diff.Event, h uint64) int {
	n := 0
	for _, ev := range events {
		if ev.Offset > h {
			n++
		}
	}
	return n
}
