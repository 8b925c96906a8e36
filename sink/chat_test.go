package sink

// Tests of what the chat sinks share (chat.go): config validation,
// templates and their golden renderings, rate limits and bursts.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/time/rate"

	"github.com/incs-relay/incs-relay/diff"
)

func init() {
	// -update rewrites golden files. Defined here only if no other test
	// file of the package defined it first.
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite golden files under testdata")
	}
}

func chatUpdateGolden() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

var chatIDPattern = regexp.MustCompile(`log-[0-9]+`)

// chatIDsIn returns the event ids a message names.
func chatIDsIn(body []byte) map[string]bool {
	ids := map[string]bool{}
	for _, m := range chatIDPattern.FindAll(body, -1) {
		ids[string(m)] = true
	}
	return ids
}

func TestChatConfig_Validate(t *testing.T) {
	const hook = "https://hooks.example/services/T0/B0/SECRETtokenXYZ"
	tests := []struct {
		name  string
		slack bool
		cfg   ChatConfig
		want  string
	}{
		{name: "no name", cfg: ChatConfig{URL: hook}, want: "name is empty"},
		{name: "no url", cfg: ChatConfig{Name: "n"}, want: "url is empty"},
		{name: "not http", cfg: ChatConfig{Name: "n", URL: "ftp://hooks.example/SECRETtokenXYZ"}, want: "not an http(s) URL"},
		{name: "bad url", cfg: ChatConfig{Name: "n", URL: "https://hooks.example/%zzSECRETtokenXYZ"}, want: "not an http(s) URL"},
		{name: "locale", cfg: ChatConfig{Name: "n", URL: hook, Locale: "fr"}, want: `locale: must be en or zh, got "fr"`},
		{name: "link placeholder", cfg: ChatConfig{Name: "n", URL: hook, Link: "https://app.example/t/{id}"}, want: "unknown placeholder"},
		{name: "link not url", cfg: ChatConfig{Name: "n", URL: hook, Link: "app.example/{task_id}"}, want: "not an http(s) URL"},
		{name: "rate", cfg: ChatConfig{Name: "n", URL: hook, RateLimit: -1}, want: "rate_limit: must not be negative"},
		{name: "burst", cfg: ChatConfig{Name: "n", URL: hook, Burst: -1}, want: "burst: must not be negative"},
		{name: "timeout", cfg: ChatConfig{Name: "n", URL: hook, Timeout: -time.Second}, want: "timeout -1s is negative"},
		{name: "slack secret", slack: true, cfg: ChatConfig{Name: "n", URL: hook, Secret: "s3cr3t"}, want: "not signed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.slack {
				_, err = NewSlack(tt.cfg)
			} else {
				_, err = NewFeishu(tt.cfg)
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			assert.NotContains(t, err.Error(), "SECRETtokenXYZ")
			assert.NotContains(t, err.Error(), "s3cr3t")
		})
	}
}

