package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/admin"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/poller/sim"
)

// TestAdminPage_Reload loads the admin page in headless Chromium against
// a relay run from a file: the page says the config in force was applied
// at start; the file gets a misspelt key and the page's reload button is
// clicked: the page shows the reload refused, with the file, line and key;
// the file is fixed (a second sink added) and the button clicked again:
// the page shows the reload applied and what it changed, and the new sink
// is in the sinks table. A reload posted by another site is refused.
func TestAdminPage_Reload(t *testing.T) {
	if os.Getenv("INCS_RELAY_NO_BROWSER") == "1" {
		t.Skip("INCS_RELAY_NO_BROWSER=1: the headless-browser test is opted out")
	}
	chrome := chromiumPath(t)

	world := sim.New(sim.Options{Token: "tok", Tasks: 10, Seed: 5})
	api := httptest.NewServer(world)
	defer api.Close()
	hooks := newReceived()
	hook := recordingHook(t, hooks, nil)
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.yaml")
	base := fmt.Sprintf(`upstream:
  base_url: %q
  token: tok
  rate_limit: 100
poll:
  interval: 200ms
  initial: replay
store:
  path: %q
admin:
  addr: "127.0.0.1:0"
sinks:
  - name: hooks
    type: webhook
    url: %q
    secret: %q
`, api.URL, filepath.Join(dir, "relay.db"), hook.URL, e2eSecret)
	require.NoError(t, os.WriteFile(path, []byte(base), 0o644))
	cfg, err := config.ReadFile(path, os.LookupEnv)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	r, err := admin.Open(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel), relay.Options{})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Error("relay did not stop within 30s")
		}
	}()
	pageURL := "http://" + r.AdminAddr() + "/"

	bctx, fail := headless(t, context.Background(), chrome)
	tctx, stop := context.WithTimeout(bctx, 90*time.Second)
	defer stop()
	fail(chromedp.Do(tctx,
		chromedp.Navigate(pageURL),
		chromedp.WaitVisible(chromedp.CSS(`#reload[data-result="none"]`)),
	), "load the admin page")
	line, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS(`#reload`)))
	fail(err, "read the reload line")
	assert.Contains(t, line, "config "+cfg.Digest()+" applied")
	assert.Contains(t, line, "at start")

	// A misspelt key: the reload is refused; the page names file, line and key.
	bad := base + "    max_inflight: 4\n"
	require.NoError(t, os.WriteFile(path, []byte(bad), 0o644))
	fail(chromedp.Do(tctx,
		chromedp.Click(chromedp.CSS(`#reload-now`)),
		chromedp.WaitVisible(chromedp.CSS(`#reload[data-result="error"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#reload-error`)),
	), "click reload with a bad file")
	line, err = chromedp.Run(tctx, chromedp.Text(chromedp.CSS(`#reload`)))
	fail(err, "read the reload line")
	assert.Contains(t, line, "refused")
	assert.Contains(t, line, cfg.Digest(), "still running on the file it had")
	msg, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS(`#reload-error`)))
	fail(err, "read the reload error")
	assert.Contains(t, msg, fmt.Sprintf("relay.yaml:%d:", lineOf(bad, "max_inflight")))
	assert.Contains(t, msg, "max_inflight")

	// Fixed, with a second sink: applied, and the page says what changed.
	good := base + fmt.Sprintf(`  - name: audit
    type: webhook
    url: %q
    secret: %q
    start: earliest
`, hook.URL+"/audit", e2eSecret)
	require.NoError(t, os.WriteFile(path, []byte(good), 0o644))
	fail(chromedp.Do(tctx,
		chromedp.Click(chromedp.CSS(`#reload-now`)),
		chromedp.WaitVisible(chromedp.CSS(`#reload[data-result="ok"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#sinks tbody tr[data-sink="audit"]`)),
	), "click reload with a good file")
	line, err = chromedp.Run(tctx, chromedp.Text(chromedp.CSS(`#reload`)))
	fail(err, "read the reload line")
	assert.Contains(t, line, "+audit")
	assert.Contains(t, line, "(api)")
	hidden, err := chromedp.Run(tctx, chromedp.Evaluate[bool](`document.getElementById("reload-error").hidden`))
	fail(err, "read the error's visibility")
	assert.True(t, hidden, "the old error is gone")
	assert.Equal(t, r.Config().Digest(), r.ReloadStatus().Digest)

	// Another site's page posts a reload: refused, nothing reloaded.
	before := r.ReloadStatus()
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><form method="POST" action="%sv1/reload"></form><script>document.forms[0].submit()</script>`, pageURL)
	}))
	defer evil.Close()
	fail(chromedp.Do(tctx, chromedp.Navigate(strings.Replace(evil.URL, "127.0.0.1", "evil.example", 1)+"/")), "load the other site's page")
	_, err = chromedp.Run(tctx, chromedp.Poll[bool](`document.body && document.body.innerText.includes("cross-origin request refused")`,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second)))
	fail(err, "the form's POST is refused")
	assert.Equal(t, before.At, r.ReloadStatus().At, "no reload happened")
}
