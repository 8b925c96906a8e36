package consume

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The Standard Webhooks specification's published test vector.
const (
	specSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specTS     = "1614265330"
	specBody   = `{"test": 2432232314}`
	specSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSigned_SpecVector(t *testing.T) {
	k, err := ParseSecret(specSecret)
	require.NoError(t, err)
	assert.True(t, Signed([][]byte{k}, specID, specTS, []byte(specBody), specSig))
	assert.True(t, Signed([][]byte{k}, specID, specTS, []byte(specBody), "v1,bm90IGl0 "+specSig), "any entry may match")
	assert.False(t, Signed([][]byte{k}, specID, specTS, []byte(specBody+" "), specSig))
	assert.False(t, Signed([][]byte{k}, specID, "1614265331", []byte(specBody), specSig))
}

const body = `{"specversion":"1.0","id":"log-532","source":"incsapp/tasks","type":"task.assigned","subject":"237","time":"2026-04-08T17:22:06+08:00","datacontenttype":"application/json","offset":2,"data":{"task_id":237,"task":{"id":237,"name":"4.8"},"log":{"id":532,"type":2},"status":0,"status_name":"not_started","previous_status":0,"previous_status_name":"not_started","assignee_username":"incs_1","comment":""}}`

func TestVerifier_Verify(t *testing.T) {
	k, _ := ParseSecret(specSecret)
	now := time.Unix(1_800_000_000, 0)
	v, err := NewVerifier([]string{specSecret})
	require.NoError(t, err)
	v.Now = func() time.Time { return now }
	req := func(id, ts, sig, b string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/incs", bytes.NewBufferString(b))
		r.Header.Set("webhook-id", id)
		r.Header.Set("webhook-timestamp", ts)
		r.Header.Set("webhook-signature", sig)
		return r
	}
	ts := "1800000000"
	good := sign(k, "log-532", ts, body)
	ev, err := v.Verify(req("log-532", ts, good, body))
	require.NoError(t, err)
	assert.Equal(t, "task.assigned", ev.Type)
	assert.Equal(t, uint64(2), ev.Offset)
	assert.Equal(t, "incs_1", ev.Data.AssigneeUsername)
	task, err := Task(ev)
	require.NoError(t, err)
	assert.Equal(t, "4.8", task.Name)

	tests := []struct {
		name string
		r    *http.Request
		want error
	}{
		{"tampered body", req("log-532", ts, good, body[:len(body)-2]+"1}}"), ErrSignature},
		{"wrong secret", req("log-532", ts, sign([]byte("other"), "log-532", ts, body), body), ErrSignature},
		{"old timestamp (replayed)", req("log-532", "1799999000", sign(k, "log-532", "1799999000", body), body), ErrTimestamp},
		{"future timestamp", req("log-532", "1800001000", sign(k, "log-532", "1800001000", body), body), ErrTimestamp},
		{"missing signature", req("log-532", ts, "", body), ErrMissingHeaders},
		{"id mismatch", req("log-999", ts, sign(k, "log-999", ts, body), body), ErrBody},
		{"not an event", req("log-532", ts, sign(k, "log-532", ts, `{"a":1}`), `{"a":1}`), ErrBody},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Verify(tt.r)
			assert.True(t, errors.Is(err, tt.want), "got %v", err)
		})
	}
}

func TestVerifier_Rotation(t *testing.T) {
	newK, oldK := []byte("new-key-0123456789"), []byte("old-key-0123456789")
	v, err := NewVerifier([]string{"whsec_" + b64(newK), "whsec_" + b64(oldK)})
	require.NoError(t, err)
	v.Now = func() time.Time { return time.Unix(1_800_000_000, 0) }
	h := http.Header{}
	h.Set("webhook-id", "log-532")
	h.Set("webhook-timestamp", "1800000000")
	h.Set("webhook-signature", sign(oldK, "log-532", "1800000000", body))
	_, err = v.VerifyBody(h, []byte(body))
	assert.NoError(t, err, "old secret still accepted while rotating")
}

func TestNewVerifier_BadSecret(t *testing.T) {
	_, err := NewVerifier([]string{"hunter2"})
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "hunter2")
}

func TestDedupe(t *testing.T) {
	d := &Dedupe{Size: 2}
	assert.True(t, d.Add("log-1"))
	assert.False(t, d.Add("log-1"))
	assert.True(t, d.Add("log-2"))
	assert.True(t, d.Add("log-3")) // evicts log-1
	assert.True(t, d.Add("log-1"))
	assert.False(t, d.Add("log-3"))
}

// binaryData is the data member of body: what a binary-mode delivery of
// that event carries as its body.
const binaryData = `{"task_id":237,"task":{"id":237,"name":"4.8"},"log":{"id":532,"type":2},"status":0,"status_name":"not_started","previous_status":0,"previous_status_name":"not_started","assignee_username":"incs_1","comment":""}`

// binaryHeader returns the headers of a binary-mode delivery of body's
// event, with mod applied.
func binaryHeader(mod func(h http.Header)) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Ce-Specversion", "1.0")
	h.Set("Ce-Id", "log-532")
	h.Set("Ce-Source", "incsapp/tasks")
	h.Set("Ce-Type", "task.assigned")
	h.Set("Ce-Subject", "237")
	h.Set("Ce-Time", "2026-04-08T17:22:06+08:00")
	h.Set("Ce-Offset", "2")
	if mod != nil {
		mod(h)
	}
	return h
}