func TestChat_TemplateValidation(t *testing.T) {
	tests := []struct {
		name string
		tmpl string
		want string // "" = valid
	}{
		{name: "valid", tmpl: "{{.TaskName}}: {{.PreviousStatusName}} → {{.StatusName}} ({{.Assignee}}) {{.Task.user_name}} {{.Event.ID}} {{trunc 10 .Comment}} {{mask .Assignee}}"},
		{name: "valid conditional", tmpl: `{{if eq .ShortType "commented"}}{{.Comment}}{{else}}{{.TaskName}}{{end}}`},
		{name: "parse error", tmpl: "{{if .Comment}}", want: "unexpected EOF"},
		{name: "unknown field", tmpl: "{{.Nope}}", want: "can't evaluate field Nope"},
		{name: "unknown function", tmpl: "{{shout .TaskName}}", want: `function "shout" not defined`},
		{name: "missing task key", tmpl: "{{.Task.no_such_field}}", want: "no_such_field"},
		{name: "empty output", tmpl: "{{/* nothing */}}  ", want: "renders empty text for the task.created sample"},
		{name: "empty for one type", tmpl: `{{if ne .ShortType "logged"}}x{{end}}`, want: "renders empty text for the task.logged sample"},
	}
	for _, tt := range tests {
		for _, platform := range []string{"slack", "feishu"} {
			t.Run(tt.name+"/"+platform, func(t *testing.T) {
				cfg := ChatConfig{Name: "team", URL: "https://hooks.example/x", Template: tt.tmpl}
				var err error
				if platform == "slack" {
					var s *Slack
					if s, err = NewSlack(cfg); err == nil {
						require.NoError(t, s.Close(context.Background()))
					}
				} else {
					var f *Feishu
					if f, err = NewFeishu(cfg); err == nil {
						require.NoError(t, f.Close(context.Background()))
					}
				}
				if tt.want == "" {
					require.NoError(t, err)
					return
				}
				require.Error(t, err)
				assert.Contains(t, err.Error(), platform+" team: template: ")
				assert.Contains(t, err.Error(), tt.want)
			})
		}
	}
}

