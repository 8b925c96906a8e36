package sink

// The conformance suite every sink's test runs with its own receiver (see
// runSinkConformance below), and the package's TestMain, which fails its
// tests if any leaves a goroutine behind.

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/incs-relay/incs-relay/diff"
)

// TestMain fails the package's tests if any leaves a goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// This file is the conformance suite every sink's test runs with its own
// real receiver (watermill's TestPubSub, litestream's
// RunWithReplicaClient). A sink's test calls
//
//	runSinkConformance(t, sinkConformance{
//		NewSink:  func(t *testing.T) (Sink, conformanceReceiver) { ... },
//		Features: conformanceFeatures{ServerError: true, ...},
//	})
//
// and then tests its specifics. HTTP sinks can build their receiver with
// newConformanceHTTPReceiver.

// conformanceMode is how a receiver answers the deliveries after SetMode.
type conformanceMode int

const (
	conformanceAccept      conformanceMode = iota // acknowledge
	conformanceServerError                        // fail retryably, e.g. HTTP 503
	conformanceClientError                        // reject for good, e.g. HTTP 400
	conformanceHang                               // never answer
	conformanceGone                               // ask to be paused: HTTP 410
)

// conformanceReceiver is the real receiving end of a sink under test.
type conformanceReceiver interface {
	// Received waits until at least n deliveries were accepted, failing
	// the test after 5s, and returns their payloads in arrival order.
	Received(t *testing.T, n int) [][]byte
	// SetMode sets how later deliveries are answered. The suite sets only
	// the modes the sink's conformanceFeatures enable.
	SetMode(mode conformanceMode)
}

// conformanceFeatures tunes the suite to what a sink can do.
type conformanceFeatures struct {
	// MatchPayload checks that a received payload is ev as the sink
	// renders it. Nil: the payload must be ev.Body byte for byte.
	MatchPayload func(t *testing.T, ev *diff.Event, payload []byte)
	// Receiver modes the sink's receiver supports besides accepting.
	ServerError, ClientError, Hang, Gone bool
	// AttemptTimeout is the per-attempt timeout NewSink configures; with
	// Hang, an attempt must fail within it plus a second. Default 5s.
	AttemptTimeout time.Duration
}

// sinkConformance is one sink's entry to the suite.
type sinkConformance struct {
	// NewSink returns a new sink delivering to a new real receiver; it
	// registers the receiver's cleanup. The suite closes the sink.
	NewSink  func(t *testing.T) (Sink, conformanceReceiver)
	Features conformanceFeatures
}

// newConformanceEvent returns event logID of task taskID as the store
// holds it: offset set and Body its JSON.
func newConformanceEvent(t testing.TB, taskID, logID int64) *diff.Event {
	ob := newMemOutbox()
	ev := ob.Append(t, dispatchTestEvent(taskID, logID))[0]
	ev.Offset = uint64(logID)
	return &ev
}

