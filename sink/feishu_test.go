package sink

// Tests of the Feishu sink (feishu.go) against a fake Feishu bot that checks
// each message: signing, keywords, errors, the platform's limit, and the
// conformance suite.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

const feishuHookPath = "/open-apis/bot/v2/hook/SECRET-hook-5e3d587e"

// feishuFake is a local Feishu custom bot that checks each request the way
// the bot does: POST, JSON, at most 20 KB, the interactive card shape, the
// signature (when it has a secret) with a timestamp within one hour, the
// custom keywords (when set) and its frequency limit (when set). Like
// Feishu it answers most errors with HTTP 200 and a non-zero code.
type feishuFake struct {
	srv      *httptest.Server
	secret   string
	keywords []string
	// perSecond and perMinute, when set, are the bot's frequency limit:
	// requests beyond it in any sliding window are answered 11232.
	perSecond, perMinute int

	mu       sync.Mutex
	reqs     []fakeRequest
	script   []fakeAnswer
	override func(body []byte) *fakeAnswer
}

const feishuOK = `{"StatusCode":0,"StatusMessage":"success","code":0,"data":{},"msg":"success"}`

func newFeishuFake(t *testing.T, secret string) *feishuFake {
	t.Helper()
	f := &feishuFake{secret: secret}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *feishuFake) URL() string { return f.srv.URL + feishuHookPath }

func feishuCode(code int, msg string) string {
	b, _ := json.Marshal(map[string]any{"code": code, "msg": msg, "data": map[string]any{}})
	return string(b)
}

func (f *feishuFake) serve(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	body, _ := io.ReadAll(r.Body)
	status, answer := http.StatusOK, feishuOK
	switch {
	case r.URL.Path != feishuHookPath:
		status, answer = http.StatusNotFound, feishuCode(19001, "param invalid: incoming webhook access token invalid")
	default:
		if code, msg := f.check(r, body, at); code != 0 {
			answer = feishuCode(code, msg)
		}
	}
	var scripted *fakeAnswer
	f.mu.Lock()
	if answer == feishuOK && f.perSecond > 0 && f.overLimit(at) {
		answer = feishuCode(11232, "frequency limited psm[lark.oapi.app_platform_runtime]appID[1]")
	}
	if len(f.script) > 0 {
		scripted = &f.script[0]
		f.script = f.script[1:]
	} else if f.override != nil {
		scripted = f.override(body)
	}
	if scripted != nil && answer == feishuOK {
		status, answer = scripted.Status, scripted.Body
	}
	f.reqs = append(f.reqs, fakeRequest{At: at, Body: body, Accepted: status == http.StatusOK && answer == feishuOK, Answer: answer})
	f.mu.Unlock()
	if scripted != nil {
		for k, v := range scripted.Header {
			w.Header().Set(k, v)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, answer)
}

// overLimit reports whether a request at t exceeds the frequency limit,
// counting the requests already received. f.mu is held.
func (f *feishuFake) overLimit(t time.Time) bool {
	var sec, minute int
	for _, r := range f.reqs {
		if t.Sub(r.At) < time.Second {
			sec++
		}
		if t.Sub(r.At) < time.Minute {
			minute++
		}
	}
	return sec >= f.perSecond || (f.perMinute > 0 && minute >= f.perMinute)
}

func (f *feishuFake) requests() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeRequest(nil), f.reqs...)
}

func (f *feishuFake) setScript(a ...fakeAnswer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script = append(f.script[:0], a...)
}

// The exact card shape the sink may send; unknown members are refused.
type feishuCheckMessage struct {
	Timestamp *string          `json:"timestamp"`
	Sign      *string          `json:"sign"`
	MsgType   string           `json:"msg_type"`
	Card      *feishuCheckCard `json:"card"`
}

type feishuCheckText struct {
	Tag     string `json:"tag"`
	Content string `json:"content"`
}