// TestChat_TemplateEscaping checks that values in template data cannot
// inject mentions: Slack's <!channel>, Feishu's <at id=all>.
func TestChat_TemplateEscaping(t *testing.T) {
	ev := diff.SampleEvents()[3]
	ev.Data.Comment = "<!channel> <at id=all></at> & co"
	s, err := NewSlack(ChatConfig{Name: "s", URL: "https://hooks.example/x", Template: "{{.TaskName}}: {{.Comment}}"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	b, err := s.Render(&ev)
	require.NoError(t, err)
	assert.Contains(t, string(b), "&lt;!channel&gt; &lt;at id=all&gt;&lt;/at&gt; &amp; co")
	assert.NotContains(t, string(b), "<!channel>")

	f, err := NewFeishu(ChatConfig{Name: "f", URL: "https://hooks.example/x"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close(context.Background()) })
	b, err = f.Render(&ev)
	require.NoError(t, err)
	assert.NotContains(t, string(b), "<at id=all>")
	assert.Contains(t, string(b), "&lt;at id=all&gt;")
}

// TestChat_Golden pins every rendered message: each event type, a status
// change to each status, a digest and a template, in both locales, for
// both platforms. go test ./sink -run TestChat_Golden -update rewrites
// testdata/chat. Every golden message also passes the fake platform's
// checks.
func TestChat_Golden(t *testing.T) {
	samples := diff.SampleEvents()
	type namedEvent struct {
		name string
		ev   diff.Event
	}
	var cases []namedEvent
	for _, ev := range samples {
		if ev.Type == diff.TypeTaskStatusChanged {
			for _, v := range diff.SampleStatusChanges() {
				cases = append(cases, namedEvent{"status_changed_" + v.Data.StatusName, v})
			}
			continue
		}
		cases = append(cases, namedEvent{diff.ShortType(ev.Type), ev})
	}
	stalled := diff.SampleDerivedEvent("stalled", "task.stalled", "last_log", 4*time.Hour, false)
	resolved := diff.SampleDerivedEvent("stalled", "task.stalled", "last_log", 4*time.Hour, true)
	custom := diff.SampleDerivedEvent("sla", "task.sla_breach", "created", 26*time.Hour+30*time.Minute, false)
	custom.Data.Step = 2
	cases = append(cases, namedEvent{"stalled", stalled}, namedEvent{"stalled_resolved", resolved}, namedEvent{"sla_breach", custom})
	digest := make([]*diff.Event, len(samples))
	for i := range samples {
		digest[i] = &samples[i]
	}
	digest = append(digest, &stalled, &resolved)
	const tmpl = "*{{.TaskName}}* · {{.PreviousStatusName}} → {{.StatusName}} · {{.Assignee}}{{if .Comment}}\n> {{.Comment}}{{end}}{{if .Link}}\n{{.Link}}{{end}}"

	type renderer interface {
		Render(*diff.Event) ([]byte, error)
		RenderDigest([]*diff.Event) ([]byte, error)
	}
	newSink := func(platform, locale, template string) renderer {
		cfg := ChatConfig{Name: "golden", URL: "https://hooks.example/x", Locale: locale,
			Link: "https://app.example/tasks/{task_id}", Template: template}
		if platform == "slack" {
			s, err := NewSlack(cfg)
			require.NoError(t, err)
			t.Cleanup(func() { _ = s.Close(context.Background()) })
			return s
		}
		f, err := NewFeishu(cfg)
		require.NoError(t, err)
		t.Cleanup(func() { _ = f.Close(context.Background()) })
		return f
	}
	check := func(t *testing.T, platform, file string, body []byte) {
		t.Helper()
		require.True(t, json.Valid(body))
		if platform == "slack" {
			assert.Empty(t, slackCheckPayload(body), "slack would refuse it")
		} else {
			code, msg := feishuCheckPayload(body)
			assert.Zero(t, code, "feishu would refuse it: %s", msg)
		}
		var pretty bytes.Buffer
		require.NoError(t, json.Indent(&pretty, body, "", "  "))
		pretty.WriteByte('\n')
		path := filepath.Join("testdata", "chat", file)
		if chatUpdateGolden() {
			require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
			require.NoError(t, os.WriteFile(path, pretty.Bytes(), 0o644))
		}
		want, err := os.ReadFile(path)
		require.NoError(t, err, "run with -update to create it")
		assert.Equal(t, string(want), pretty.String(), "%s differs; run with -update if intended", path)
	}
	for _, platform := range []string{"slack", "feishu"} {
		for _, locale := range []string{"en", "zh"} {
			s := newSink(platform, locale, "")
			for _, c := range cases {
				t.Run(platform+"/"+locale+"/"+c.name, func(t *testing.T) {
					body, err := s.Render(&c.ev)
					require.NoError(t, err)
					check(t, platform, fmt.Sprintf("%s_%s_%s.json", platform, locale, c.name), body)
				})
			}
			t.Run(platform+"/"+locale+"/digest", func(t *testing.T) {
				body, err := s.RenderDigest(digest)
				require.NoError(t, err)
				check(t, platform, fmt.Sprintf("%s_%s_digest.json", platform, locale), body)
			})
			t.Run(platform+"/"+locale+"/template", func(t *testing.T) {
				body, err := newSink(platform, locale, tmpl).Render(&samples[3])
				require.NoError(t, err)
				check(t, platform, fmt.Sprintf("%s_%s_template.json", platform, locale), body)
			})
		}
	}
}

// TestChat_RateDefaults checks that the default limiters keep to the
// platforms' documented limits in every sliding window, under a sender
// that takes every token the moment it exists, and that they use most of
// the allowance.
func TestChat_RateDefaults(t *testing.T) {
	tests := []struct {
		name    string
		limit   rate.Limit
		burst   int
		windows map[time.Duration]int // most sends allowed in any window
		minimum int                   // least sends in 10 minutes
	}{
		{name: "slack", limit: SlackRateLimit, burst: SlackBurst, windows: map[time.Duration]int{time.Second: 1, time.Minute: 60}, minimum: 590},
		{name: "feishu", limit: FeishuRateLimit, burst: FeishuBurst, windows: map[time.Duration]int{time.Second: 5, time.Minute: 100}, minimum: 960},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lim := rate.NewLimiter(tt.limit, tt.burst)
			start := time.Date(2026, 4, 8, 10, 0, 0, 0, time.UTC)
			var sends []time.Time
			for at := start; at.Before(start.Add(10 * time.Minute)); at = at.Add(5 * time.Millisecond) {
				for lim.AllowN(at, 1) {
					sends = append(sends, at)
				}
			}
			assert.GreaterOrEqual(t, len(sends), tt.minimum)
			for w, most := range tt.windows {
				assert.LessOrEqual(t, chatMaxInWindow(sends, w), most, "window %s", w)
			}
		})
	}
}

