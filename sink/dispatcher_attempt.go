package sink

// One delivery attempt of a dispatcher session and what follows it: the
// worker or AsyncSink callback that makes it, the classification of its
// error (delivered, retry, dead letter, pause), the dead-letter write, and
// handle, which applies the result to the task queues, the state and the
// Observer.

import (
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
)

type dispatchOutcome int

const (
	outcomeDelivered dispatchOutcome = iota
	outcomeRetry
	outcomeDeadLettered
	outcomePaused
	outcomeAborted // the session cancelled the attempt
)

// asyncResult is what an AsyncSink reported for one attempt.
type asyncResult struct {
	it  *dispatchItem
	err error
}

type dispatchResult struct {
	it      *dispatchItem
	outcome dispatchOutcome
	wait    time.Duration
	err     error
	at      time.Time
}

func (s *dispatchSession) workLoop() {
	defer s.workers.Done()
	for it := range s.work {
		s.results <- s.attempt(it)
	}
}

// attempt makes one delivery attempt of it (or retries its dead-letter
// write) and classifies the outcome. It runs on a worker goroutine, which
// owns it until the result is received.
func (s *dispatchSession) attempt(it *dispatchItem) dispatchResult {
	d := s.d
	if it.deadLetter {
		return s.deadLetter(it)
	}
	it.attempts++
	err := d.cfg.Sink.Deliver(s.attemptCtx, &it.ev)
	r, dead := s.outcome(it, err)
	if dead {
		return s.deadLetter(it)
	}
	return r
}

// startAsync starts an attempt of it on an AsyncSink; its outcome arrives
// on s.asyncDone.
func (s *dispatchSession) startAsync(it *dispatchItem) {
	it.attempts++
	s.async.DeliverAsync(s.attemptCtx, &it.ev, func(err error) {
		s.asyncDone <- asyncResult{it: it, err: err} // never blocks: cap MaxInFlight
	})
}

// finishAsync applies the outcome of an asynchronous attempt; a dead letter
// is written by a worker, off the loop.
func (s *dispatchSession) finishAsync(a asyncResult) {
	r, dead := s.outcome(a.it, a.err)
	if dead {
		s.work <- a.it // never blocks: cap MaxInFlight; still in flight
		return
	}
	s.handle(r)
}

// outcome classifies the result err of one attempt of it. dead reports
// that it must go to the dead letters (it.deadLetter is then set).
func (s *dispatchSession) outcome(it *dispatchItem, err error) (r dispatchResult, dead bool) {
	d := s.d
	now := d.cfg.Clock.Now()
	if err == nil {
		return dispatchResult{it: it, outcome: outcomeDelivered, at: now}, false
	}
	if s.attemptCtx.Err() != nil {
		return dispatchResult{it: it, outcome: outcomeAborted, err: err, at: now}, false
	}
	it.lastErr = err
	kind, wait := classifyFailure(err)
	switch kind {
	case failPause:
		return dispatchResult{it: it, outcome: outcomePaused, err: err, at: now}, false
	case failPermanent:
		it.deadLetter = true
		return dispatchResult{}, true
	}
	if it.bo == nil {
		it.bo = newBackOff(d.cfg.Retry, d.cfg.Clock.Now)
	}
	next := it.bo.NextBackOff()
	if next == backoff.Stop {
		it.lastErr = fmt.Errorf("gave up after %d attempts in %s: %w", it.attempts, it.bo.GetElapsedTime().Round(time.Second), err)
		it.deadLetter = true
		return dispatchResult{}, true
	}
	// A Retry-After longer than the whole policy would only delay the
	// dead letter.
	wait = min(max(next, wait), d.cfg.Retry.MaxElapsed)
	return dispatchResult{it: it, outcome: outcomeRetry, wait: wait, err: err, at: now}, false
}