type feishuCheckCard struct {
	Config *struct {
		WideScreenMode bool `json:"wide_screen_mode"`
	} `json:"config"`
	Header *struct {
		Template string          `json:"template"`
		Title    feishuCheckText `json:"title"`
	} `json:"header"`
	Elements []struct {
		Tag    string           `json:"tag"`
		Text   *feishuCheckText `json:"text"`
		Fields []struct {
			IsShort *bool           `json:"is_short"`
			Text    feishuCheckText `json:"text"`
		} `json:"fields"`
		Actions []struct {
			Tag  string          `json:"tag"`
			Text feishuCheckText `json:"text"`
			Type string          `json:"type"`
			URL  string          `json:"url"`
		} `json:"actions"`
		Elements []feishuCheckText `json:"elements"`
	} `json:"elements"`
}

var feishuColors = map[string]bool{"blue": true, "wathet": true, "turquoise": true, "green": true, "yellow": true,
	"orange": true, "red": true, "carmine": true, "violet": true, "purple": true, "indigo": true, "grey": true, "default": true}

// check returns the bot's error code and msg for a bad request, or 0.
func (f *feishuFake) check(r *http.Request, body []byte, now time.Time) (int, string) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if r.Method != http.MethodPost || err != nil || mt != "application/json" {
		return 9499, "Bad Request"
	}
	if code, msg := feishuCheckPayload(body); code != 0 {
		return code, msg
	}
	var m feishuCheckMessage
	_ = json.Unmarshal(body, &m)
	if f.secret != "" {
		const signFail = "sign match fail or timestamp is not within one hour from current time"
		if m.Timestamp == nil || m.Sign == nil {
			return 19021, signFail
		}
		ts, err := strconv.ParseInt(*m.Timestamp, 10, 64)
		if err != nil || now.Sub(time.Unix(ts, 0)).Abs() > time.Hour {
			return 19021, signFail
		}
		mac := hmac.New(sha256.New, []byte(*m.Timestamp+"\n"+f.secret))
		mac.Write(nil)
		if !hmac.Equal([]byte(*m.Sign), []byte(base64.StdEncoding.EncodeToString(mac.Sum(nil)))) {
			return 19021, signFail
		}
	}
	if len(f.keywords) > 0 {
		found := false
		for _, k := range f.keywords {
			if bytes.Contains(body, []byte(k)) {
				found = true
			}
		}
		if !found {
			return 19024, "Key Words Not Found"
		}
	}
	return 0, ""
}

// feishuCheckPayload checks a message body against the custom bot's card
// rules and returns its error code and msg, or 0.
func feishuCheckPayload(body []byte) (int, string) {
	if len(body) > 20<<10 {
		return 9499, "Bad Request"
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var m feishuCheckMessage
	if err := dec.Decode(&m); err != nil {
		return 9499, "Bad Request"
	}
	if m.MsgType != "interactive" || m.Card == nil || m.Card.Header == nil || len(m.Card.Elements) == 0 {
		return 9499, "Bad Request"
	}
	h := m.Card.Header
	if h.Title.Tag != "plain_text" || h.Title.Content == "" || !feishuColors[h.Template] {
		return 9499, "Bad Request"
	}
	textOK := func(t *feishuCheckText, tags ...string) bool {
		if t == nil || t.Content == "" {
			return false
		}
		for _, tag := range tags {
			if t.Tag == tag {
				return true
			}
		}
		return false
	}
	for _, e := range m.Card.Elements {
		ok := true
		switch e.Tag {
		case "div":
			ok = (e.Text != nil) != (len(e.Fields) > 0) && e.Actions == nil && e.Elements == nil
			if e.Text != nil {
				ok = ok && textOK(e.Text, "lark_md", "plain_text")
			}
			for i := range e.Fields {
				ok = ok && e.Fields[i].IsShort != nil && textOK(&e.Fields[i].Text, "lark_md", "plain_text")
			}
		case "action":
			ok = len(e.Actions) > 0 && e.Text == nil && e.Fields == nil
			for _, a := range e.Actions {
				u, err := url.Parse(a.URL)
				ok = ok && a.Tag == "button" && textOK(&a.Text, "plain_text") &&
					(a.Type == "default" || a.Type == "primary" || a.Type == "danger") &&
					err == nil && (u.Scheme == "https" || u.Scheme == "http")
			}
		case "note":
			ok = len(e.Elements) > 0 && e.Text == nil && e.Fields == nil
			for i := range e.Elements {
				ok = ok && textOK(&e.Elements[i], "plain_text", "lark_md")
			}
		case "hr":
			ok = e.Text == nil && e.Fields == nil && e.Actions == nil && e.Elements == nil
		default:
			ok = false
		}
		if !ok {
			return 9499, "Bad Request"
		}
	}
	return 0, ""
}

func newTestFeishu(t *testing.T, cfg ChatConfig) *Feishu {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "ops-chat"
	}
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t))
	f, err := NewFeishu(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, f.Close(context.Background())) })
	return f
}

