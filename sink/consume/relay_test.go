package consume_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/sink/consume"
	"github.com/incs-relay/incs-relay/store"
)

// TestVerifier_RelayWebhook checks the package against the relay's real
// deliveries in each webhook format (json, cloudevents, binary): events
// ingested by the store and POSTed by the relay's webhook sink, signed with
// two secrets while they rotate, pass Verify with either secret, decode to
// the stored event (id, offset, type, time, subject, data; Body byte for
// byte, rebuilt in binary mode), and their task and log decode too. A
// redelivery is the same event and Dedupe drops it.
func TestVerifier_RelayWebhook(t *testing.T) {
	const (
		newSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
		oldSecret = "whsec_c2VjcmV0LWtleS1vZi10aGUtb2xkLWVuZHBvaW50"
	)
	ctx := context.Background()
	db, err := store.Open(filepath.Join(t.TempDir(), "relay.db"), store.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, db.Close()) })
	var task diff.Task
	require.NoError(t, task.UnmarshalJSON(taskJSON(237, 5)))
	_, err = db.Ingest(ctx, []diff.Task{task}, time.FixedZone("CST", 8*3600), true)
	require.NoError(t, err)
	stored, err := db.Read(ctx, 1, 100)
	require.NoError(t, err)
	require.Len(t, stored, 5)

	type testCase struct {
		name    string
		format  string
		secrets []string // the verifier's
	}
	var tests []testCase
	for _, format := range sink.WebhookFormats {
		tests = append(tests,
			testCase{name: format + "/new secret", format: format, secrets: []string{newSecret}},
			testCase{name: format + "/old secret", format: format, secrets: []string{oldSecret}},
			testCase{name: format + "/both", format: format, secrets: []string{oldSecret, newSecret}},
		)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := consume.NewVerifier(tt.secrets)
			require.NoError(t, err)
			var (
				mu   sync.Mutex
				got  []*consume.Event
				errs []error
			)
			dedupe := &consume.Dedupe{}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ev, err := v.Verify(r)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					http.Error(w, err.Error(), http.StatusUnauthorized)
					return
				}
				if dedupe.Add(ev.ID) {
					got = append(got, ev)
				}
				w.WriteHeader(http.StatusNoContent)
			}))
			defer srv.Close()
			w, err := sink.NewWebhook(sink.WebhookConfig{Name: "hooks", URL: srv.URL + "/incs", Secrets: []string{newSecret, oldSecret}, Format: tt.format})
			require.NoError(t, err)
			defer w.Close(ctx)
			for i := range stored {
				require.NoError(t, w.Deliver(ctx, &stored[i]))
			}
			require.NoError(t, w.Deliver(ctx, &stored[2]), "a redelivery")

			mu.Lock()
			defer mu.Unlock()
			require.Empty(t, errs)
			require.Len(t, got, len(stored), "the redelivery was deduped")
			for i, ev := range got {
				want := stored[i]
				assert.Equal(t, want.ID, ev.ID)
				assert.Equal(t, want.Offset, ev.Offset)
				assert.Equal(t, want.Type, ev.Type)
				assert.Equal(t, want.Subject, ev.Subject)
				assert.Equal(t, want.Source, ev.Source)
				assert.Equal(t, want.DataContentType, ev.DataContentType)
				assert.True(t, want.Time.Equal(ev.Time))
				assert.Equal(t, want.Data, ev.Data)
				assert.Equal(t, string(want.Body), string(ev.Body))
				tk, err := consume.Task(ev)
				require.NoError(t, err)
				assert.Equal(t, int64(237), tk.ID)
				assert.Empty(t, tk.Logs, "the task comes without its logs")
				lg, err := consume.Log(ev)
				require.NoError(t, err)
				assert.Equal(t, diff.EventID(lg.ID), ev.ID)
			}
		})
	}
}
