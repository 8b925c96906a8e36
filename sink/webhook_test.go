package sink

// Tests of the webhook sink (webhook.go): signing, secrets, status classes,
// keep-alive, validation, under a Dispatcher, and the conformance suite.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/retryafter"
)

// The Standard Webhooks specification's test vector
// (standard-webhooks/standard-webhooks, libraries/go/webhook_test.go,
// TestWebhookSign).
const (
	webhookTestSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	webhookTestSecretOld = "whsec_dGhlIG9sZCBzZWNyZXQgYmVpbmcgcm90YXRlZCBvdXQ="
)

func TestWebhook_SignatureTestVector(t *testing.T) {
	key, err := ParseWebhookSecret(webhookTestSecret)
	require.NoError(t, err)
	got := newWebhookSigner([][]byte{key}).sign("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", []byte(`{"test": 2432232314}`))
	assert.Equal(t, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", got)
}

func TestParseWebhookSecret(t *testing.T) {
	tests := []struct {
		name    string
		secret  string
		wantLen int
		wantErr string
	}{
		{"spec secret", webhookTestSecret, 24, ""},
		{"padded", "whsec_c2VjcmV0LWtleQ==", 10, ""},
		{"unpadded", "whsec_c2VjcmV0LWtleQ", 10, ""},
		{"no prefix", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 0, `must start with "whsec_"`},
		{"empty key", "whsec_", 0, "no key"},
		{"empty", "", 0, `must start with "whsec_"`},
		{"not base64", "whsec_not*base64!", 0, "not valid base64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key, err := ParseWebhookSecret(tc.secret)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				if len(tc.secret) > 6 {
					assert.NotContains(t, err.Error(), tc.secret[6:], "the error never quotes the secret")
				}
				return
			}
			require.NoError(t, err)
			assert.Len(t, key, tc.wantLen)
		})
	}
}

// webhookVerify checks a request like a Standard Webhooks receiver that
// knows secret: one of the v1 signatures must match, compared in constant
// time, and the timestamp must be within five minutes.
func webhookVerify(secret string, r *http.Request, body []byte) error {
	key, err := ParseWebhookSecret(secret)
	if err != nil {
		return err
	}
	id, ts := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp")
	if id == "" || ts == "" {
		return errors.New("missing webhook-id or webhook-timestamp")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q: %w", ts, err)
	}
	if d := time.Since(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("webhook-timestamp %s is %s off", ts, d)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	want := m.Sum(nil)
	for _, entry := range strings.Fields(r.Header.Get("webhook-signature")) {
		v, sig, ok := strings.Cut(entry, ",")
		if !ok || v != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no valid signature")
}

// newTestWebhook returns a Webhook posting to url, closed at cleanup.
func newTestWebhook(t *testing.T, url string, mod func(*WebhookConfig)) *Webhook {
	t.Helper()
	cfg := WebhookConfig{Name: "hooks", URL: url, Secrets: []string{webhookTestSecret}, Timeout: 2 * time.Second,
		Logger: zerolog.New(zerolog.NewTestWriter(t))}
	if mod != nil {
		mod(&cfg)
	}
	w, err := NewWebhook(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Close(context.Background()) })
	return w
}

func TestWebhook_Conformance(t *testing.T) {
	runSinkConformance(t, sinkConformance{
		NewSink: func(t *testing.T) (Sink, conformanceReceiver) {
			rc := newConformanceHTTPReceiver(t)
			rc.Check = func(r *http.Request, body []byte) error { return webhookVerify(webhookTestSecret, r, body) }
			return newTestWebhook(t, rc.URL+"/incs", func(c *WebhookConfig) { c.Timeout = 300 * time.Millisecond }), rc
		},
		Features: conformanceFeatures{ServerError: true, ClientError: true, Hang: true, Gone: true, AttemptTimeout: 300 * time.Millisecond},
	})
}

func TestWebhook_Deliver(t *testing.T) {
	rc := newConformanceHTTPReceiver(t)
	rc.Check = func(r *http.Request, body []byte) error { return webhookVerify(webhookTestSecret, r, body) }
	w := newTestWebhook(t, rc.URL+"/incs?tenant=1", nil)
	ev := newConformanceEvent(t, 237, 532)
	before := time.Now().Unix()
	require.NoError(t, w.Deliver(context.Background(), ev))

	got := rc.Received(t, 1)
	assert.Equal(t, string(ev.Body), string(got[0]))
	r := rc.Requests()[0]
	assert.Equal(t, http.MethodPost, r.Method)
	assert.Equal(t, "/incs", r.URL.Path)
	assert.Equal(t, "tenant=1", r.URL.RawQuery)
	assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
	assert.Equal(t, "log-532", r.Header.Get("webhook-id"))
	ts, err := strconv.ParseInt(r.Header.Get("webhook-timestamp"), 10, 64)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, ts, before)
	assert.LessOrEqual(t, ts, time.Now().Unix())
	assert.Regexp(t, `^v1,[A-Za-z0-9+/]{43}=$`, r.Header.Get("webhook-signature"))
}

