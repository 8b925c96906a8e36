package consume_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/sink/consume"
	"github.com/incs-relay/incs-relay/store"
)

// Example_natsDurableConsumer is a downstream service reading the relay's
// JetStream stream with a durable consumer. The service handles events in
// stream order and acknowledges each one explicitly. It stops (here: it
// handled log-104 but crashed before acknowledging it) while the relay
// goes on publishing; when it comes back, the durable consumer resumes
// after the last acknowledged message: log-104 is delivered again, and
// the service's record of handled ids (consume.Dedupe here, its own
// database in production) turns that redelivery into a no-op.
func Example_natsDurableConsumer() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "incs-consume-example")
	check(err)
	defer os.RemoveAll(dir)
	srv := startNATS(dir)
	defer srv.Shutdown()

	// The relay's side: events in its store, published by its JetStream
	// NATS sink, exactly as `incs-relay run` does.
	relay := openExampleRelay(ctx, dir, srv.ClientURL())
	defer relay.close()
	relay.publish(ctx, taskJSON(237, 4)) // log-101 … log-104

	// The service. The durable consumer lives in the server, so its
	// position survives the service's restarts; MaxAckPending 1 keeps
	// strict stream order across a redelivery.
	handled := &consume.Dedupe{} // the service's record of handled event ids
	consumerConfig := jetstream.ConsumerConfig{
		Durable:       "billing",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       time.Second, // an unacknowledged message comes back after this
		MaxAckPending: 1,
		FilterSubject: "incs.tasks.>",
	}
	handle := func(m jetstream.Msg, ackIt bool) {
		ev, err := consume.Decode(m.Data())
		check(err)
		if !handled.Add(ev.ID) {
			fmt.Printf("skip   %s: handled before its ack was lost\n", ev.ID)
			check(m.DoubleAck(ctx))
			return
		}
		fmt.Printf("handle %s offset %d %s\n", ev.ID, ev.Offset, ev.Type)
		if ackIt {
			check(m.DoubleAck(ctx)) // wait for the server to record the ack
		}
	}

	// First run: four events; the fourth is handled, then the service dies.
	run := func(n int, ackLast bool) {
		nc, err := nats.Connect(srv.ClientURL())
		check(err)
		defer nc.Close() // a crash: no ack for an unacknowledged message
		js, err := jetstream.New(nc)
		check(err)
		cons, err := js.CreateOrUpdateConsumer(ctx, "INCS", consumerConfig)
		check(err)
		for i := 0; i < n; i++ {
			m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
			check(err)
			handle(m, i < n-1 || ackLast)
		}
	}
	run(4, false)
	fmt.Println("-- service down; the relay publishes log-105")
	relay.publish(ctx, taskJSON(237, 5))

	// Second run: the consumer resumes at log-104, the first message
	// without an ack.
	fmt.Println("-- service restarted")
	run(2, true)

	// Output:
	// handle log-101 offset 1 task.created
	// handle log-102 offset 2 task.assigned
	// handle log-103 offset 3 task.status_changed
	// handle log-104 offset 4 task.commented
	// -- service down; the relay publishes log-105
	// -- service restarted
	// skip   log-104: handled before its ack was lost
	// handle log-105 offset 5 task.status_changed
}

// startNATS starts an in-process NATS server with JetStream on a random
// loopback port.
func startNATS(dir string) *server.Server {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: filepath.Join(dir, "jetstream")})
	check(err)
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		panic("nats server not ready")
	}
	return s
}

// exampleRelay is the relay's store and one sink, driven by hand.
type exampleRelay struct {
	db   *store.DB
	sink sink.Sink
	next uint64 // first offset not yet published
}

func openExampleRelay(ctx context.Context, dir, natsURL string) *exampleRelay {
	db, err := store.Open(filepath.Join(dir, "relay.db"), store.Options{})
	check(err)
	s, err := sink.NewNATS(ctx, sink.NATSConfig{
		Name: "bus", URL: natsURL, Subject: "incs.tasks.{task_id}.{event}", JetStream: true,
		Stream: &sink.StreamConfig{Name: "INCS", Subjects: []string{"incs.tasks.>"}},
	})
	check(err)
	return &exampleRelay{db: db, sink: s, next: 1}
}

// publish stores the task's new logs as events and publishes them, as the
// relay's poll and delivery loops do.
func (r *exampleRelay) publish(ctx context.Context, taskJSON []byte) {
	var t diff.Task
	check(json.Unmarshal(taskJSON, &t))
	_, err := r.db.Ingest(ctx, []diff.Task{t}, time.FixedZone("CST", 8*3600), true)
	check(err)
	evs, err := r.db.Read(ctx, r.next, 100)
	check(err)
	for i := range evs {
		check(r.sink.Deliver(ctx, &evs[i]))
		r.next = evs[i].Offset + 1
	}
}

func (r *exampleRelay) close() {
	_ = r.sink.Close(context.Background())
	_ = r.db.Close()
}

// taskJSON is task id as the API returns it with its first n logs: created,
// assigned, started, commented, completed.
func taskJSON(id int64, n int) []byte {
	logs := []map[string]any{
		{"id": 101, "type": 1, "status": 0, "pre_status": 0, "assignee_username": "", "comment": "", "created_at": "2026-04-08 09:00:00", "updated_at": "2026-04-08 09:00:00"},
		{"id": 102, "type": 2, "status": 0, "pre_status": 0, "assignee_username": "incs_1", "comment": "", "created_at": "2026-04-08 09:05:00", "updated_at": "2026-04-08 09:05:00"},
		{"id": 103, "type": 3, "status": 1, "pre_status": 0, "assignee_username": "incs_1", "comment": "", "created_at": "2026-04-08 10:00:00", "updated_at": "2026-04-08 10:00:00"},
		{"id": 104, "type": 4, "status": 1, "pre_status": 1, "assignee_username": "incs_1", "comment": "parts ordered", "created_at": "2026-04-08 11:00:00", "updated_at": "2026-04-08 11:00:00"},
		{"id": 105, "type": 3, "status": 2, "pre_status": 1, "assignee_username": "incs_1", "comment": "", "created_at": "2026-04-08 17:22:06", "updated_at": "2026-04-08 17:22:06"},
	}
	status := []int{0, 0, 1, 1, 2}[n-1]
	b, err := json.Marshal(map[string]any{
		"id": id, "creation_id": 9, "auth_id": 1, "name": "replace pump", "description": "", "type": 1,
		"user_name": "Li Lei", "user_phone": "13800000000", "assignee_username": "incs_1", "status": status,
		"created_at": "2026-04-08 09:00:00", "updated_at": logs[n-1]["updated_at"], "logs": logs[:n],
	})
	check(err)
	return b
}

func check(err error) {
	if err != nil {
		panic(err)
	}
}
