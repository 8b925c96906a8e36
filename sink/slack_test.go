package sink

// Tests of the Slack sink (slack.go) against a fake Slack webhook that
// checks each message: errors, network failures, Close, digests, and the
// conformance suite.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

// slackHookPath is the fake webhook's path; like a real one it holds the
// credential, so it must never show in errors.
const slackHookPath = "/services/T0000/B0000/SECRETtokenXYZ"

// slackFake is a local Slack incoming webhook that checks each request the
// way Slack does: POST, JSON content type, the Block Kit shape and limits.
// It answers "ok", or Slack's error answers when the request is wrong or
// when a test scripts one.
type slackFake struct {
	srv *httptest.Server

	mu       sync.Mutex
	reqs     []fakeRequest
	script   []fakeAnswer                  // answers to the next requests, in order
	override func(body []byte) *fakeAnswer // consulted when script is empty
}

// fakeRequest is one request a fake platform received.
type fakeRequest struct {
	At       time.Time
	Body     []byte
	Accepted bool
	Answer   string
}

// fakeAnswer is a scripted answer of a fake platform.
type fakeAnswer struct {
	Status int
	Body   string
	Header map[string]string
	Delay  <-chan struct{} // when set, the answer waits for it to close
}

func newSlackFake(t *testing.T) *slackFake {
	t.Helper()
	f := &slackFake{}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *slackFake) URL() string { return f.srv.URL + slackHookPath }

func (f *slackFake) serve(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	body, _ := io.ReadAll(r.Body)
	status, answer := http.StatusOK, "ok"
	if r.URL.Path != slackHookPath {
		status, answer = http.StatusNotFound, "no_service"
	} else if err := slackCheckRequest(r, body); err != "" {
		status, answer = http.StatusBadRequest, err
	}
	var scripted *fakeAnswer
	f.mu.Lock()
	if len(f.script) > 0 {
		scripted = &f.script[0]
		f.script = f.script[1:]
	} else if f.override != nil {
		scripted = f.override(body)
	}
	if scripted != nil && status == http.StatusOK {
		status, answer = scripted.Status, scripted.Body
	}
	f.reqs = append(f.reqs, fakeRequest{At: at, Body: body, Accepted: status == http.StatusOK, Answer: answer})
	f.mu.Unlock()
	if scripted != nil && scripted.Delay != nil {
		select {
		case <-scripted.Delay:
		case <-r.Context().Done():
			return
		}
	}
	if scripted != nil {
		for k, v := range scripted.Header {
			w.Header().Set(k, v)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, answer)
}

func (f *slackFake) requests() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeRequest(nil), f.reqs...)
}

func (f *slackFake) setScript(a ...fakeAnswer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script = append(f.script[:0], a...)
}

// slackCheckMessage is the exact shape the sink may send; unknown members
// are refused.
type slackCheckMessage struct {
	Text   *string           `json:"text"`
	Blocks []slackCheckBlock `json:"blocks"`
}

type slackCheckText struct {
	Type  string `json:"type"`
	Text  string `json:"text"`
	Emoji *bool  `json:"emoji"`
}

type slackCheckBlock struct {
	Type     string           `json:"type"`
	Text     *slackCheckText  `json:"text"`
	Fields   []slackCheckText `json:"fields"`
	Elements []slackCheckText `json:"elements"`
}

// slackCheckRequest returns Slack's error answer for a bad request, or "".
func slackCheckRequest(r *http.Request, body []byte) string {
	if r.Method != http.MethodPost {
		return "invalid_payload"
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return "invalid_payload"
	}
	return slackCheckPayload(body)
}

