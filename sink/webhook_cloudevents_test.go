package sink

// Tests that the webhook sink's requests read as CloudEvents with the
// CloudEvents SDK and verify with the Standard Webhooks library, and of
// WebhookMessage's body formats.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/cloudevents/sdk-go/v2/types"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/diff/difftest"
	"github.com/incs-relay/incs-relay/store"
)

// This file reads the relay's deliveries with the official CloudEvents Go
// SDK and verifies their signatures with the Standard Webhooks
// specification's own Go library, as receivers built on them would.

// storedEvents ingests n logs of task 237 into a real bbolt store and
// returns the events as the store reads them back: offsets set, Body the
// stored bytes.
func storedEvents(t *testing.T, n int) []diff.Event {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(filepath.Join(t.TempDir(), "relay.db"), store.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, db.Close()) })
	var tasks []diff.Task
	require.NoError(t, json.Unmarshal(difftest.TasksJSON(237, 1, n, 531), &tasks))
	_, err = db.Ingest(ctx, tasks, time.FixedZone("CST", 8*3600), true)
	require.NoError(t, err)
	evs, err := db.Read(ctx, 1, 100)
	require.NoError(t, err)
	require.Len(t, evs, n)
	return evs
}

// storedData returns the "data" member of a stored event's body, byte for
// byte.
func storedData(t *testing.T, ev *diff.Event) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(ev.Body, &m))
	require.Contains(t, m, "data")
	return m["data"]
}

// assertSameCloudEvent checks that the SDK's event got is the stored event
// want: id, source, type, subject, time, the offset extension and data.
func assertSameCloudEvent(t *testing.T, want *diff.Event, got cloudevents.Event) {
	t.Helper()
	assert.Equal(t, "1.0", got.SpecVersion())
	assert.Equal(t, want.ID, got.ID())
	assert.Equal(t, want.Source, got.Source())
	assert.Equal(t, want.Type, got.Type())
	assert.Equal(t, want.Subject, got.Subject())
	assert.True(t, want.Time.Equal(got.Time()), "time: want %s, got %s", want.Time, got.Time())
	assert.Equal(t, "application/json", got.DataContentType())
	off, err := types.ToInteger(got.Extensions()["offset"])
	require.NoError(t, err, "offset extension")
	assert.Equal(t, int64(want.Offset), int64(off))
	assert.Equal(t, string(storedData(t, want)), string(got.Data()), "data, byte for byte")
}

// ceDelivery is one request a ceWebhookReceiver got.
type ceDelivery struct {
	header http.Header
	body   []byte
	sigErr error // the Standard Webhooks library's verdict
	event  *cloudevents.Event
}

// ceWebhookReceiver is a receiver built as the README's CloudEvents
// example: the Standard Webhooks library verifies the signature over the
// raw body, then the CloudEvents SDK's HTTP receive handler decodes the
// request (structured or binary mode) into an event.
type ceWebhookReceiver struct {
	*httptest.Server
	mu  sync.Mutex
	got []ceDelivery
}

func newCEWebhookReceiver(t *testing.T, secret string) *ceWebhookReceiver {
	t.Helper()
	rc := &ceWebhookReceiver{}
	wh, err := standardwebhooks.NewWebhook(secret)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	p, err := cloudevents.NewHTTP()
	require.NoError(t, err)
	var current *ceDelivery // set for the request being handled; deliveries are sequential
	ce, err := cloudevents.NewHTTPReceiveHandler(ctx, p, func(ev cloudevents.Event) cloudevents.Result {
		current.event = &ev
		return nil
	})
	require.NoError(t, err)
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rc.mu.Lock()
		defer rc.mu.Unlock()
		current = &ceDelivery{header: r.Header.Clone(), body: body, sigErr: wh.Verify(body, r.Header)}
		rc.got = append(rc.got, *current)
		if current.sigErr != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		ce.ServeHTTP(w, r)
		rc.got[len(rc.got)-1] = *current
	}))
	t.Cleanup(func() {
		rc.Close()
		cancel()
	})
	return rc
}

func (rc *ceWebhookReceiver) deliveries() []ceDelivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]ceDelivery(nil), rc.got...)
}

