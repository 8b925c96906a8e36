package sink

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// chatRateLimitedAnswer is a receiver's first answer in the chat dispatcher
// tests: 429 with Retry-After of one second.
var chatRateLimitedAnswer = map[string]string{"Retry-After": "1"}

// runChatUnderDispatcher delivers events of several tasks through sink,
// under a real dispatcher on the real store, while the receiver answers
// its first request 429 with Retry-After: 1 and every later one 200. The
// chat sink's *RetryAfterError meets the dispatcher's retry policy: every
// event is delivered exactly once, at least one attempt was retried, none
// is dead-lettered, the cursor reaches the head, and the rate-limited
// message is sent again no sooner than the second asked for.
func runChatUnderDispatcher(t *testing.T, sink Sink, requests func() []fakeRequest) {
	t.Helper()
	ob := newStoreOutbox(t)
	evs := ob.Append(t, dispatchTestEvents(6, 3, 1, rand.New(rand.NewPCG(8, 8)))...)
	obs := &recordingObserver{}
	d, stop := startDispatcher(t, DispatcherConfig{Sink: sink, Outbox: ob, Retry: fastRetry, Observer: obs})
	require.Eventually(t, func() bool { return d.State().Delivered == uint64(len(evs)) }, 15*time.Second, 5*time.Millisecond)
	require.NoError(t, stop())

	c, err := ob.Cursor(sink.Name())
	require.NoError(t, err)
	assert.Equal(t, evs[len(evs)-1].Offset, c)
	assert.Empty(t, ob.DeadLetters(t, sink.Name()))
	obs.mu.Lock()
	assert.Equal(t, len(evs), obs.delivered)
	assert.Positive(t, obs.retried, "the 429 was retried by the dispatcher")
	assert.Zero(t, obs.dead)
	assert.Zero(t, obs.paused)
	obs.mu.Unlock()

	// Other tasks' events go on while the rate-limited one waits: its
	// retry is the next request with its message, since the dispatcher
	// keeps a task's events in order.
	reqs := requests()
	require.NotEmpty(t, reqs)
	assert.False(t, reqs[0].Accepted, "the first request was answered 429")
	i := slices.IndexFunc(reqs[1:], func(r fakeRequest) bool { return chatUnsigned(t, r.Body) == chatUnsigned(t, reqs[0].Body) })
	require.GreaterOrEqual(t, i, 0, "the rate-limited message was sent again")
	retry := reqs[1+i]
	assert.True(t, retry.Accepted, retry.Answer)
	assert.GreaterOrEqual(t, retry.At.Sub(reqs[0].At), 950*time.Millisecond, "Retry-After: 1 was honoured")
	for _, r := range reqs[1:] {
		assert.True(t, r.Accepted, r.Answer)
	}
}

// TestSlack_Dispatcher runs Slack under a dispatcher: see
// runChatUnderDispatcher.
func TestSlack_Dispatcher(t *testing.T) {
	fake := newSlackFake(t)
	fake.setScript(fakeAnswer{Status: 429, Body: "rate_limited", Header: chatRateLimitedAnswer})
	s := newTestSlack(t, ChatConfig{URL: fake.URL(), RateLimit: 1000, Burst: 100})
	runChatUnderDispatcher(t, s, fake.requests)
}

// TestFeishu_Dispatcher runs Feishu, signed, under a dispatcher: see
// runChatUnderDispatcher.
func TestFeishu_Dispatcher(t *testing.T) {
	const secret = "fs-secret-Jq3"
	fake := newFeishuFake(t, secret)
	fake.setScript(fakeAnswer{Status: 429, Body: feishuCode(99991400, "request trigger frequency limit"), Header: chatRateLimitedAnswer})
	f := newTestFeishu(t, ChatConfig{URL: fake.URL(), Secret: secret, RateLimit: 1000, Burst: 100})
	runChatUnderDispatcher(t, f, fake.requests)
}

// chatUnsigned returns a chat message without Feishu's signature members,
// which change with the time of sending.
func chatUnsigned(t *testing.T, body []byte) string {
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(body, &m))
	delete(m, "timestamp")
	delete(m, "sign")
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return string(b)
}
