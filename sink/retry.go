package sink

// RetryPolicy and the backoffs a Dispatcher waits on between attempts of an
// event and after the store's own failures, and classifyFailure, which
// reads a failed attempt's error as retryable, permanent or a pause.

import (
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Default retry policy of a sink.
const (
	DefaultRetryInitial    = time.Second
	DefaultRetryMax        = 5 * time.Minute
	DefaultRetryMaxElapsed = 72 * time.Hour
)

// RetryPolicy is the exponential backoff between delivery attempts of one
// event. Zero fields take the defaults (1s, 5m, 72h). Waits grow by a factor
// of 2 from Initial up to Max, each randomized by ±50% (jitter), so a single
// wait can reach 1.5×Max. Once MaxElapsed has passed since the event's first
// failed attempt, the event is dead-lettered.
type RetryPolicy struct {
	Initial    time.Duration
	Max        time.Duration
	MaxElapsed time.Duration
}

// WithDefaults returns p with zero fields set to the defaults.
func (p RetryPolicy) WithDefaults() RetryPolicy {
	if p.Initial <= 0 {
		p.Initial = DefaultRetryInitial
	}
	if p.Max <= 0 {
		p.Max = DefaultRetryMax
	}
	if p.Max < p.Initial {
		p.Max = p.Initial
	}
	if p.MaxElapsed <= 0 {
		p.MaxElapsed = DefaultRetryMaxElapsed
	}
	return p
}

// newBackOff builds the backoff for one event from p (defaults applied),
// reading time from now (time.Now when nil). Its elapsed time starts at the
// call. The result is not safe for concurrent use.
func newBackOff(p RetryPolicy, now func() time.Time) *backoff.ExponentialBackOff {
	p = p.WithDefaults()
	var clock backoff.Clock = backoff.SystemClock
	if now != nil {
		clock = retryClock(now)
	}
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(p.Initial),
		backoff.WithMaxInterval(p.Max),
		backoff.WithMaxElapsedTime(p.MaxElapsed),
		backoff.WithMultiplier(2),
		backoff.WithRandomizationFactor(0.5),
		backoff.WithClockProvider(clock),
	)
}

// storeRetry is the policy for the store's own failures under a
// dispatcher (reading the outbox or the cursor, writing a dead letter):
// waits from 100ms doubling up to 10s, jittered, and no end, since giving
// up on the store is not an option.
var storeRetry = RetryPolicy{Initial: 100 * time.Millisecond, Max: 10 * time.Second}

// newStoreBackOff builds the backoff of storeRetry (see newBackOff).
func newStoreBackOff(now func() time.Time) *backoff.ExponentialBackOff {
	b := newBackOff(storeRetry, now)
	b.MaxElapsedTime = 0 // never Stop
	return b
}

// sleep waits d on clock; it returns false if stop closed first.
func sleep(clock Clock, d time.Duration, stop <-chan struct{}) bool {
	due := make(chan struct{})
	cancel := clock.AfterFunc(d, func() { close(due) })
	select {
	case <-due:
		return true
	case <-stop:
		cancel()
		return false
	}
}

type retryClock func() time.Time

func (f retryClock) Now() time.Time { return f() }

// failureKind classifies a Deliver error by the kinds in sink.go. A
// cenkalti *backoff.PermanentError counts as permanent too.
type failureKind int

const (
	failRetryable failureKind = iota
	failPermanent
	failPause
)

func classifyFailure(err error) (failureKind, time.Duration) {
	var pe *PauseError
	if errors.As(err, &pe) {
		return failPause, 0
	}
	var bp *backoff.PermanentError
	if errors.Is(err, ErrPermanent) || errors.As(err, &bp) {
		return failPermanent, 0
	}
	var ra *RetryAfterError
	if errors.As(err, &ra) {
		return failRetryable, max(ra.Wait, 0)
	}
	return failRetryable, 0
}
