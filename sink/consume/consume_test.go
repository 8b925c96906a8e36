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