// runSinkConformance runs the suite against the sinks sc makes.
func runSinkConformance(t *testing.T, sc sinkConformance) {
	f := sc.Features
	if f.AttemptTimeout <= 0 {
		f.AttemptTimeout = 5 * time.Second
	}
	match := func(t *testing.T, ev *diff.Event, payload []byte) {
		t.Helper()
		if f.MatchPayload != nil {
			f.MatchPayload(t, ev, payload)
			return
		}
		assert.Equal(t, string(ev.Body), string(payload), "the payload is the event body exactly")
	}
	newSink := func(t *testing.T) (Sink, conformanceReceiver) {
		t.Helper()
		s, rc := sc.NewSink(t)
		require.NotNil(t, s)
		t.Cleanup(func() { assert.NoError(t, s.Close(context.Background())) })
		return s, rc
	}
	ctx := context.Background()

	t.Run("Deliver", func(t *testing.T) {
		s, rc := newSink(t)
		assert.NotEmpty(t, s.Name())
		evs := []*diff.Event{newConformanceEvent(t, 7, 101), newConformanceEvent(t, 8, 102), newConformanceEvent(t, 7, 103)}
		for _, ev := range evs {
			require.NoError(t, s.Deliver(ctx, ev))
		}
		got := rc.Received(t, len(evs))
		require.Len(t, got, len(evs))
		for i, ev := range evs {
			match(t, ev, got[i])
		}
	})

	t.Run("ConcurrentDeliver", func(t *testing.T) {
		s, rc := newSink(t)
		const n = 24
		errs := make(chan error, n)
		for i := range n {
			go func() { errs <- s.Deliver(ctx, newConformanceEvent(t, int64(i), int64(200+i))) }()
		}
		for range n {
			assert.NoError(t, <-errs)
		}
		assert.Len(t, rc.Received(t, n), n)
	})

	t.Run("CancelledContext", func(t *testing.T) {
		s, _ := newSink(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		begin := time.Now()
		err := s.Deliver(cctx, newConformanceEvent(t, 1, 300))
		require.Error(t, err)
		assert.Less(t, time.Since(begin), time.Second)
		kind, _ := classifyFailure(err)
		assert.Equal(t, failRetryable, kind, "a cancelled attempt is retryable: %v", err)
	})

	if f.Hang {
		t.Run("CancelDuringAttempt", func(t *testing.T) {
			s, rc := newSink(t)
			rc.SetMode(conformanceHang)
			cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			begin := time.Now()
			err := s.Deliver(cctx, newConformanceEvent(t, 1, 301))
			require.Error(t, err)
			assert.Less(t, time.Since(begin), time.Second+100*time.Millisecond)
			kind, _ := classifyFailure(err)
			assert.Equal(t, failRetryable, kind, "%v", err)
		})
		t.Run("Timeout", func(t *testing.T) {
			s, rc := newSink(t)
			rc.SetMode(conformanceHang)
			begin := time.Now()
			err := s.Deliver(ctx, newConformanceEvent(t, 1, 302))
			require.Error(t, err)
			assert.Less(t, time.Since(begin), f.AttemptTimeout+time.Second)
			kind, _ := classifyFailure(err)
			assert.Equal(t, failRetryable, kind, "a timeout is retryable: %v", err)
		})
	}

	failures := []struct {
		name    string
		enabled bool
		mode    conformanceMode
		want    failureKind
	}{
		{"ServerError", f.ServerError, conformanceServerError, failRetryable},
		{"ClientError", f.ClientError, conformanceClientError, failPermanent},
		{"Gone", f.Gone, conformanceGone, failPause},
	}
	for _, tc := range failures {
		if !tc.enabled {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			s, rc := newSink(t)
			rc.SetMode(tc.mode)
			err := s.Deliver(ctx, newConformanceEvent(t, 1, 400))
			require.Error(t, err)
			kind, _ := classifyFailure(err)
			assert.Equal(t, tc.want, kind, "%v", err)
			assert.Contains(t, err.Error(), s.Name(), "the error names the sink")

			rc.SetMode(conformanceAccept)
			ev := newConformanceEvent(t, 1, 401)
			require.NoError(t, s.Deliver(ctx, ev), "the sink recovers")
			got := rc.Received(t, 1)
			match(t, ev, got[len(got)-1])
		})
	}

	t.Run("CloseIdempotent", func(t *testing.T) {
		s, _ := sc.NewSink(t)
		require.NoError(t, s.Deliver(ctx, newConformanceEvent(t, 1, 500)))
		assert.NoError(t, s.Close(ctx))
		assert.NoError(t, s.Close(ctx))
		assert.Error(t, s.Deliver(ctx, newConformanceEvent(t, 1, 501)), "Deliver after Close fails")
	})
}

// conformanceHTTPReceiver is a real HTTP receiver (httptest) for HTTP
// sinks. It records accepted request bodies and answers per mode: accept
// with OK (default 204), ServerError 503, ClientError 400, Gone 410, Hang
// blocks until the client gives up.
type conformanceHTTPReceiver struct {
	*httptest.Server
	// OK answers an accepted request; set it before the first request.
	OK func(w http.ResponseWriter)
	// Check, when set, is called for every request; an error is reported
	// to the test and the request is answered 400.
	Check func(r *http.Request, body []byte) error

	t        *testing.T
	quit     chan struct{}
	mu       sync.Mutex
	mode     conformanceMode
	bodies   [][]byte
	requests []*http.Request
	arrived  chan struct{} // buffered 1
}

func newConformanceHTTPReceiver(t *testing.T) *conformanceHTTPReceiver {
	rc := &conformanceHTTPReceiver{t: t, quit: make(chan struct{}), arrived: make(chan struct{}, 1)}
	rc.Server = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(func() {
		close(rc.quit)
		rc.Server.Close()
	})
	return rc
}

func (rc *conformanceHTTPReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	rc.mu.Lock()
	mode, check, ok := rc.mode, rc.Check, rc.OK
	rc.mu.Unlock()
	if check != nil {
		if err := check(r, body); err != nil {
			rc.t.Errorf("receiver: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
	}
	switch mode {
	case conformanceServerError:
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	case conformanceClientError:
		w.WriteHeader(http.StatusBadRequest)
		return
	case conformanceGone:
		w.WriteHeader(http.StatusGone)
		return
	case conformanceHang:
		select {
		case <-r.Context().Done():
		case <-rc.quit:
		}
		return
	}
	rc.mu.Lock()
	rc.bodies = append(rc.bodies, body)
	rc.requests = append(rc.requests, r.Clone(context.Background()))
	rc.mu.Unlock()
	select {
	case rc.arrived <- struct{}{}:
	default:
	}
	if ok != nil {
		ok(w)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// SetMode implements conformanceReceiver.
func (rc *conformanceHTTPReceiver) SetMode(m conformanceMode) {
	rc.mu.Lock()
	rc.mode = m
	rc.mu.Unlock()
}

// Received implements conformanceReceiver.
func (rc *conformanceHTTPReceiver) Received(t *testing.T, n int) [][]byte {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for {
		rc.mu.Lock()
		got := slices.Clone(rc.bodies)
		rc.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-rc.arrived:
		case <-deadline.C:
			require.FailNow(t, "receiver", "got %d deliveries, want %d", len(got), n)
		}
	}
}

// Requests returns the accepted requests (headers and URL; bodies are in
// Received).
func (rc *conformanceHTTPReceiver) Requests() []*http.Request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.requests)
}