// slackCheckPayload checks a message body against the Block Kit rules the
// sink relies on and returns Slack's error answer, or "".
func slackCheckPayload(body []byte) string {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var m slackCheckMessage
	if err := dec.Decode(&m); err != nil {
		return "invalid_payload"
	}
	if (m.Text == nil || *m.Text == "") && len(m.Blocks) == 0 {
		return "no_text"
	}
	if m.Text != nil && utf8.RuneCountInString(*m.Text) > 40000 {
		return "msg_too_long"
	}
	if len(m.Blocks) > 50 {
		return "invalid_blocks"
	}
	textOK := func(t *slackCheckText, max int, types ...string) bool {
		if t == nil || t.Text == "" || utf8.RuneCountInString(t.Text) > max {
			return false
		}
		for _, typ := range types {
			if t.Type == typ {
				return t.Emoji == nil || t.Type == "plain_text"
			}
		}
		return false
	}
	for _, b := range m.Blocks {
		switch b.Type {
		case "header":
			if !textOK(b.Text, 150, "plain_text") || b.Fields != nil || b.Elements != nil {
				return "invalid_blocks"
			}
		case "section":
			if b.Text == nil && len(b.Fields) == 0 || b.Elements != nil || len(b.Fields) > 10 {
				return "invalid_blocks"
			}
			if b.Text != nil && !textOK(b.Text, 3000, "mrkdwn", "plain_text") {
				return "invalid_blocks"
			}
			for i := range b.Fields {
				if !textOK(&b.Fields[i], 2000, "mrkdwn", "plain_text") {
					return "invalid_blocks"
				}
			}
		case "context":
			if b.Text != nil || b.Fields != nil || len(b.Elements) == 0 || len(b.Elements) > 10 {
				return "invalid_blocks"
			}
			for i := range b.Elements {
				if !textOK(&b.Elements[i], 3000, "mrkdwn", "plain_text") {
					return "invalid_blocks"
				}
			}
		default:
			return "invalid_blocks"
		}
	}
	return ""
}

func newTestSlack(t *testing.T, cfg ChatConfig) *Slack {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "team-chat"
	}
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t))
	s, err := NewSlack(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close(context.Background())) })
	return s
}

func TestSlack_Deliver(t *testing.T) {
	fake := newSlackFake(t)
	s := newTestSlack(t, ChatConfig{URL: fake.URL(), Link: "https://app.example/tasks/{task_id}", RateLimit: 1000, Burst: 10})
	for _, ev := range diff.SampleEvents() {
		require.NoError(t, s.Deliver(context.Background(), &ev), ev.Type)
	}
	reqs := fake.requests()
	require.Len(t, reqs, len(diff.Types))
	for i, ev := range diff.SampleEvents() {
		want, err := s.Render(&ev)
		require.NoError(t, err)
		assert.Equal(t, string(want), string(reqs[i].Body), "Deliver posts what Render shows")
		assert.True(t, reqs[i].Accepted, reqs[i].Answer)
		// The edits' samples have the phone number corrected to …0361.
		assert.NotContains(t, string(reqs[i].Body), "6281519140316", "user_phone is redacted by default")
		assert.NotContains(t, string(reqs[i].Body), "6281519140361", "user_phone is redacted by default")
		assert.Regexp(t, `6281\*\*\*\*03(16|61)`, string(reqs[i].Body))
	}
}

func TestSlack_Errors(t *testing.T) {
	ev := diff.SampleEvents()[2]
	tests := []struct {
		name      string
		answer    fakeAnswer
		permanent bool
		pause     bool
		wait      time.Duration // > 0: a *RetryAfterError of this wait
		message   string
	}{
		{name: "invalid_payload", answer: fakeAnswer{Status: 400, Body: "invalid_payload"}, permanent: true, message: "invalid_payload"},
		{name: "no_text", answer: fakeAnswer{Status: 400, Body: "no_text"}, permanent: true, message: "no_text"},
		{name: "user_not_found", answer: fakeAnswer{Status: 400, Body: "user_not_found"}, permanent: true, message: "user_not_found"},
		{name: "action_prohibited", answer: fakeAnswer{Status: 403, Body: "action_prohibited"}, pause: true, message: "action_prohibited"},
		{name: "channel_not_found", answer: fakeAnswer{Status: 404, Body: "channel_not_found"}, pause: true, message: "channel_not_found"},
		{name: "channel_is_archived", answer: fakeAnswer{Status: 410, Body: "channel_is_archived"}, pause: true, message: "channel_is_archived"},
		{name: "rate limited", answer: fakeAnswer{Status: 429, Body: "rate_limited", Header: map[string]string{"Retry-After": "7"}}, wait: 7 * time.Second},
		{name: "rate limited without Retry-After", answer: fakeAnswer{Status: 429, Body: "rate_limited"}},
		{name: "rollup_error", answer: fakeAnswer{Status: 500, Body: "rollup_error"}, message: "rollup_error"},
		{name: "unavailable", answer: fakeAnswer{Status: 503, Body: "<html>down</html>", Header: map[string]string{"Retry-After": "2"}}, wait: 2 * time.Second},
		{name: "bad gateway", answer: fakeAnswer{Status: 502}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := newSlackFake(t)
			s := newTestSlack(t, ChatConfig{URL: fake.URL()})
			fake.setScript(tt.answer)
			err := s.Deliver(context.Background(), &ev)
			require.Error(t, err)
			assert.Equal(t, tt.permanent, errors.Is(err, ErrPermanent), "permanent: %v", err)
			assert.Equal(t, tt.pause, errors.Is(err, ErrPaused), "pause: %v", err)
			var ra *RetryAfterError
			if assert.Equal(t, tt.wait > 0, errors.As(err, &ra), "retry after: %v", err) && ra != nil {
				assert.Equal(t, tt.wait, ra.Wait)
			}
			var ce *ChatError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, tt.answer.Status, ce.HTTPStatus)
			assert.Contains(t, err.Error(), tt.message)
			assert.NotContains(t, err.Error(), "SECRETtokenXYZ")
			assert.Contains(t, err.Error(), "team-chat")
		})
	}
}

