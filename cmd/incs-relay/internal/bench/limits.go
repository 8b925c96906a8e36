package bench

// The limits the relay's delivery is compared with, measured in the same
// run once the relay stopped: a plain client in a process of its own
// (this binary again, INCS_BENCH_LIMIT set, LimitMain) doing the least a
// sink must do against the same NATS server(s) or webhook receiver, with
// as many messages, bodies of the relay's average size and the sink's
// default in-flight cap.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/incs-relay/incs-relay/sink"
)

// The environment of a limit process: LimitEnv names the limit
// (jetstream or webhook); the others its settings.
const (
	LimitEnv         = "INCS_BENCH_LIMIT"
	limitURLEnv      = "INCS_BENCH_LIMIT_URL"      // NATS URLs, or the webhook URL
	limitCountEnv    = "INCS_BENCH_LIMIT_COUNT"    // messages or requests
	limitSizeEnv     = "INCS_BENCH_LIMIT_SIZE"     // body bytes
	limitInFlightEnv = "INCS_BENCH_LIMIT_INFLIGHT" // in flight at most
	limitReplicasEnv = "INCS_BENCH_LIMIT_REPLICAS" // the LIMIT stream's replicas
	limitSecretEnv   = "INCS_BENCH_LIMIT_SECRET"   // the webhook secret
	limitTasksEnv    = "INCS_BENCH_LIMIT_TASKS"    // tasks the subjects spread over
)

// limitResult is the line a limit process prints last: the count done
// and the nanoseconds it took.
const limitResult = "INCS_BENCH_LIMIT_RESULT"

// limitSettings are one limit process's settings.
type limitSettings struct {
	Kind     string // jetstream or webhook
	URL      string
	Count    int
	Size     int
	InFlight int
	Replicas int
	Secret   string
	Tasks    int
}

// env returns s as the environment variables of a limit process.
func (s limitSettings) env() []string {
	return []string{
		LimitEnv + "=" + s.Kind, limitURLEnv + "=" + s.URL,
		limitCountEnv + "=" + strconv.Itoa(s.Count), limitSizeEnv + "=" + strconv.Itoa(s.Size),
		limitInFlightEnv + "=" + strconv.Itoa(s.InFlight), limitReplicasEnv + "=" + strconv.Itoa(s.Replicas),
		limitSecretEnv + "=" + s.Secret, limitTasksEnv + "=" + strconv.Itoa(s.Tasks),
	}
}

// LimitMain is a limit process's main (the binary calls it when
// INCS_BENCH_LIMIT is set): it runs the limit the environment names,
// prints its result line to stdout and returns the exit code.
func LimitMain() int {
	num := func(name string) int { n, _ := strconv.Atoi(os.Getenv(name)); return n }
	s := limitSettings{
		Kind: os.Getenv(LimitEnv), URL: os.Getenv(limitURLEnv), Count: num(limitCountEnv), Size: num(limitSizeEnv),
		InFlight: num(limitInFlightEnv), Replicas: num(limitReplicasEnv), Secret: os.Getenv(limitSecretEnv), Tasks: num(limitTasksEnv),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var d time.Duration
	var err error
	switch {
	case s.Count < 1 || s.Size < 1 || s.InFlight < 1:
		err = fmt.Errorf("count, size and in-flight must be at least 1: %+v", s)
	case s.Kind == "jetstream":
		d, err = publishLimit(ctx, s)
	case s.Kind == "webhook":
		d, err = webhookLimit(ctx, s)
	default:
		err = fmt.Errorf("unknown limit %q (want jetstream or webhook)", s.Kind)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench limit:", err)
		return 1
	}
	fmt.Printf("%s %d %d\n", limitResult, s.Count, d.Nanoseconds())
	return 0
}

// limitBody returns a CloudEvent of the relay's shape, id id, padded to
// size bytes when it is shorter: what a receiver that verifies and decodes
// it (the bench's, 1 in 100) accepts as a relay's event.
func limitBody(id string, size int) []byte {
	const head, mid, tail = `{"specversion":"1.0","id":"`, `","source":"incs-relay-bench","type":"task.logged","datacontenttype":"application/json","data":{"note":"`, `"}}`
	pad := max(size-len(head)-len(id)-len(mid)-len(tail), 0)
	b := make([]byte, 0, len(head)+len(id)+len(mid)+pad+len(tail))
	b = append(append(append(b, head...), id...), mid...)
	for range pad {
		b = append(b, 'x')
	}
	return append(b, tail...)
}

// publishLimit creates the stream LIMIT as the relay's sink stream is
// made (file storage, the same replicas, subjects limit.>) and publishes
// s.Count messages of s.Size bytes with PublishMsgAsync, each with its
// own Nats-Msg-Id, at most s.InFlight unacknowledged; it returns how long
// until the last ack.
func publishLimit(ctx context.Context, s limitSettings) (time.Duration, error) {
	nc, err := nats.Connect(s.URL)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(s.InFlight))
	if err != nil {
		return 0, err
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "LIMIT", Subjects: []string{"limit.>"}, Replicas: max(s.Replicas, 1), Storage: jetstream.FileStorage,
	}); err != nil {
		return 0, fmt.Errorf("create stream LIMIT: %w", err)
	}
	tasks := max(s.Tasks, 1)
	futures := make([]jetstream.PubAckFuture, 0, s.Count)
	start := time.Now()
	for i := range s.Count {
		id := "log-" + strconv.Itoa(i+1)
		msg := &nats.Msg{
			Subject: "limit.tasks." + strconv.Itoa(i%tasks+1) + ".task.logged",
			Data:    limitBody(id, s.Size),
			Header: nats.Header{
				jetstream.MsgIDHeader: []string{id},
				"Content-Type":        []string{"application/cloudevents+json"},
			},
		}
		f, err := js.PublishMsgAsync(msg)
		if err != nil {
			return 0, fmt.Errorf("publish %d: %w", i+1, err)
		}
		futures = append(futures, f)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, fmt.Errorf("%d acks outstanding when the time ran out", js.PublishAsyncPending())
	}
	d := time.Since(start)
	failed := 0
	var first error
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			failed++
			first = cmp.Or(first, err)
		}
	}
	if failed > 0 {
		return 0, fmt.Errorf("%d of %d publishes failed, the first: %w", failed, s.Count, first)
	}
	return d, nil
}

