package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller/sim"
)

// chromiumPath finds the headless browser the admin page test drives:
// $INCS_RELAY_CHROMIUM, or chromium (Debian's package, which .ci/run
// installs), chromium-browser or google-chrome on PATH. Without one the
// test fails: CI installs it, and INCS_RELAY_NO_BROWSER=1 opts out
// explicitly.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("INCS_RELAY_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium found for the admin page test: install it (apt-get install -y chromium, as .ci/run does), " +
		"point INCS_RELAY_CHROMIUM at a Chrome binary, or set INCS_RELAY_NO_BROWSER=1 to skip this test")
	return ""
}

// TestAdminPage_Browser loads the admin page in headless Chromium against a
// relay running in process: the sinks table and the latest events render
// with the store's figures; typing an offset and clicking the sink's
// Replay button rewinds it, the page reports success, and the receiver
// gets the events from that offset on again, with their ids and offsets.
func TestAdminPage_Browser(t *testing.T) {
	if os.Getenv("INCS_RELAY_NO_BROWSER") == "1" {
		t.Skip("INCS_RELAY_NO_BROWSER=1: the headless-browser test is opted out")
	}
	chrome := chromiumPath(t)

	const adminToken = "br0wser-t0ken"
	h := startObsRelay(t, obsOptions{token: adminToken})
	h.waitCaughtUp(t, func(logs []sim.LogRef) int { return len(logs) })
	head := h.head(t)
	require.Greater(t, head, uint64(25), "enough events for a page of 20")
	require.Eventually(t, func() bool {
		s, err := h.r.Store().Cursor("hooks")
		return err == nil && s == head
	}, 10*time.Second, 20*time.Millisecond, "the sink's cursor reached the head")

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	bctx, fail := headless(t, ctx, chrome)

	// Load the page; the token travels as ?token= to the API calls.
	fail(chromedp.Do(bctx,
		chromedp.Navigate(h.base+"?token="+adminToken),
		chromedp.WaitVisible(chromedp.CSS(`#sinks tbody tr[data-sink="hooks"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#events tbody tr[data-offset]`)),
	), "load the admin page")

	// The sinks table shows the store's figures.
	cells, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](
		`[...document.querySelectorAll('#sinks tbody tr[data-sink="hooks"] td')].map(td => td.textContent.trim())`))
	fail(err, "read the sinks table")
	require.Len(t, cells, 10, "sink, type, cursor, head, lag, lag (s), dead letters, state, last error, replay")
	assert.Equal(t, "hooks", cells[0])
	assert.Equal(t, "webhook", cells[1])
	assert.Equal(t, strconv.FormatUint(head, 10), cells[2], "cursor")
	assert.Equal(t, strconv.FormatUint(head, 10), cells[3], "head")
	assert.Equal(t, "0", cells[4], "lag")
	assert.Equal(t, "0", cells[6], "dead letters")
	assert.Equal(t, "ok", cells[7], "state")
	assert.Empty(t, cells[8], "last error")

	// The latest events: 20, newest first, ending at the head.
	offsets, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](
		`[...document.querySelectorAll('#events tbody tr')].map(tr => tr.getAttribute('data-offset'))`))
	fail(err, "read the events table")
	require.Len(t, offsets, 20)
	for i, o := range offsets {
		assert.Equal(t, strconv.FormatUint(head-uint64(i), 10), o, "row %d", i)
	}
	first, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](
		`[...document.querySelectorAll('#events tbody tr:first-child td')].map(td => td.textContent.trim())`))
	fail(err, "read the newest event row")
	require.Len(t, first, 6)
	newest, err := h.r.Store().Event(head)
	require.NoError(t, err)
	assert.Equal(t, newest.Type, first[2])
	assert.Equal(t, newest.ID, first[4])

	// The change column of each event type, as the page writes it.
	want := map[string]string{
		diff.TypeTaskCreated:       "created",
		diff.TypeTaskAssigned:      "→ incs_1",
		diff.TypeTaskStatusChanged: "not_started → in_progress",
		diff.TypeTaskCommented:     "已经跟进 — customer will call back <tomorrow> & confirm",
		diff.TypeTaskLogged:        "log kept raw",
		diff.TypeTaskUpdated:       "renamed: Callback 4.8 → Callback 4.8 (VIP); phone: 6281519140316 → 6281519140361",
		diff.TypeTaskLogUpdated:    "comment edited: 已经跟进 — customer will call back <Thursday> & confirm",
		diff.TypeTaskDeleted:       "deleted",
	}
	for _, ev := range diff.SampleEvents() {
		got, err := chromedp.Run(bctx, chromedp.Evaluate[string](`change(`+string(ev.Body)+`)`))
		fail(err, "the change of a "+ev.Type)
		assert.Equal(t, want[ev.Type], got, ev.Type)
	}

	ready, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`#ready`)))
	fail(err, "read the readiness line")
	assert.Equal(t, "ready", strings.TrimSpace(ready))

	// The polling line: requests, budget and each tier's freshness.
	fail(chromedp.Do(bctx, chromedp.WaitVisible(chromedp.CSS(`#poll[data-loaded]`))), "load the polling line")
	poll, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`#poll`)))
	fail(err, "read the polling line")
	assert.Regexp(t, `^tiered: \d+ requests last cycle · budget \d+, ceilings need [\d.]+ · freshness: open \d+ s, finished \d+ s`, poll)

	// Replay from offset head-4: five events go out again.
	from := head - 4
	h.hooks.mu.Lock()
	dupsBefore := h.hooks.dups
	h.hooks.mu.Unlock()
	fail(chromedp.Do(bctx,
		chromedp.SetValue(chromedp.CSS(`input[data-sink="hooks"]`), strconv.FormatUint(from, 10)),
		chromedp.Click(chromedp.CSS(`button[data-replay="hooks"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#msg[data-result]`)),
	), "click replay")
	result, err := chromedp.Run(bctx, chromedp.AttributeValue(chromedp.CSS(`#msg`), "data-result"))
	fail(err, "read the replay result")
	msg, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`#msg`)))
	fail(err, "read the replay message")
	assert.Equal(t, "ok", result.Value, "the page reports success: %q", msg)
	assert.Contains(t, msg, "replaying hooks from offset "+strconv.FormatUint(from, 10))

	// The POST happened: the receiver gets those five events again, with
	// the same ids, offsets and bodies.
	require.Eventually(t, func() bool {
		h.hooks.mu.Lock()
		defer h.hooks.mu.Unlock()
		return h.hooks.dups-dupsBefore >= int(head-from+1)
	}, 20*time.Second, 20*time.Millisecond, "the receiver got the replayed events again")
	h.hooks.mu.Lock()
	assert.Equal(t, int(head-from+1), h.hooks.dups-dupsBefore, "exactly the events from the offset on")
	assert.Empty(t, h.hooks.differ, "a replayed event carries the identical body")
	h.hooks.mu.Unlock()

	// The page catches up with the cursor again on its next refresh.
	_, err = chromedp.Run(bctx, chromedp.Poll[bool](
		`document.querySelector('#sinks tbody tr[data-sink="hooks"] td:nth-child(3)').textContent === '`+strconv.FormatUint(head, 10)+`'`,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second)))
	fail(err, "the cursor is back at the head on the page")

	// A bad offset is refused, and the page says why.
	fail(chromedp.Do(bctx,
		chromedp.SetValue(chromedp.CSS(`input[data-sink="hooks"]`), strconv.FormatUint(head+10, 10)),
		chromedp.Click(chromedp.CSS(`button[data-replay="hooks"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#msg[data-result="error"]`)),
	), "click replay with a bad offset")
	msg, err = chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`#msg`)))
	fail(err, "read the error message")
	assert.Contains(t, msg, "beyond the newest event")

	// Another site's hidden form posts a replay, token and all: the
	// browser says cross-site, the relay answers 403 and replays nothing.
	h.hooks.mu.Lock()
	dupsBefore = h.hooks.dups
	h.hooks.mu.Unlock()
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><form method="POST" action="%sv1/sinks/hooks/replay?from=1&amp;token=%s"></form><script>document.forms[0].submit()</script>`, h.base, adminToken)
	}))
	defer evil.Close()
	evilURL := strings.Replace(evil.URL, "127.0.0.1", "evil.example", 1)
	fail(chromedp.Do(bctx, chromedp.Navigate(evilURL+"/")), "load the other site's page")
	_, err = chromedp.Run(bctx, chromedp.Poll[bool](`document.body && document.body.innerText.includes("cross-origin request refused")`,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second)))
	fail(err, "the form's POST is refused")
	time.Sleep(300 * time.Millisecond) // a rewind would deliver by now
	h.hooks.mu.Lock()
	assert.Equal(t, dupsBefore, h.hooks.dups, "the cross-site form replayed nothing")
	h.hooks.mu.Unlock()
	cur, err := h.r.Store().Cursor("hooks")
	require.NoError(t, err)
	assert.Equal(t, head, cur, "the cursor stayed at the head")

	// DNS rebinding: evil.example now points at the relay. The page under
	// that name is refused, and so is the API it would read.
	_, port, err := net.SplitHostPort(h.r.AdminAddr())
	require.NoError(t, err)
	rebound := "http://evil.example:" + port + "/"
	fail(chromedp.Do(bctx, chromedp.Navigate(rebound+"?token="+adminToken)), "load the page under a rebound name")
	text, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`body`)))
	fail(err, "read the refusal")
	assert.Contains(t, text, "admin.hosts")
	fail(chromedp.Do(bctx, chromedp.Navigate(rebound+"v1/events?latest=5&token="+adminToken)), "load the events under a rebound name")
	text, err = chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`body`)))
	fail(err, "read the refusal")
	assert.Contains(t, text, "admin.hosts")
	assert.NotContains(t, text, newest.ID, "no event reaches the rebound page")
}

// headless starts headless Chromium for the test and returns its context
// and a function that fails the test with the browser's output.
func headless(t *testing.T, ctx context.Context, chrome string) (context.Context, func(err error, what string)) {
	t.Helper()
	var chromeOut bytes.Buffer
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chrome),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoSandbox, // root in CI containers
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("no-proxy-server", true),
		// evil.example resolves to the relay, as after DNS rebinding.
		chromedp.Flag("host-resolver-rules", "MAP evil.example 127.0.0.1"),
		chromedp.CombinedOutput(&chromeOut),
	)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelBrowser)
	fail := func(err error, what string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v\nchromium output:\n%s", what, err, chromeOut.String())
		}
	}
	return bctx, fail
}
