package consume_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/types"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/store"
)

// Example_cloudEventsSDK is the README's receiver built on the CloudEvents
// Go SDK, for webhook sinks with format cloudevents or binary: the
// Standard Webhooks library verifies the signature over the raw body, then
// the SDK's HTTP handler decodes the request into a CloudEvent. The relay's
// webhook sink delivers three stored events in each of the two formats.
func Example_cloudEventsSDK() {
	ctx := context.Background()
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

	// The receiver, as in the README.
	wh, err := standardwebhooks.NewWebhook(secret) // os.Getenv("WEBHOOK_SECRET")
	check(err)
	p, err := cloudevents.NewHTTP()
	check(err)
	ce, err := cloudevents.NewHTTPReceiveHandler(ctx, p, func(ev cloudevents.Event) cloudevents.Result {
		offset, _ := types.ToInteger(ev.Extensions()["offset"]) // fits below 2^31
		var data struct {
			TaskID     int64  `json:"task_id"`
			StatusName string `json:"status_name"`
		}
		if err := ev.DataAs(&data); err != nil {
			return cloudevents.NewHTTPResult(http.StatusBadRequest, "data: %v", err)
		}
		fmt.Printf("%s %s task %d offset %d: %s\n", ev.ID(), ev.Type(), data.TaskID, offset, data.StatusName)
		return nil // 200: acknowledged
	})
	check(err)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<20))
		if err != nil || wh.Verify(body, r.Header) != nil { // the signature covers the body
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		ce.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(handler)
	defer srv.Close()

	// The relay's side: stored events, POSTed by its webhook sink.
	dir, err := os.MkdirTemp("", "incs-consume-example")
	check(err)
	defer os.RemoveAll(dir)
	db, err := store.Open(filepath.Join(dir, "relay.db"), store.Options{})
	check(err)
	defer db.Close()
	var task diff.Task
	check(json.Unmarshal(taskJSON(237, 3), &task))
	_, err = db.Ingest(ctx, []diff.Task{task}, time.FixedZone("CST", 8*3600), true)
	check(err)
	evs, err := db.Read(ctx, 1, 100)
	check(err)
	for _, format := range []string{sink.WebhookCloudEvents, sink.WebhookBinary} {
		fmt.Println("format:", format)
		w, err := sink.NewWebhook(sink.WebhookConfig{Name: "hooks", URL: srv.URL, Secrets: []string{secret}, Format: format})
		check(err)
		for i := range evs {
			check(w.Deliver(ctx, &evs[i]))
		}
		check(w.Close(ctx))
	}
	// Output:
	// format: cloudevents
	// log-101 task.created task 237 offset 1: not_started
	// log-102 task.assigned task 237 offset 2: not_started
	// log-103 task.status_changed task 237 offset 3: in_progress
	// format: binary
	// log-101 task.created task 237 offset 1: not_started
	// log-102 task.assigned task 237 offset 2: not_started
	// log-103 task.status_changed task 237 offset 3: in_progress
}