func TestFeishuSign(t *testing.T) {
	// Computed with Python's hmac module, independently of this package.
	assert.Equal(t, "3/MaVZ8JLIy4TUG+7KSFJqvUkTKd+HWY8g+56DZWq8s=", feishuSign("demo-secret", 1599360473))
}

func TestFeishu_Deliver(t *testing.T) {
	const secret = "fs-secret-Jq3"
	fake := newFeishuFake(t, secret)
	f := newTestFeishu(t, ChatConfig{URL: fake.URL(), Secret: secret, Link: "https://app.example/tasks/{task_id}", RateLimit: 1000, Burst: 10})
	for _, ev := range diff.SampleEvents() {
		require.NoError(t, f.Deliver(context.Background(), &ev), ev.Type)
	}
	reqs := fake.requests()
	require.Len(t, reqs, len(diff.Types))
	for i, ev := range diff.SampleEvents() {
		require.True(t, reqs[i].Accepted, reqs[i].Answer)
		var sent map[string]any
		require.NoError(t, json.Unmarshal(reqs[i].Body, &sent))
		assert.IsType(t, "", sent["timestamp"], "timestamp is a string of Unix seconds")
		assert.NotEmpty(t, sent["sign"])
		delete(sent, "timestamp")
		delete(sent, "sign")
		want, err := f.Render(&ev)
		require.NoError(t, err)
		got, err := json.Marshal(sent)
		require.NoError(t, err)
		assert.JSONEq(t, string(want), string(got), "Deliver posts what Render shows, plus the signature")
		assert.NotContains(t, string(reqs[i].Body), "6281519140316")
		assert.NotContains(t, string(reqs[i].Body), "6281519140361", "the edits' samples' corrected phone number")
		assert.NotContains(t, string(reqs[i].Body), secret)
	}
}

func TestFeishu_Unsigned(t *testing.T) {
	fake := newFeishuFake(t, "")
	f := newTestFeishu(t, ChatConfig{URL: fake.URL()})
	ev := diff.SampleEvents()[0]
	require.NoError(t, f.Deliver(context.Background(), &ev))
	reqs := fake.requests()
	require.Len(t, reqs, 1)
	assert.NotContains(t, string(reqs[0].Body), `"sign"`)
	assert.NotContains(t, string(reqs[0].Body), `"timestamp"`)
}