// webhookLimit POSTs s.Count Standard Webhooks of s.Size bytes to s.URL,
// signed with s.Secret as the relay signs them, from s.InFlight workers on
// one keep-alive client; it returns how long until the last answer.
func webhookLimit(ctx context.Context, s limitSettings) (time.Duration, error) {
	key, err := sink.ParseWebhookSecret(s.Secret)
	if err != nil {
		return 0, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = s.InFlight
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var next, failed atomic.Int64
	var firstMu sync.Mutex
	var first error
	fail := func(err error) {
		failed.Add(1)
		firstMu.Lock()
		first = cmp.Or(first, err)
		firstMu.Unlock()
	}
	var wg sync.WaitGroup
	start := time.Now()
	for range s.InFlight {
		wg.Go(func() {
			mac := hmac.New(sha256.New, key)
			var sig []byte
			for {
				i := next.Add(1)
				if i > int64(s.Count) || ctx.Err() != nil {
					return
				}
				id, ts := "log-"+strconv.FormatInt(i, 10), strconv.FormatInt(time.Now().Unix(), 10)
				body := limitBody(id, s.Size)
				mac.Reset()
				mac.Write([]byte(id + "." + ts + "."))
				mac.Write(body)
				sig = base64.StdEncoding.AppendEncode(append(sig[:0], "v1,"...), mac.Sum(nil))
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(body))
				if err != nil {
					fail(err)
					return
				}
				req.Header.Set("Content-Type", "application/cloudevents+json")
				req.Header.Set("webhook-id", id)
				req.Header.Set("webhook-timestamp", ts)
				req.Header.Set("webhook-signature", string(sig))
				resp, err := client.Do(req)
				if err != nil {
					fail(err)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					fail(fmt.Errorf("status %d", resp.StatusCode))
				}
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("%d of %d requests sent when the time ran out", next.Load(), s.Count)
	}
	if n := failed.Load(); n > 0 {
		return 0, fmt.Errorf("%d of %d requests failed, the first: %w", n, s.Count, first)
	}
	return d, nil
}

// runLimit runs the limit s in a process of its own (exe with s's
// environment) and returns its rate in messages per second and the
// process's CPU time (user + system, start-up included) per message.
func runLimit(ctx context.Context, exe string, s limitSettings, stderr io.Writer) (rate float64, cpu time.Duration, err error) {
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), s.env()...)
	cmd.Stderr = stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, 0, fmt.Errorf("bench: %s limit: %v", s.Kind, err)
	}
	rate, err = parseLimitResult(out)
	if ps := cmd.ProcessState; ps != nil && s.Count > 0 {
		cpu = (ps.UserTime() + ps.SystemTime()) / time.Duration(s.Count)
	}
	return rate, cpu, err
}