// TestWebhook_CloudEventsSDK delivers stored events with the relay's
// webhook sink in each format to a receiver built on the CloudEvents SDK's
// HTTP binding, behind the Standard Webhooks library's verification:
// cloudevents (structured mode) and binary deliveries are acknowledged and
// decode to the stored event; json deliveries are what the SDK's binding
// cannot read (it answers 415 Unsupported Media Type, so choose cloudevents or binary for it), yet
// their body is a CloudEvent the SDK's JSON format decodes. Every format
// verifies with the specification's library, with either secret while
// they rotate; webhook-id is the event id.
func TestWebhook_CloudEventsSDK(t *testing.T) {
	stored := storedEvents(t, 5)
	for _, format := range WebhookFormats {
		t.Run(format, func(t *testing.T) {
			for _, secret := range []string{webhookTestSecret, webhookTestSecretOld} {
				rc := newCEWebhookReceiver(t, secret)
				w := newTestWebhook(t, rc.URL, func(c *WebhookConfig) {
					c.Format = format
					c.Secrets = []string{webhookTestSecret, webhookTestSecretOld}
				})
				ctx := context.Background()
				for i := range stored {
					err := w.Deliver(ctx, &stored[i])
					if format == WebhookJSON {
						require.ErrorIs(t, err, ErrPermanent, "the SDK's HTTP binding rejects a json delivery")
						assert.Contains(t, err.Error(), "HTTP 415")
					} else {
						require.NoError(t, err)
					}
				}
				got := rc.deliveries()
				require.Len(t, got, len(stored))
				for i, d := range got {
					want := &stored[i]
					require.NoError(t, d.sigErr, "the Standard Webhooks library verifies %s", want.ID)
					assert.Equal(t, want.ID, d.header.Get("webhook-id"))
					switch format {
					case WebhookJSON:
						assert.Nil(t, d.event)
						assert.Equal(t, "application/json", d.header.Get("Content-Type"))
						assert.Equal(t, string(want.Body), string(d.body))
						_, err := binding.ToEvent(ctx, cehttp.NewMessage(d.header, io.NopCloser(bytes.NewReader(d.body))))
						assert.ErrorIs(t, err, binding.ErrUnknownEncoding)
						ev := cloudevents.NewEvent()
						require.NoError(t, json.Unmarshal(d.body, &ev), "the SDK's JSON event format reads the body")
						assertSameCloudEvent(t, want, ev)
					case WebhookCloudEvents:
						require.NotNil(t, d.event, "the SDK decoded the delivery")
						assert.Equal(t, "application/cloudevents+json", d.header.Get("Content-Type"))
						assert.Equal(t, string(want.Body), string(d.body), "the stored body")
						assertSameCloudEvent(t, want, *d.event)
					case WebhookBinary:
						require.NotNil(t, d.event, "the SDK decoded the delivery")
						assert.Equal(t, "application/json", d.header.Get("Content-Type"))
						assert.Equal(t, string(storedData(t, want)), string(d.body), "the stored data bytes, not re-encoded")
						assertSameCloudEvent(t, want, *d.event)
					}
				}
			}
		})
	}
}

// TestWebhook_SignatureByLibrary checks each format's signature with the
// Standard Webhooks library the other way round: the library signs the
// body received with webhook-id and webhook-timestamp, and its signature is
// the one the relay sent. A changed body fails verification.
func TestWebhook_SignatureByLibrary(t *testing.T) {
	ev := &storedEvents(t, 2)[1]
	wh, err := standardwebhooks.NewWebhook(webhookTestSecret)
	require.NoError(t, err)
	for _, format := range WebhookFormats {
		t.Run(format, func(t *testing.T) {
			var (
				mu   sync.Mutex
				h    http.Header
				body []byte
			)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				h, body = r.Header.Clone(), b
				mu.Unlock()
				w.WriteHeader(http.StatusNoContent)
			}))
			defer srv.Close()
			w := newTestWebhook(t, srv.URL, func(c *WebhookConfig) { c.Format = format })
			require.NoError(t, w.Deliver(context.Background(), ev))
			mu.Lock()
			defer mu.Unlock()
			sec, err := strconv.ParseInt(h.Get("webhook-timestamp"), 10, 64)
			require.NoError(t, err)
			sig, err := wh.Sign(h.Get("webhook-id"), time.Unix(sec, 0), body)
			require.NoError(t, err)
			assert.Equal(t, sig, h.Get("webhook-signature"))
			require.NoError(t, wh.Verify(body, h))
			tampered := append(bytes.Clone(body[:len(body)-1]), ' ', '}')
			assert.ErrorIs(t, wh.Verify(tampered, h), standardwebhooks.ErrNoMatchingSignature)
		})
	}
}