// chatMaxInWindow returns the most times that fall in any window [t, t+w)
// starting at one of them.
func chatMaxInWindow(times []time.Time, w time.Duration) int {
	sorted := slices.Clone(times)
	slices.SortFunc(sorted, func(a, b time.Time) int { return a.Compare(b) })
	most, j := 0, 0
	for i := range sorted {
		for j < len(sorted) && sorted[j].Sub(sorted[i]) < w {
			j++
		}
		most = max(most, j-i)
	}
	return most
}

// TestChat_Burst sends 500 events through Deliver from 16 goroutines, as
// the Dispatcher does (tasks in parallel, each task's events in order,
// retrying failures), to fake platforms that fail every tenth request.
// The platform must never see more requests than the configured limit
// allows in any window, and every event must be in exactly one accepted
// message, alone or in a digest. The limit is raised from the platforms'
// documented ones only to keep the test short; the assertion uses the
// configured one.
func TestChat_Burst(t *testing.T) {
	tests := []struct {
		name  string
		limit rate.Limit
		burst int
	}{
		{name: "slack", limit: 20, burst: SlackBurst},
		{name: "feishu", limit: 25, burst: FeishuBurst},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Cleanup(func() { goleak.VerifyNone(t, goleak.IgnoreCurrent()) })
			failEvery := 10
			n := 0
			fail := func([]byte) *fakeAnswer {
				n++
				if n%failEvery == 0 {
					return &fakeAnswer{Status: 500, Body: "rollup_error"}
				}
				return nil
			}
			var (
				sink     Sink
				requests func() []fakeRequest
			)
			cfg := ChatConfig{RateLimit: tt.limit, Burst: tt.burst}
			if tt.name == "slack" {
				fake := newSlackFake(t)
				fake.override = fail
				cfg.URL = fake.URL()
				sink, requests = newTestSlack(t, cfg), fake.requests
			} else {
				fake := newFeishuFake(t, "burst-secret")
				fake.override = fail
				cfg.URL, cfg.Secret = fake.URL(), "burst-secret"
				sink, requests = newTestFeishu(t, cfg), fake.requests
			}

			const tasks, perTask, workers = 100, 5, 16
			evs := chatCommentEvents(perTask, tasks) // round-major: evs[r*tasks+task]
			start := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, len(evs))
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for r := 0; r < perTask; r++ {
						for task := w; task < tasks; task += workers {
							if err := chatDeliverRetrying(sink, &evs[r*tasks+task]); err != nil {
								errs <- err
							}
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			elapsed := time.Since(start)

			reqs := requests()
			var at []time.Time
			seen := map[string]int{}
			var accepted []fakeRequest
			digests := 0
			for _, r := range reqs {
				at = append(at, r.At)
				if !r.Accepted {
					continue
				}
				accepted = append(accepted, r)
				ids := chatIDsIn(r.Body)
				if len(ids) > 1 {
					digests++
				}
				for id := range ids {
					seen[id]++
				}
			}
			for _, w := range []time.Duration{250 * time.Millisecond, time.Second, 2 * time.Second} {
				allowed := tt.burst + int(float64(tt.limit)*w.Seconds())
				assert.LessOrEqual(t, chatMaxInWindow(at, w), allowed, "requests in a %s window", w)
			}
			for _, ev := range evs {
				assert.Equal(t, 1, seen[ev.ID], "%s in accepted messages", ev.ID)
			}
			assert.Len(t, seen, len(evs), "no other event ids")

			// Per task, events reached the chat in order.
			sort.SliceStable(accepted, func(i, j int) bool { return accepted[i].At.Before(accepted[j].At) })
			last := map[int64]int64{}
			for _, r := range accepted {
				for id := range chatIDsIn(r.Body) {
					var logID int64
					_, err := fmt.Sscanf(id, "log-%d", &logID)
					require.NoError(t, err)
					task := int64(1000 + (logID-10001)%tasks)
					assert.Greater(t, logID, last[task], "task %d out of order", task)
					last[task] = logID
				}
			}
			t.Logf("%d events in %s: %d requests, %d accepted, %d digests", len(evs), elapsed.Round(time.Millisecond),
				len(reqs), len(accepted), digests)
			assert.Less(t, elapsed, 30*time.Second)
		})
	}
}