// deadLetter writes it to the dead letters. If the store fails, the write
// is retried like a delivery.
func (s *dispatchSession) deadLetter(it *dispatchItem) dispatchResult {
	d := s.d
	if err := d.cfg.Outbox.DeadLetter(d.name, it.ev.Offset, it.attempts, it.lastErr.Error()); err != nil {
		if it.storeBo == nil {
			it.storeBo = newStoreBackOff(d.cfg.Clock.Now)
		}
		return dispatchResult{it: it, outcome: outcomeRetry, wait: it.storeBo.NextBackOff(),
			err: fmt.Errorf("dispatcher %s: dead letter offset %d: %w", d.name, it.ev.Offset, err), at: d.cfg.Clock.Now()}
	}
	return dispatchResult{it: it, outcome: outcomeDeadLettered, err: it.lastErr, at: d.cfg.Clock.Now()}
}

// handle applies the result of an attempt.
func (s *dispatchSession) handle(r dispatchResult) {
	d := s.d
	s.inFlight--
	it := r.it
	ev := &it.ev
	switch r.outcome {
	case outcomeDelivered, outcomeDeadLettered:
		s.done(it)
		var latency time.Duration
		if !ev.StoredAt.IsZero() {
			latency = r.at.Sub(ev.StoredAt)
		}
		d.mu.Lock()
		d.st.InFlight, d.st.Pending = s.inFlight, len(s.pending)
		if r.outcome == outcomeDelivered {
			d.st.Delivered++
			d.st.LastDeliveryAt = r.at
			d.st.Failing = false
		} else {
			d.st.DeadLettered++
		}
		d.mu.Unlock()
		if r.outcome == outcomeDelivered {
			d.cfg.Observer.Delivered(d.name, ev, latency)
		} else {
			d.log.Error().Err(r.err).Uint64("offset", ev.Offset).Str("event_id", ev.ID).Int64("task_id", ev.Data.TaskID).
				Int("attempt", it.attempts).Msg("event dead-lettered")
			d.cfg.Observer.DeadLettered(d.name, ev, r.err)
			s.failed(r.err, r.at)
		}
	case outcomeRetry:
		d.mu.Lock()
		d.st.InFlight = s.inFlight
		d.st.Retried++
		d.mu.Unlock()
		d.log.Warn().Err(r.err).Uint64("offset", ev.Offset).Str("event_id", ev.ID).Int64("task_id", ev.Data.TaskID).
			Int("attempt", it.attempts).Dur("wait", r.wait).Msg("delivery failed; will retry")
		d.cfg.Observer.Retried(d.name, ev, it.attempts, r.err)
		s.failed(r.err, r.at)
		if !s.draining {
			s.schedule(it, r.wait)
		}
	case outcomePaused:
		t := s.tasks[ev.Data.TaskID]
		s.ready = append(s.ready, t) // attempted again after Resume
		if it.resumes < s.resumes {
			// The attempt began before an operator resumed the sink: its
			// answer is older than the resume, which wins. Attempt again.
			d.mu.Lock()
			d.st.InFlight = s.inFlight
			d.mu.Unlock()
			d.log.Warn().Err(r.err).Uint64("offset", ev.Offset).Str("event_id", ev.ID).Msg("an attempt begun before the resume asked to pause; attempting again")
			break
		}
		d.mu.Lock()
		d.st.InFlight = s.inFlight
		already := d.st.Paused
		d.st.Paused, d.st.PauseReason = true, r.err.Error()
		d.mu.Unlock()
		s.failed(r.err, r.at)
		if !s.paused && !already {
			d.log.Error().Err(r.err).Uint64("offset", ev.Offset).Str("event_id", ev.ID).Int64("task_id", ev.Data.TaskID).Msg("sink paused; delivery stopped until resumed or replayed")
			d.cfg.Observer.Paused(d.name, r.err)
		}
		s.paused = true
	case outcomeAborted:
		d.mu.Lock()
		d.st.InFlight = s.inFlight
		d.mu.Unlock()
	}
}

// failed records a failed attempt in the state.
func (s *dispatchSession) failed(err error, at time.Time) {
	d := s.d
	d.mu.Lock()
	was := d.st.Failing
	d.st.Failing = true
	d.st.LastError = err.Error()
	d.st.LastErrorAt = at
	d.mu.Unlock()
	if !was {
		d.cfg.Observer.Failing(d.name, err)
	}
}