// parseLimitResult reads a limit process's result line out of its stdout.
func parseLimitResult(out []byte) (float64, error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != limitResult {
			continue
		}
		n, err1 := strconv.ParseFloat(f[1], 64)
		ns, err2 := strconv.ParseFloat(f[2], 64)
		if err := errors.Join(err1, err2); err != nil || ns <= 0 {
			return 0, fmt.Errorf("bench: bad limit result %q", sc.Text())
		}
		return n / (ns / 1e9), nil
	}
	return 0, fmt.Errorf("bench: no limit result in %q", strings.TrimSpace(string(out)))
}

// limitRun is what measureLimits needs of a finished benchmark.
type limitRun struct {
	NATSURL, HookURL, Secret string
	Nodes                    int // the JetStream sink stream's replicas
	Events, Tasks            int
	InFlight                 int      // the sinks' max_in_flight; 0: the defaults
	Sinks                    []string // the sinks that ran
	// HookRequests and HookBytes are what the webhook receiver got from
	// the relay (bodies only).
	HookRequests, HookBytes int64
}

// limits are the rates measured by measureLimits, by sink name.
type limits struct {
	rate     map[string]float64       // messages or requests per second
	cpu      map[string]time.Duration // the limit process's CPU per message
	inFlight map[string]int
	size     int // body bytes
	events   int
}

// measureLimits runs the limit of each sink that has one (jetstream,
// webhook) with the relay's average body size: the webhook receiver's
// average when a webhook sink ran, else the BENCH stream's.
func measureLimits(ctx context.Context, opts Options, r limitRun) (limits, error) {
	lim := limits{rate: map[string]float64{}, cpu: map[string]time.Duration{}, inFlight: map[string]int{}, events: r.Events}
	if r.HookRequests > 0 {
		lim.size = int(r.HookBytes / r.HookRequests)
	}
	for _, name := range r.Sinks {
		s := limitSettings{Kind: name, Count: r.Events, Tasks: r.Tasks, InFlight: r.InFlight}
		switch name {
		case "jetstream":
			s.URL, s.Replicas = r.NATSURL, r.Nodes
			if s.InFlight == 0 {
				s.InFlight = sink.DefaultNATSMaxInFlight
			}
		case "webhook":
			s.URL, s.Secret = r.HookURL, r.Secret
			if s.InFlight == 0 {
				s.InFlight = sink.DefaultMaxInFlight
			}
		default:
			continue
		}
		if lim.size == 0 {
			size, err := streamBodySize(ctx, r.NATSURL, "BENCH")
			if err != nil {
				return lim, fmt.Errorf("bench: the relay's body size: %w", err)
			}
			lim.size = size
		}
		s.Size = lim.size
		fmt.Fprintf(opts.Stderr, "bench: the %s limit: %d messages of %d bytes, %d in flight, from a process of its own...\n", name, s.Count, s.Size, s.InFlight)
		rate, cpu, err := runLimit(ctx, opts.Exe, s, opts.Stderr)
		if err != nil {
			return lim, err
		}
		lim.rate[name], lim.cpu[name], lim.inFlight[name] = rate, cpu, s.InFlight
	}
	return lim, nil
}

// streamBodySize returns the average body size of up to 200 messages
// spread over stream.
func streamBodySize(ctx context.Context, url, stream string) (int, error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	if info.State.Msgs == 0 {
		return 0, fmt.Errorf("stream %s is empty", stream)
	}
	step := max((last-first+1)/200, 1)
	var sum, n int
	for seq := first; seq <= last; seq += step {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue // a gap
		}
		sum += len(m.Data)
		n++
	}
	if n == 0 {
		return 0, fmt.Errorf("stream %s: no message read", stream)
	}
	return sum / n, nil
}

// ratio returns the table's column comparing sink's rate with its limit,
// or "" when it has none.
func (l limits) ratio(sink string, rate float64) string {
	if lr := l.rate[sink]; lr > 0 {
		return fmt.Sprintf("\t%.2f of the limit", rate/lr)
	}
	return ""
}

// print writes the limits' lines of the table.
func (l limits) print(w io.Writer) {
	what := map[string]string{
		"jetstream": "JetStream PublishMsgAsync, stream LIMIT made as the sink's, a Nats-Msg-Id each",
		"webhook":   "signed POSTs to the same receiver on keep-alive connections",
	}
	for _, name := range []string{"jetstream", "webhook"} {
		if r, ok := l.rate[name]; ok {
			fmt.Fprintf(w, "limit of %s (a client of its own)\t%s\t%.0f events/s\t%s: %d bodies of %d bytes, %d in flight; its CPU %.1f µs per message\n",
				name, time.Duration(float64(l.events)/r*float64(time.Second)).Round(time.Millisecond), r, what[name], l.events, l.size, l.inFlight[name], float64(l.cpu[name].Nanoseconds())/1e3)
		}
	}
}