// TestFeishu_Signature checks the bot's own verdicts on signatures: HTTP
// 200 with code 19021 becomes a dead letter carrying Feishu's message.
func TestFeishu_Signature(t *testing.T) {
	tests := []struct {
		name    string
		secret  string
		now     func() time.Time
		wantErr bool
	}{
		{name: "valid", secret: "right"},
		{name: "valid 50 minutes old", secret: "right", now: func() time.Time { return time.Now().Add(-50 * time.Minute) }},
		{name: "wrong secret", secret: "wrong", wantErr: true},
		{name: "stale timestamp", secret: "right", now: func() time.Time { return time.Now().Add(-61 * time.Minute) }, wantErr: true},
		{name: "missing", secret: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := newFeishuFake(t, "right")
			f := newTestFeishu(t, ChatConfig{URL: fake.URL(), Secret: tt.secret, Clock: testClock(tt.now)})
			ev := diff.SampleEvents()[2]
			err := f.Deliver(context.Background(), &ev)
			if !tt.wantErr {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrPermanent)
			var ce *ChatError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, 19021, ce.Code)
			assert.Equal(t, http.StatusOK, ce.HTTPStatus)
			assert.Contains(t, err.Error(), "sign match fail")
			assert.NotContains(t, err.Error(), "SECRET-hook")
			if tt.secret != "" {
				assert.NotContains(t, err.Error(), tt.secret)
			}
		})
	}
}

func TestFeishu_Keywords(t *testing.T) {
	fake := newFeishuFake(t, "")
	fake.keywords = []string{"任务"}
	ev := diff.SampleEvents()[1]
	zh := newTestFeishu(t, ChatConfig{Name: "zh", URL: fake.URL(), Locale: "zh"})
	require.NoError(t, zh.Deliver(context.Background(), &ev), "zh titles carry 任务")
	en := newTestFeishu(t, ChatConfig{Name: "en", URL: fake.URL(), Locale: "en"})
	err := en.Deliver(context.Background(), &ev)
	require.ErrorIs(t, err, ErrPermanent)
	assert.Contains(t, err.Error(), "code 19024: Key Words Not Found")
	withKeyword := newTestFeishu(t, ChatConfig{Name: "tmpl", URL: fake.URL(), Locale: "en",
		Template: "任务 {{.TaskName}}: {{.Assignee}}"})
	require.NoError(t, withKeyword.Deliver(context.Background(), &ev), "a template can carry the keyword")
}

func TestFeishu_Errors(t *testing.T) {
	ev := diff.SampleEvents()[2]
	tests := []struct {
		name      string
		answer    fakeAnswer
		permanent bool
		wait      time.Duration
		code      int
		message   string
	}{
		{name: "sign match fail", answer: fakeAnswer{Status: 200, Body: feishuCode(19021, "sign match fail or timestamp is not within one hour from current time")},
			permanent: true, code: 19021, message: "sign match fail"},
		{name: "ip not allowed", answer: fakeAnswer{Status: 200, Body: feishuCode(19022, "Ip Not Allowed")}, permanent: true, code: 19022, message: "Ip Not Allowed"},
		{name: "keywords", answer: fakeAnswer{Status: 200, Body: feishuCode(19024, "Key Words Not Found")}, permanent: true, code: 19024, message: "Key Words Not Found"},
		{name: "bad request", answer: fakeAnswer{Status: 200, Body: feishuCode(9499, "Bad Request")}, permanent: true, code: 9499, message: "Bad Request"},
		{name: "bad request 400", answer: fakeAnswer{Status: 400, Body: feishuCode(9499, "Bad Request")}, permanent: true, code: 9499},
		{name: "too many request", answer: fakeAnswer{Status: 200, Body: feishuCode(9499, "too many request")}, code: 9499, message: "too many request"},
		{name: "frequency limited", answer: fakeAnswer{Status: 200, Body: feishuCode(11232, "frequency limited psm[x]")}, code: 11232},
		{name: "gateway limit", answer: fakeAnswer{Status: 429, Body: feishuCode(99991400, "request trigger frequency limit"),
			Header: map[string]string{"x-ogw-ratelimit-reset": "3"}}, wait: 3 * time.Second, code: 99991400},
		{name: "gateway limit 400", answer: fakeAnswer{Status: 400, Body: feishuCode(99991400, "request trigger frequency limit")}, code: 99991400},
		{name: "server error", answer: fakeAnswer{Status: 500, Body: "oops"}, message: "oops"},
		{name: "200 not json", answer: fakeAnswer{Status: 200, Body: "<html>proxy</html>"}, message: "unreadable answer"},
		{name: "unknown code", answer: fakeAnswer{Status: 200, Body: feishuCode(19001, "param invalid")}, permanent: true, code: 19001},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := newFeishuFake(t, "")
			f := newTestFeishu(t, ChatConfig{URL: fake.URL()})
			fake.setScript(tt.answer)
			err := f.Deliver(context.Background(), &ev)
			require.Error(t, err)
			assert.Equal(t, tt.permanent, errors.Is(err, ErrPermanent), "permanent: %v", err)
			assert.False(t, errors.Is(err, ErrPaused))
			var ra *RetryAfterError
			if assert.Equal(t, tt.wait > 0, errors.As(err, &ra), "retry after: %v", err) && ra != nil {
				assert.Equal(t, tt.wait, ra.Wait)
			}
			var ce *ChatError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, tt.code, ce.Code)
			assert.Equal(t, tt.answer.Status, ce.HTTPStatus)
			assert.Contains(t, err.Error(), tt.message)
			assert.NotContains(t, err.Error(), "SECRET-hook")
		})
	}
	t.Run("legacy success", func(t *testing.T) {
		fake := newFeishuFake(t, "")
		f := newTestFeishu(t, ChatConfig{URL: fake.URL()})
		fake.setScript(fakeAnswer{Status: 200, Body: `{"Extra":null,"StatusCode":0,"StatusMessage":"success"}`})
		require.NoError(t, f.Deliver(context.Background(), &ev))
	})
}