func TestWebhook_TimestampPerAttempt(t *testing.T) {
	rc := newConformanceHTTPReceiver(t)
	now := time.Unix(1614265330, 0)
	w := newTestWebhook(t, rc.URL, func(c *WebhookConfig) { c.Now = func() time.Time { return now } })
	ev := &diff.Event{ID: "msg_p5jXN8AQM9LWM0D4loKWxJek", Body: []byte(`{"test": 2432232314}`)}
	require.NoError(t, w.Deliver(context.Background(), ev))
	now = now.Add(time.Minute)
	require.NoError(t, w.Deliver(context.Background(), ev))
	rc.Received(t, 2)
	reqs := rc.Requests()
	assert.Equal(t, "1614265330", reqs[0].Header.Get("webhook-timestamp"))
	assert.Equal(t, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", reqs[0].Header.Get("webhook-signature"))
	assert.Equal(t, "1614265390", reqs[1].Header.Get("webhook-timestamp"), "a retry is signed anew")
}

func TestWebhook_RotatingSecrets(t *testing.T) {
	for _, tc := range []struct {
		name     string
		receiver string
	}{
		{"receiver knows the new secret", webhookTestSecret},
		{"receiver still knows the old secret", webhookTestSecretOld},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newConformanceHTTPReceiver(t)
			rc.Check = func(r *http.Request, body []byte) error { return webhookVerify(tc.receiver, r, body) }
			w := newTestWebhook(t, rc.URL, func(c *WebhookConfig) { c.Secrets = []string{webhookTestSecret, webhookTestSecretOld} })
			require.NoError(t, w.Deliver(context.Background(), newConformanceEvent(t, 1, 1)))
			rc.Received(t, 1)
			sigs := strings.Fields(rc.Requests()[0].Header.Get("webhook-signature"))
			assert.Len(t, sigs, 2)
		})
	}
	// A receiver with an unrelated secret rejects it.
	rc := newConformanceHTTPReceiver(t)
	w := newTestWebhook(t, rc.URL, nil)
	require.NoError(t, w.Deliver(context.Background(), newConformanceEvent(t, 1, 1)))
	body := rc.Received(t, 1)[0]
	assert.NoError(t, webhookVerify(webhookTestSecret, rc.Requests()[0], body))
	assert.Error(t, webhookVerify(webhookTestSecretOld, rc.Requests()[0], body))
}

func TestWebhook_StatusClasses(t *testing.T) {
	now := time.Date(2026, 4, 8, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		status     int
		retryAfter string
		want       failureKind
		wantOK     bool
		wantWait   time.Duration
		wantRA     bool // a *RetryAfterError
	}{
		{name: "200", status: 200, wantOK: true},
		{name: "202", status: 202, wantOK: true},
		{name: "204", status: 204, wantOK: true},
		{name: "301 is not followed", status: 301, want: failPermanent},
		{name: "400", status: 400, want: failPermanent},
		{name: "401", status: 401, want: failPermanent},
		{name: "403", status: 403, want: failPermanent},
		{name: "404", status: 404, want: failPermanent},
		{name: "413", status: 413, want: failPermanent},
		{name: "408", status: 408, want: failRetryable},
		{name: "425", status: 425, want: failRetryable},
		{name: "429", status: 429, want: failRetryable},
		{name: "429 Retry-After seconds", status: 429, retryAfter: "7", want: failRetryable, wantWait: 7 * time.Second, wantRA: true},
		{name: "503 Retry-After date", status: 503, retryAfter: now.Add(90 * time.Second).Format(http.TimeFormat), want: failRetryable, wantWait: 90 * time.Second, wantRA: true},
		{name: "503 Retry-After in the past", status: 503, retryAfter: now.Add(-time.Hour).Format(http.TimeFormat), want: failRetryable},
		{name: "429 Retry-After over the cap", status: 429, retryAfter: "86400", want: failRetryable, wantWait: retryafter.Max, wantRA: true},
		{name: "503 Retry-After garbage", status: 503, retryAfter: "soon", want: failRetryable},
		{name: "500", status: 500, want: failRetryable},
		{name: "502", status: 502, want: failRetryable},
		{name: "504", status: 504, want: failRetryable},
		{name: "410 pauses", status: 410, want: failPause},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				if tc.status == 301 {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte("some answer"))
			}))
			defer srv.Close()
			w := newTestWebhook(t, srv.URL, func(c *WebhookConfig) { c.Now = func() time.Time { return now } })
			err := w.Deliver(context.Background(), newConformanceEvent(t, 1, 1))
			if tc.wantOK {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			kind, wait := classifyFailure(err)
			assert.Equal(t, tc.want, kind)
			assert.Equal(t, tc.wantWait, wait)
			host := strings.TrimPrefix(srv.URL, "http://")
			assert.Contains(t, err.Error(), fmt.Sprintf("webhook hooks: POST %s: HTTP %d", host, tc.status))
			var ra *RetryAfterError
			assert.Equal(t, tc.wantRA, errors.As(err, &ra))
		})
	}
}