func TestSlack_NetworkErrors(t *testing.T) {
	ev := diff.SampleEvents()[0]
	t.Run("refused", func(t *testing.T) {
		fake := newSlackFake(t)
		url := fake.URL()
		fake.srv.Close()
		s := newTestSlack(t, ChatConfig{URL: url})
		err := s.Deliver(context.Background(), &ev)
		require.Error(t, err)
		assert.False(t, errors.Is(err, ErrPermanent))
		assert.NotContains(t, err.Error(), "SECRETtokenXYZ")
		assert.NotContains(t, err.Error(), "/services/")
	})
	t.Run("timeout", func(t *testing.T) {
		fake := newSlackFake(t)
		release := make(chan struct{})
		t.Cleanup(func() { close(release) })
		fake.setScript(fakeAnswer{Status: 200, Body: "ok", Delay: release})
		s := newTestSlack(t, ChatConfig{URL: fake.URL(), Timeout: 50 * time.Millisecond})
		start := time.Now()
		err := s.Deliver(context.Background(), &ev)
		require.Error(t, err)
		assert.Less(t, time.Since(start), 5*time.Second)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.False(t, errors.Is(err, ErrPermanent))
		assert.NotContains(t, err.Error(), "SECRETtokenXYZ")
	})
	t.Run("cancelled", func(t *testing.T) {
		fake := newSlackFake(t)
		s := newTestSlack(t, ChatConfig{URL: fake.URL()})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		assert.ErrorIs(t, s.Deliver(ctx, &ev), context.Canceled)
		assert.Empty(t, fake.requests())
	})
}

func TestSlack_Close(t *testing.T) {
	fake := newSlackFake(t)
	s, err := NewSlack(ChatConfig{Name: "c", URL: fake.URL()})
	require.NoError(t, err)
	require.NoError(t, s.Close(context.Background()))
	require.NoError(t, s.Close(context.Background()), "Close is idempotent")
	ev := diff.SampleEvents()[0]
	assert.ErrorIs(t, s.Deliver(context.Background(), &ev), ErrChatClosed)
	assert.Equal(t, "c", s.Name())
}

// TestSlack_DigestCancel checks that an event whose Deliver gives up while
// waiting for a digest is left out of it.
func TestSlack_DigestCancel(t *testing.T) {
	fake := newSlackFake(t)
	s := newTestSlack(t, ChatConfig{URL: fake.URL(), RateLimit: 2, Burst: 1})
	evs := chatCommentEvents(3, 1)
	require.NoError(t, s.Deliver(context.Background(), &evs[0]), "the first takes the token")

	ctx, cancel := context.WithCancel(context.Background())
	errB := make(chan error, 1)
	go func() { errB <- s.Deliver(ctx, &evs[1]) }()
	errC := make(chan error, 1)
	go func() { errC <- s.Deliver(context.Background(), &evs[2]) }()
	time.AfterFunc(50*time.Millisecond, cancel)
	assert.ErrorIs(t, <-errB, context.Canceled)
	require.NoError(t, <-errC)

	reqs := fake.requests()
	require.Len(t, reqs, 2)
	assert.Contains(t, string(reqs[1].Body), evs[2].ID)
	assert.NotContains(t, string(reqs[1].Body), evs[1].ID)
}

