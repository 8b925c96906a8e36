// Package sink owns delivery: the Sink interface every destination
// implements (NATS, webhook, Slack, Feishu, one file each), the error kinds
// a sink uses to classify a failed attempt, and the Dispatcher that reads the
// outbox from a sink's cursor, delivers in per-task offset order, retries with
// exponential backoff, dead-letters what cannot be delivered and advances the
// cursor only past acknowledged or dead-lettered events.
package sink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/incs-relay/incs-relay/diff"
)

// Sink is one destination of events.
//
// Deliver makes exactly one attempt to deliver ev and blocks until the
// destination acknowledged it, the attempt failed, or ctx ended. It returns
// nil only once the event is acknowledged. A failure is classified by the
// error's kind: a plain error is retryable, a *PermanentError (see
// Permanent) moves the event to dead letters, a *RetryAfterError asks the
// caller to wait at least its duration before the next attempt, and a
// *PauseError stops the sink until an operator resumes it. Retrying is the
// Dispatcher's job, never the sink's. Deliver is safe for concurrent use;
// the Dispatcher calls it from several goroutines but never for two events
// of one task at once.
//
// Close releases the sink's connections. It is idempotent.
type Sink interface {
	Name() string
	Deliver(ctx context.Context, ev *diff.Event) error
	Close(ctx context.Context) error
}

// AsyncSink is a Sink that can start a delivery without blocking, so that
// many can be under way without a goroutine each. DeliverAsync makes the
// same single attempt as Deliver and calls done exactly once, from any
// goroutine, with what Deliver would have returned; done must not block.
// The Dispatcher uses it instead of Deliver when a sink has it.
type AsyncSink interface {
	Sink
	DeliverAsync(ctx context.Context, ev *diff.Event, done func(error))
}

// ErrPermanent is matched by errors.Is on every *PermanentError.
var ErrPermanent = errors.New("permanent delivery failure")

// PermanentError is a failure that retrying cannot fix, e.g. HTTP 400.
type PermanentError struct{ Err error }

// Error returns the wrapped error's message.
func (e *PermanentError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *PermanentError) Unwrap() error { return e.Err }

// Is matches ErrPermanent.
func (e *PermanentError) Is(target error) bool { return target == ErrPermanent }

// Permanent wraps err as a *PermanentError.
func Permanent(err error) error { return &PermanentError{Err: err} }

// RetryAfterError is a retryable failure whose destination asked for a pause
// of at least Wait before the next attempt (HTTP 429 or 503 with Retry-After).
type RetryAfterError struct {
	Err  error
	Wait time.Duration
}

// Error returns the wrapped error's message and the wait.
func (e *RetryAfterError) Error() string { return fmt.Sprintf("%v (retry after %s)", e.Err, e.Wait) }

// Unwrap returns the wrapped error.
func (e *RetryAfterError) Unwrap() error { return e.Err }

// ErrPaused is matched by errors.Is on every *PauseError.
var ErrPaused = errors.New("sink paused")

// PauseError is a failure after which the sink must stop delivering until an
// operator resumes or replays it, e.g. a webhook answering 410 Gone.
type PauseError struct{ Err error }

// Error returns the wrapped error's message.
func (e *PauseError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *PauseError) Unwrap() error { return e.Err }

// Is matches ErrPaused.
func (e *PauseError) Is(target error) bool { return target == ErrPaused }