func TestWebhook_NoSecretsInErrors(t *testing.T) {
	const pathSecret, querySecret, userSecret = "PATHSECRET", "QUERYSECRET", "USERSECRET"
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		switch r.URL.Query().Get("mode") {
		case "hang":
			select {
			case <-r.Context().Done():
			case <-hang:
			}
		default:
			// Echo the request headers back, like a chatty proxy.
			w.Header().Set("X-Echo", r.Header.Get("webhook-signature"))
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte(r.Header.Get("webhook-signature")))
		}
	}))
	defer srv.Close()
	defer close(hang) // before srv.Close, which waits for handlers
	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadAddr := l.Addr().String()
	require.NoError(t, l.Close())

	base := strings.Replace(srv.URL, "http://", "http://user:"+userSecret+"@", 1)
	tests := []struct {
		name string
		url  string
		want string
	}{
		{"status", base + "/hook/" + pathSecret + "?token=" + querySecret, "HTTP 502"},
		{"timeout", base + "/hook/" + pathSecret + "?mode=hang&token=" + querySecret, "no response within"},
		{"refused", "http://" + deadAddr + "/hook/" + pathSecret + "?token=" + querySecret, "connection refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newTestWebhook(t, tc.url, func(c *WebhookConfig) { c.Timeout = 200 * time.Millisecond })
			err := w.Deliver(context.Background(), newConformanceEvent(t, 1, 1))
			require.Error(t, err)
			msg := err.Error()
			assert.Contains(t, msg, tc.want)
			assert.Contains(t, msg, "webhook hooks: POST ")
			for _, secret := range []string{pathSecret, querySecret, userSecret, webhookTestSecret[6:], "v1,"} {
				assert.NotContains(t, msg, secret)
			}
			kind, _ := classifyFailure(err)
			assert.Equal(t, failRetryable, kind)
		})
	}
}

func TestWebhook_KeepAlive(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	w := newTestWebhook(t, srv.URL, func(c *WebhookConfig) { c.MaxInFlight = 8 })
	for round := range 20 {
		errs := make(chan error, 8)
		for i := range 8 {
			go func() { errs <- w.Deliver(context.Background(), newConformanceEvent(t, int64(i), int64(round*8+i+1))) }()
		}
		for range 8 {
			require.NoError(t, <-errs)
		}
	}
	assert.LessOrEqual(t, conns.Load(), int64(16), "connections are reused")
}

func TestNewWebhook_Invalid(t *testing.T) {
	tests := []struct {
		name string
		cfg  WebhookConfig
		want string
	}{
		{"no name", WebhookConfig{URL: "http://x", Secrets: []string{webhookTestSecret}}, "no name"},
		{"relative url", WebhookConfig{Name: "h", URL: "/incs", Secrets: []string{webhookTestSecret}}, "url"},
		{"ftp url", WebhookConfig{Name: "h", URL: "ftp://x/incs", Secrets: []string{webhookTestSecret}}, "url"},
		{"no secret", WebhookConfig{Name: "h", URL: "http://x"}, "no secret"},
		{"bad second secret", WebhookConfig{Name: "h", URL: "http://x", Secrets: []string{webhookTestSecret, "plain-secret"}}, "secret 2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewWebhook(tc.cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "plain-secret")
		})
	}
}

// TestWebhook_Dispatcher runs the webhook behind a dispatcher against a
// receiver that fails now and then and once asks to slow down.
func TestWebhook_Dispatcher(t *testing.T) {
	forEachOutbox(t, func(t *testing.T, ob dispatchTestOutbox) {
		var calls atomic.Int64
		rc := newConformanceHTTPReceiver(t)
		rc.Check = func(r *http.Request, body []byte) error { return webhookVerify(webhookTestSecret, r, body) }
		flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch n := calls.Add(1); {
			case n == 3:
				w.Header().Set("Retry-After", "0")
				w.WriteHeader(http.StatusTooManyRequests)
			case n%7 == 0:
				w.WriteHeader(http.StatusInternalServerError)
			default:
				rc.Config.Handler.ServeHTTP(w, r)
			}
		}))
		defer flaky.Close()
		evs := ob.Append(t, dispatchTestEvents(200, 20, 1, rand.New(rand.NewPCG(5, 5)))...)
		w := newTestWebhook(t, flaky.URL, nil)
		_, stop := startDispatcher(t, DispatcherConfig{Sink: w, Outbox: ob, Retry: fastRetry})
		got := rc.Received(t, len(evs))
		require.NoError(t, stop())
		assert.Len(t, got, len(evs))
		c, err := ob.Cursor("hooks")
		require.NoError(t, err)
		assert.Equal(t, evs[len(evs)-1].Offset, c)
	})
}