// TestFeishu_PlatformLimit runs the default limiter against a bot that
// enforces Feishu's documented 5 per second: a burst of 40 events never
// meets code 11232 and every event reaches the chat.
func TestFeishu_PlatformLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a few seconds")
	}
	fake := newFeishuFake(t, "")
	fake.perSecond, fake.perMinute = 5, 100
	f := newTestFeishu(t, ChatConfig{URL: fake.URL()})
	evs := chatCommentEvents(5, 8)
	var wg sync.WaitGroup
	errs := make(chan error, len(evs))
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(evs); i += 8 {
				if err := f.Deliver(context.Background(), &evs[i]); err != nil {
					errs <- fmt.Errorf("%s: %w", evs[i].ID, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	seen := map[string]int{}
	for _, r := range fake.requests() {
		require.True(t, r.Accepted, r.Answer)
		for id := range chatIDsIn(r.Body) {
			seen[id]++
		}
	}
	for _, ev := range evs {
		assert.Equal(t, 1, seen[ev.ID], ev.ID)
	}
}

func TestFeishu_Conformance(t *testing.T) {
	var f *Feishu
	runSinkConformance(t, sinkConformance{
		NewSink: func(t *testing.T) (Sink, conformanceReceiver) {
			rc := newConformanceHTTPReceiver(t)
			rc.OK = func(w http.ResponseWriter) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, feishuOK)
			}
			rc.Check = func(r *http.Request, body []byte) error {
				if code, msg := feishuCheckPayload(body); code != 0 {
					return fmt.Errorf("code %d: %s", code, msg)
				}
				return nil
			}
			// A high limit: the suite counts messages, and digests would
			// merge its concurrent deliveries.
			f = newTestFeishu(t, ChatConfig{URL: rc.URL + feishuHookPath, RateLimit: 1000, Burst: 100, Timeout: 300 * time.Millisecond})
			return f, rc
		},
		Features: conformanceFeatures{
			MatchPayload: func(t *testing.T, ev *diff.Event, payload []byte) {
				want, err := f.Render(ev)
				require.NoError(t, err)
				assert.Equal(t, string(want), string(payload))
			},
			// Feishu has no 410: a gone bot answers a code (permanent).
			ServerError: true, ClientError: true, Hang: true,
			AttemptTimeout: 300 * time.Millisecond,
		},
	})
}