// TestWebhook_LargeOffset pins what the README says of offsets above
// 2,147,483,647: the relay sends them as they are, but the CloudEvents SDK
// reads numeric extensions as 32-bit integers. In structured mode it
// refuses the whole event; in binary mode it keeps ce-offset as the string
// sent, which types.ToInteger refuses and strconv.ParseUint reads.
func TestWebhook_LargeOffset(t *testing.T) {
	ctx := context.Background()
	toEvent := func(format string, offset uint64) (*cloudevents.Event, http.Header, error) {
		ev := newConformanceEvent(t, 237, 531)
		ev.Offset = offset
		ev.Body = nil // encoded from the fields
		h, body, err := WebhookMessage(format, ev)
		require.NoError(t, err)
		got, err := binding.ToEvent(ctx, cehttp.NewMessage(h, io.NopCloser(bytes.NewReader(body))))
		return got, h, err
	}

	_, _, err := toEvent(WebhookCloudEvents, 1<<31)
	assert.ErrorContains(t, err, "out of range", "structured mode: the SDK refuses the event")
	got, _, err := toEvent(WebhookCloudEvents, 1<<31-1)
	require.NoError(t, err)
	off, err := types.ToInteger(got.Extensions()["offset"])
	require.NoError(t, err)
	assert.Equal(t, int32(1<<31-1), off)

	got, h, err := toEvent(WebhookBinary, 1<<31)
	require.NoError(t, err)
	assert.Equal(t, "2147483648", h.Get("ce-offset"))
	_, err = types.ToInteger(got.Extensions()["offset"])
	assert.ErrorContains(t, err, "out of range", "binary mode: not an SDK integer")
	s, ok := got.Extensions()["offset"].(string)
	require.True(t, ok)
	u, err := strconv.ParseUint(s, 10, 64)
	require.NoError(t, err)
	assert.Equal(t, uint64(1<<31), u)
}

// TestWebhookMessage covers the formats' headers and bodies, and the bad
// cases: an unknown format and an event body without data.
func TestWebhookMessage(t *testing.T) {
	ev := newConformanceEvent(t, 237, 532)
	for _, tc := range []struct {
		format, contentType string
		body                []byte
	}{
		{"", "application/json", ev.Body},
		{WebhookJSON, "application/json", ev.Body},
		{WebhookCloudEvents, "application/cloudevents+json", ev.Body},
		{WebhookBinary, "application/json", storedData(t, ev)},
	} {
		h, body, err := WebhookMessage(tc.format, ev)
		require.NoError(t, err, tc.format)
		assert.Equal(t, tc.contentType, h.Get("Content-Type"), tc.format)
		assert.Equal(t, string(tc.body), string(body), tc.format)
		if tc.format == WebhookBinary {
			assert.Equal(t, http.Header{
				"Content-Type":   {"application/json"},
				"Ce-Specversion": {"1.0"},
				"Ce-Id":          {ev.ID},
				"Ce-Source":      {diff.Source},
				"Ce-Type":        {ev.Type},
				"Ce-Subject":     {ev.Subject},
				"Ce-Time":        {ev.Time.Format(time.RFC3339Nano)},
				"Ce-Offset":      {"532"},
			}, h)
		} else {
			assert.Len(t, h, 1, "no ce-* headers in %s", tc.format)
		}
	}

	// The data goes out as the stored bytes, not re-encoded: members the
	// relay's Data type does not know and the spacing survive.
	raw := *ev
	rawData := `{"task_id": 237,  "future_field": [1, 2], "comment": "<b>\u00e9</b>"}`
	raw.Body = []byte(`{"specversion":"1.0","id":"log-532","data": ` + rawData + ` }`)
	_, body, err := WebhookMessage(WebhookBinary, &raw)
	require.NoError(t, err)
	assert.Equal(t, rawData, string(body))

	_, _, err = WebhookMessage("xml", ev)
	assert.ErrorContains(t, err, `unknown webhook format "xml"`)
	noData := *ev
	noData.Body = []byte(`{"specversion":"1.0","id":"log-1"}`)
	_, _, err = WebhookMessage(WebhookBinary, &noData)
	assert.ErrorContains(t, err, `no "data"`)
	_, err = NewWebhook(WebhookConfig{Name: "h", URL: "https://x.example", Secrets: []string{webhookTestSecret}, Format: "xml"})
	assert.ErrorContains(t, err, `webhook h: unknown format "xml" (want json, cloudevents, binary)`)

	odd := *ev
	odd.Subject = "tâche 7\"%"
	h, _, err := WebhookMessage(WebhookBinary, &odd)
	require.NoError(t, err)
	assert.Equal(t, "t%C3%A2che%207%22%25", h.Get("ce-subject"), "percent-encoded as the HTTP binding requires")
}
