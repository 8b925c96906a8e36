package sink

// Tests of the chat sinks (Slack, Feishu) under a Dispatcher on the real
// store: a rate-limited message retried after the wait it asked for, every
// event delivered exactly once, and a sink's filter run once.

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

// chatRateLimitedAnswer is a receiver's first answer in the chat dispatcher
// tests: 429 with Retry-After of one second.
var chatRateLimitedAnswer = map[string]string{"Retry-After": "1"}

// runChatUnderDispatcher delivers events of several tasks through a chat
// sink, under a real dispatcher on the real store, both on one fake clock,
// while the receiver answers its first request 429 with Retry-After: 1 and
// every later one 200. The chat sink's *RetryAfterError meets the
// dispatcher's retry policy: every event is delivered exactly once, at
// least one attempt was retried, none is dead-lettered, the cursor reaches
// the head, and the rate-limited message is sent again after one wait of
// the second asked for, on the injected clock: no other layer waits for it
// too, and no wall-clock second passes.
func runChatUnderDispatcher(t *testing.T, newSink func(clock Clock) Sink, requests func() []fakeRequest) {
	t.Helper()
	clock := newFakeClock()
	sink := newSink(clock)
	ob := newStoreOutbox(t)
	evs := ob.Append(t, dispatchTestEvents(6, 3, 1, rand.New(rand.NewPCG(8, 8)))...)
	obs := &recordingObserver{}
	d, stop := startDispatcher(t, DispatcherConfig{Sink: sink, Outbox: ob, Retry: fastRetry, Observer: obs, Clock: clock})
	require.Eventually(t, func() bool { return d.State().Delivered == uint64(len(evs)) }, 15*time.Second, 5*time.Millisecond)
	require.NoError(t, stop())

	c, err := ob.Cursor(sink.Name())
	require.NoError(t, err)
	assert.Equal(t, evs[len(evs)-1].Offset, c)
	assert.Empty(t, ob.DeadLetters(t, sink.Name()))
	obs.mu.Lock()
	assert.Equal(t, len(evs), obs.delivered)
	assert.Equal(t, 1, obs.retried, "the 429 was retried once, by the dispatcher")
	assert.Zero(t, obs.dead)
	assert.Zero(t, obs.paused)
	obs.mu.Unlock()
	// fastRetry's own waits are 5ms at most: the one wait of a second is
	// the Retry-After, taken once.
	assert.Equal(t, []time.Duration{time.Second}, clock.Waits(100*time.Millisecond), "Retry-After: 1 waited once, on the injected clock")

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
	assert.Less(t, retry.At.Sub(reqs[0].At), 900*time.Millisecond, "the wait was on the injected clock, not the wall clock")
	for _, r := range reqs[1:] {
		assert.True(t, r.Accepted, r.Answer)
	}
}

// TestSlack_Dispatcher runs Slack under a dispatcher: see
// runChatUnderDispatcher.
func TestSlack_Dispatcher(t *testing.T) {
	fake := newSlackFake(t)
	fake.setScript(fakeAnswer{Status: 429, Body: "rate_limited", Header: chatRateLimitedAnswer})
	runChatUnderDispatcher(t, func(clock Clock) Sink {
		return newTestSlack(t, ChatConfig{URL: fake.URL(), RateLimit: 1000, Burst: 100, Clock: clock})
	}, fake.requests)
}

// TestFeishu_Dispatcher runs Feishu, signed, under a dispatcher: see
// runChatUnderDispatcher.
func TestFeishu_Dispatcher(t *testing.T) {
	const secret = "fs-secret-Jq3"
	fake := newFeishuFake(t, secret)
	fake.setScript(fakeAnswer{Status: 429, Body: feishuCode(99991400, "request trigger frequency limit"), Header: chatRateLimitedAnswer})
	runChatUnderDispatcher(t, func(clock Clock) Sink {
		// Feishu accepts a signature within an hour: the fake clock
		// starts now.
		return newTestFeishu(t, ChatConfig{URL: fake.URL(), Secret: secret, RateLimit: 1000, Burst: 100, Clock: clock})
	}, fake.requests)
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

// TestSlack_FilteredOnce checks that a chat sink's filter runs once per
// event, in the dispatcher: the sink itself does not filter again, and
// only the events the filter passed reach Slack.
func TestSlack_FilteredOnce(t *testing.T) {
	fake := newSlackFake(t)
	s := newTestSlack(t, ChatConfig{URL: fake.URL(), RateLimit: 1000, Burst: 100})
	ob := newStoreOutbox(t)
	in := dispatchTestEvents(8, 4, 1, rand.New(rand.NewPCG(9, 9)))
	for i := range in {
		if i%2 == 1 {
			in[i].Type = diff.TypeTaskCreated
		}
	}
	evs := ob.Append(t, in...)
	inner := FilterConfig{Events: []string{diff.TypeTaskStatusChanged}}.Filter()
	var mu sync.Mutex
	calls := map[string]int{}
	filter := func(ev *diff.Event) bool {
		mu.Lock()
		calls[ev.ID]++
		mu.Unlock()
		return inner(ev)
	}
	d, stop := startDispatcher(t, DispatcherConfig{Sink: s, Outbox: ob, Filter: filter, Retry: fastRetry})
	require.Eventually(t, func() bool { return d.State().Cursor == evs[len(evs)-1].Offset }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, stop())

	want, sent := map[string]bool{}, map[string]bool{}
	mu.Lock()
	for _, ev := range evs {
		assert.Equal(t, 1, calls[ev.ID], "%s (%s) evaluated once", ev.ID, ev.Type)
		if ev.Type == diff.TypeTaskStatusChanged {
			want[ev.ID] = true
		}
	}
	mu.Unlock()
	for _, r := range fake.requests() {
		for id := range chatIDsIn(r.Body) {
			sent[id] = true
		}
	}
	assert.Equal(t, want, sent, "only the events the filter passed were sent")
	assert.Equal(t, uint64(len(want)), d.State().Delivered)
}