// chatDeliverRetrying delivers ev like the Dispatcher: retryable failures
// are retried after a short pause (or the asked one, capped), permanent
// ones are returned.
func chatDeliverRetrying(s Sink, ev *diff.Event) error {
	for attempt := 0; attempt < 100; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := s.Deliver(ctx, ev)
		cancel()
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrPermanent) || errors.Is(err, ErrPaused) {
			return fmt.Errorf("%s: %w", ev.ID, err)
		}
		wait := 5 * time.Millisecond
		var ra *RetryAfterError
		if errors.As(err, &ra) {
			wait = min(ra.Wait, 100*time.Millisecond)
		}
		time.Sleep(wait) // the Dispatcher's backoff, shortened
	}
	return fmt.Errorf("%s: not delivered after 100 attempts", ev.ID)
}

// TestChat_FakeChecks checks that the fake platforms refuse what the real
// ones refuse, so that the tests passing against them means something.
func TestChat_FakeChecks(t *testing.T) {
	slackTests := []struct{ name, body, want string }{
		{"not json", `{"text":`, "invalid_payload"},
		{"no text", `{"text":""}`, "no_text"},
		{"unknown member", `{"text":"x","color":"red"}`, "invalid_payload"},
		{"unknown block", `{"text":"x","blocks":[{"type":"table"}]}`, "invalid_blocks"},
		{"long header", `{"text":"x","blocks":[{"type":"header","text":{"type":"plain_text","text":"` + strings.Repeat("a", 151) + `"}}]}`, "invalid_blocks"},
		{"header mrkdwn", `{"text":"x","blocks":[{"type":"header","text":{"type":"mrkdwn","text":"a"}}]}`, "invalid_blocks"},
		{"empty section", `{"text":"x","blocks":[{"type":"section"}]}`, "invalid_blocks"},
		{"ok", `{"text":"x","blocks":[{"type":"section","text":{"type":"mrkdwn","text":"a"}}]}`, ""},
	}
	for _, tt := range slackTests {
		t.Run("slack/"+tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, slackCheckPayload([]byte(tt.body)))
		})
	}
	card := `{"msg_type":"interactive","card":{"header":{"template":"%s","title":{"tag":"plain_text","content":"t"}},"elements":[%s]}}`
	feishuTests := []struct {
		name, body string
		want       int
	}{
		{"text msg", `{"msg_type":"text","content":{"text":"x"}}`, 9499},
		{"no elements", fmt.Sprintf(card, "blue", ""), 9499},
		{"bad colour", fmt.Sprintf(card, "pink", `{"tag":"hr"}`), 9499},
		{"unknown tag", fmt.Sprintf(card, "blue", `{"tag":"table"}`), 9499},
		{"button without url", fmt.Sprintf(card, "blue", `{"tag":"action","actions":[{"tag":"button","text":{"tag":"plain_text","content":"x"},"type":"primary","url":""}]}`), 9499},
		{"too large", fmt.Sprintf(card, "blue", `{"tag":"div","text":{"tag":"lark_md","content":"`+strings.Repeat("a", 21<<10)+`"}}`), 9499},
		{"ok", fmt.Sprintf(card, "blue", `{"tag":"div","text":{"tag":"lark_md","content":"x"}}`), 0},
	}
	for _, tt := range feishuTests {
		t.Run("feishu/"+tt.name, func(t *testing.T) {
			code, _ := feishuCheckPayload([]byte(tt.body))
			assert.Equal(t, tt.want, code)
		})
	}
}