// TestSlack_DigestPoison checks that a digest the platform refuses as a
// whole does not dead-letter its events: within their Deliver calls, each
// is sent again alone, and only the bad one is permanent. The sink keeps
// no state for a later retry: the refusal is settled in one call.
func TestSlack_DigestPoison(t *testing.T) {
	fake := newSlackFake(t)
	fake.override = func(body []byte) *fakeAnswer {
		if bytes.Contains(body, []byte("POISON")) {
			return &fakeAnswer{Status: 400, Body: "invalid_blocks"}
		}
		return nil
	}
	s := newTestSlack(t, ChatConfig{URL: fake.URL(), RateLimit: 2, Burst: 1})
	evs := chatCommentEvents(4, 1)
	evs[2].Data.Comment = "POISON " + evs[2].ID
	require.NoError(t, s.Deliver(context.Background(), &evs[0]))

	errs := make([]error, len(evs))
	var wg sync.WaitGroup
	for i := 1; i < len(evs); i++ {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = s.Deliver(context.Background(), &evs[i]) }()
	}
	wg.Wait()
	for i := 1; i < len(evs); i++ {
		if i == 2 {
			assert.ErrorIs(t, errs[i], ErrPermanent)
		} else {
			assert.NoError(t, errs[i])
		}
	}
	reqs := fake.requests()
	require.Len(t, reqs, 5, "one message, the refused digest, then each of its events alone")
	assert.Len(t, chatIDsIn(reqs[1].Body), 3, "events 1-3 went out as one digest")
	for _, r := range reqs[2:] {
		assert.Len(t, chatIDsIn(r.Body), 1, "one event per message: %s", r.Body)
	}
}

// chatCommentEvents returns n comment events for each of tasks tasks, each
// with its own event id in its comment.
func chatCommentEvents(n, tasks int) []diff.Event {
	base := diff.SampleEvents()[3]
	var out []diff.Event
	logID := int64(10000)
	start := base.Time
	for k := 0; k < n; k++ {
		for tk := 0; tk < tasks; tk++ {
			ev := base
			logID++
			ev.ID = diff.EventID(logID)
			ev.Subject = fmt.Sprint(1000 + tk)
			ev.Data.TaskID = int64(1000 + tk)
			ev.Data.Comment = "note " + ev.ID
			ev.Time = start.Add(time.Duration(logID-10000) * time.Second)
			ev.Offset = uint64(logID - 10000)
			ev.Body = nil
			out = append(out, ev)
		}
	}
	return out
}

func TestSlack_Conformance(t *testing.T) {
	var s *Slack
	runSinkConformance(t, sinkConformance{
		NewSink: func(t *testing.T) (Sink, conformanceReceiver) {
			rc := newConformanceHTTPReceiver(t)
			rc.OK = func(w http.ResponseWriter) { _, _ = io.WriteString(w, "ok") }
			rc.Check = func(r *http.Request, body []byte) error {
				if e := slackCheckRequest(r, body); e != "" {
					return errors.New(e)
				}
				return nil
			}
			// A high limit: the suite counts messages, and digests would
			// merge its concurrent deliveries.
			s = newTestSlack(t, ChatConfig{URL: rc.URL + slackHookPath, RateLimit: 1000, Burst: 100, Timeout: 300 * time.Millisecond})
			return s, rc
		},
		Features: conformanceFeatures{
			MatchPayload: func(t *testing.T, ev *diff.Event, payload []byte) {
				want, err := s.Render(ev)
				require.NoError(t, err)
				assert.Equal(t, string(want), string(payload))
			},
			ServerError: true, ClientError: true, Hang: true, Gone: true,
			AttemptTimeout: 300 * time.Millisecond,
		},
	})
}
