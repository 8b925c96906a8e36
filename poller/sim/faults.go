package sim

// Injected faults: the kinds (FaultKind), how often each is served
// (Faults), and rolling for one per request.

import (
	"slices"
	"strconv"
	"time"
)

// FaultKind is one way a request can fail.
type FaultKind int

// Fault kinds.
const (
	Status401           FaultKind = iota + 1 // HTTP 401 with an error envelope
	Status429                                // HTTP 429 without Retry-After
	Status429RetryAfter                      // HTTP 429 with Retry-After: 1
	Status500                                // HTTP 500 with an error envelope
	Status503                                // HTTP 503 with an HTML body, as from a gateway
	ErrorEnvelope                            // HTTP 200, status "error" or code != 200
	Truncated                                // HTTP 200, the page's JSON cut in half
	NotJSON                                  // HTTP 200 with an HTML body
	Slow                                     // a valid page, sent after Faults.SlowDelay
)

// allFaults lists every fault kind.
var allFaults = []FaultKind{Status401, Status429, Status429RetryAfter, Status500, Status503,
	ErrorEnvelope, Truncated, NotJSON, Slow}

var faultNames = map[FaultKind]string{
	Status401: "401", Status429: "429", Status429RetryAfter: "429-retry-after",
	Status500: "500", Status503: "503", ErrorEnvelope: "error-envelope",
	Truncated: "truncated", NotJSON: "not-json", Slow: "slow",
}

// String returns the kind's name, e.g. "429-retry-after".
func (k FaultKind) String() string {
	if n, ok := faultNames[k]; ok {
		return n
	}
	return "fault-" + strconv.Itoa(int(k))
}

// Faults sets how often and how requests fail.
type Faults struct {
	// Rate is the fraction of requests, 0..1, that fail.
	Rate float64
	// Kinds are the ways they fail, picked uniformly; empty means every kind.
	Kinds []FaultKind
	// SlowDelay is how long a Slow answer takes; default 12s, more than the
	// poller's default timeout.
	SlowDelay time.Duration
	// Scope is which requests may fail; default every one.
	Scope FaultScope
}

// FaultScope is which requests faults are injected into.
type FaultScope int

// Fault scopes. A look-up is a request with a task_id parameter; a list,
// any other.
const (
	AllRequests FaultScope = iota
	LookupsOnly
	ListsOnly
)

func normFaults(f Faults) Faults {
	f.Rate = min(max(f.Rate, 0), 1)
	if len(f.Kinds) == 0 {
		f.Kinds = allFaults
	}
	f.Kinds = slices.Clone(f.Kinds)
	if f.SlowDelay <= 0 {
		f.SlowDelay = 12 * time.Second
	}
	return f
}

// SetFaults replaces the fault injection for requests that arrive from now on.
func (s *Sim) SetFaults(f Faults) {
	f = normFaults(f)
	s.mu.Lock()
	s.faults = f
	s.mu.Unlock()
}

// rollFault decides whether this request fails, and how. lookup reports
// whether it is a look-up by task_id; it is called only for a Scope other
// than AllRequests.
func (s *Sim) rollFault(lookup func() bool) (FaultKind, time.Duration, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.faults
	if f.Rate <= 0 || f.Scope != AllRequests && lookup() != (f.Scope == LookupsOnly) ||
		s.faultRng.Float64() >= f.Rate {
		return 0, 0, 0
	}
	return f.Kinds[s.faultRng.IntN(len(f.Kinds))], f.SlowDelay, s.faultRng.IntN(2)
}