func TestDecodeHTTP_Binary(t *testing.T) {
	require.Contains(t, body, `"data":`+binaryData+`}`)
	want, err := Decode([]byte(body))
	require.NoError(t, err)

	ev, err := DecodeHTTP(binaryHeader(nil), []byte(binaryData))
	require.NoError(t, err)
	assert.Equal(t, want, ev, "the same event as the json delivery")
	assert.Equal(t, body, string(ev.Body), "Body rebuilt byte for byte")

	ev, err = DecodeHTTP(binaryHeader(func(h http.Header) { h.Set("Ce-Offset", "18446744073709551615") }), []byte(binaryData))
	require.NoError(t, err)
	assert.Equal(t, uint64(1<<64-1), ev.Offset, "offsets beyond 32 bits")

	ev, err = DecodeHTTP(binaryHeader(func(h http.Header) { h.Set("Ce-Subject", "t%C3%A2che%207") }), []byte(binaryData))
	require.NoError(t, err)
	assert.Equal(t, "tâche 7", ev.Subject, "percent-decoded")

	// structured mode wins over stray ce-* headers; no ce-* is the json format
	ev, err = DecodeHTTP(binaryHeader(func(h http.Header) { h.Set("Content-Type", "application/cloudevents+json; charset=utf-8") }), []byte(body))
	require.NoError(t, err)
	assert.Equal(t, want, ev)
	ev, err = DecodeHTTP(http.Header{"Content-Type": {"application/json"}}, []byte(body))
	require.NoError(t, err)
	assert.Equal(t, want, ev)

	for _, tc := range []struct {
		name string
		mod  func(h http.Header)
		data string
		msg  string
	}{
		{"bad time", func(h http.Header) { h.Set("Ce-Time", "yesterday") }, binaryData, `ce-time "yesterday"`},
		{"bad offset", func(h http.Header) { h.Set("Ce-Offset", "-1") }, binaryData, `ce-offset "-1"`},
		{"no offset", func(h http.Header) { h.Del("Ce-Offset") }, binaryData, `ce-offset ""`},
		{"no type", func(h http.Header) { h.Del("Ce-Type") }, binaryData, "not a CloudEvents 1.0 incs-relay event"},
		{"other spec version", func(h http.Header) { h.Set("Ce-Specversion", "0.3") }, binaryData, "not a CloudEvents 1.0 incs-relay event"},
		{"bad percent-encoding", func(h http.Header) { h.Set("Ce-Subject", "%zz") }, binaryData, "ce-subject is not percent-encoded correctly"},
		{"bad content type", func(h http.Header) { h.Set("Content-Type", "") }, binaryData, "Content-Type"},
		{"data not JSON", nil, `{"task_id":`, "data"},
		{"the whole event as data", nil, "[1]", "data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeHTTP(binaryHeader(tc.mod), []byte(tc.data))
			require.ErrorIs(t, err, ErrBody)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}

// TestVerifier_Binary: a signed binary-mode delivery verifies over the
// data it carries; the ce-id must be the signed webhook-id.
func TestVerifier_Binary(t *testing.T) {
	k, _ := ParseSecret(specSecret)
	v, err := NewVerifier([]string{specSecret})
	require.NoError(t, err)
	v.Now = func() time.Time { return time.Unix(1_800_000_000, 0) }
	signed := func(id string, mod func(http.Header)) http.Header {
		h := binaryHeader(mod)
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", "1800000000")
		h.Set("webhook-signature", sign(k, id, "1800000000", binaryData))
		return h
	}
	ev, err := v.VerifyBody(signed("log-532", nil), []byte(binaryData))
	require.NoError(t, err)
	assert.Equal(t, uint64(2), ev.Offset)
	assert.Equal(t, body, string(ev.Body))

	_, err = v.VerifyBody(signed("log-532", nil), []byte(binaryData[:len(binaryData)-2]+` }`))
	assert.ErrorIs(t, err, ErrSignature, "the data is signed")
	_, err = v.VerifyBody(signed("log-532", func(h http.Header) { h.Set("Ce-Id", "log-999") }), []byte(binaryData))
	assert.ErrorIs(t, err, ErrBody, "ce-id differs from the signed webhook-id")
}
func TestDecode_Derived(t *testing.T) {
	body := []byte(`{"specversion":"1.0","id":"rule-stalled-237-532-0","source":"incsapp/tasks","type":"task.stalled","subject":"237","time":"2026-04-08T21:22:06+08:00","datacontenttype":"application/json","offset":9,"data":{"task_id":237,"task":{"id":237},"status":1,"status_name":"in_progress","assignee_username":"incs_1","rule":"stalled","since":"last_log","anchor_log_id":532,"anchor_at":"2026-04-08T17:22:06+08:00","due_at":"2026-04-08T21:22:06+08:00","fired_at":"2026-04-08T21:22:10+08:00","step":0}}`)
	ev, err := Decode(body)
	if err != nil {
		t.Fatal(err)
	}
	d := Derived(ev)
	if d == nil || d.Rule != "stalled" || d.AnchorLogID != 532 || !IsDerived(ev.Type) {
		t.Fatalf("derived data: %+v", d)
	}
	if _, err := Log(ev); !errors.Is(err, ErrBody) {
		t.Fatalf("Log of a derived event: %v", err)
	}
	// A rule id on a log type, or a derived type without rule data, is not an event.
	for _, bad := range []string{
		strings.Replace(string(body), `"type":"task.stalled"`, `"type":"task.assigned"`, 1),
		`{"specversion":"1.0","id":"rule-x-1-2-0","type":"task.x","data":{"task_id":1}}`,
	} {
		if _, err := Decode([]byte(bad)); !errors.Is(err, ErrBody) {
			t.Errorf("Decode(%s): %v", bad, err)
		}
	}
}
