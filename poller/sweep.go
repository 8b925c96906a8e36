package poller

// Sweeping: paging through every task a query matches (Client.Sweep), one
// page fetched ahead, with retries of transient failures, and what a sweep
// saw (SweepStats).

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// retryMaxWait is the longest wait between retries in a sweep.
const retryMaxWait = 30 * time.Second

// SweepStats describes one sweep.
type SweepStats struct {
	Requests int // requests sent, retries included
	Retries  int // requests that repeated a failed one
	Pages    int // pages received
	Tasks    int // tasks listed on those pages, duplicates included
	// Skipped counts the listed tasks a Skipper found unchanged: they were
	// not decoded and are not in Page.Tasks.
	Skipped int
	// Total is the task count the last page reported.
	Total int
	// TotalChanged is set when the API's total changed between pages: tasks
	// were created, deleted or moved while the sweep paged through them.
	TotalChanged bool
	// Duplicates counts task ids seen more than once in the sweep, a sign
	// that tasks moved between pages.
	Duplicates int
	// PageSize is the page size the API actually served; it is smaller than
	// the one requested when the API caps it.
	PageSize int
	Duration time.Duration
}

// PageShift reports whether the sweep saw tasks move between pages.
func (s SweepStats) PageShift() bool { return s.TotalChanged || s.Duplicates > 0 }

// add sums two sweeps of one cycle.
func (s SweepStats) add(o SweepStats) SweepStats {
	s.Requests += o.Requests
	s.Retries += o.Retries
	s.Pages += o.Pages
	s.Tasks += o.Tasks
	s.Skipped += o.Skipped
	s.Total += o.Total
	s.TotalChanged = s.TotalChanged || o.TotalChanged
	s.Duplicates += o.Duplicates
	s.PageSize = max(s.PageSize, o.PageSize)
	s.Duration += o.Duration
	return s
}

// Sweep pages through every task matching q, from page q.Page (default 1)
// until a page holds fewer tasks than the page size or the page number
// reaches ceil(total/page size), and calls fn with each page that holds
// tasks, in page order, from the calling goroutine. It is SweepSkip with a
// nil Skipper.
//
// While fn handles a page, Sweep fetches the next one, never more than one
// page ahead. A request that fails in a transient way (see
// ErrorKind.Transient) is repeated up to Config.Retries times with
// exponential backoff, waiting at least the server's Retry-After; any other
// failure, the last one, or one whose Retry-After exceeds 30s ends the sweep. fn is only ever called with a
// complete page. An error of fn ends the sweep too and is returned wrapped;
// the pages fn accepted before stay accepted. Sweep returns once no
// goroutine of its own is left; its stats are filled in on error as well.
func (c *Client) Sweep(ctx context.Context, q Query, fn func(ctx context.Context, p *Page) error) (SweepStats, error) {
	return c.SweepSkip(ctx, q, nil, fn)
}

// SweepSkip is Sweep, decoding pages as ListSkip does: fn is called with
// every page that lists tasks, also when skip found all of them unchanged
// and Page.Tasks is empty. skip is called from the goroutine that fetches
// ahead, while fn handles the page before.
func (c *Client) SweepSkip(ctx context.Context, q Query, skip Skipper, fn func(ctx context.Context, p *Page) error) (SweepStats, error) {
	start := time.Now()
	q = c.normalize(q, c.set.Load().pageSize)

	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		page *Page
		err  error
	}
	// Unbuffered: the fetcher holds at most one page while fn runs.
	results := make(chan result)
	var fs SweepStats // written by the fetcher, read after it ended
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(results)
		c.fetch(fctx, q, skip, &fs, func(p *Page, err error) bool {
			select {
			case results <- result{p, err}:
				return err == nil
			case <-fctx.Done():
				return false
			}
		})
	}()

	var (
		st       SweepStats
		err      error
		ids      = make(map[int64]struct{})
		total    = -1
		received bool
	)
	for r := range results {
		if r.err != nil {
			err = r.err
			break
		}
		if ctx.Err() != nil {
			// The fetcher may have handed over a page as ctx ended (its
			// select picks either ready case): fn sees no page after
			// cancellation.
			break
		}
		p := r.page
		st.Pages++
		if received && p.Total != total {
			st.TotalChanged = true
		}
		received, total = true, p.Total
		for i := range p.Heads {
			h := &p.Heads[i]
			if _, dup := ids[h.ID]; dup {
				st.Duplicates++
			}
			ids[h.ID] = struct{}{}
			if h.Skipped {
				st.Skipped++
			}
		}
		if len(p.Heads) == 0 {
			continue
		}
		st.Tasks += len(p.Heads)
		if ferr := fn(ctx, p); ferr != nil {
			err = fmt.Errorf("incsapp: sweep page %d: %w", p.Number, ferr)
			break
		}
	}
	cancel()
	for range results {
		// Drain: the fetcher ends once it sees fctx cancelled.
	}
	<-done

	st.Requests, st.Retries, st.PageSize = fs.Requests, fs.Retries, fs.PageSize
	st.Total = max(total, 0)
	st.Duration = time.Since(start)
	if err == nil && ctx.Err() != nil {
		err = ctxError(ctx, q.Page)
	}
	return st, err
}

// fetch requests the pages of q in order and hands each result to send,
// deciding itself when the last page is reached. It stops when send returns
// false.
func (c *Client) fetch(ctx context.Context, q Query, skip Skipper, fs *SweepStats, send func(*Page, error) bool) {
	size := q.PageSize
	fs.PageSize = size
	first := q.Page
	for page := first; ; page++ {
		q.Page = page
		p, err := c.listRetry(ctx, q, skip, fs)
		if !send(p, err) {
			return
		}
		n := len(p.Heads)
		if page == first && n > 0 && n < size && p.Total > (first-1)*size+n {
			// More tasks exist than this full first page holds: the API
			// serves smaller pages than requested. Page on in its size.
			size = n
			fs.PageSize = n
			c.log.Info().Int("requested", q.PageSize).Int("served", n).Msg("api caps the page size")
		}
		if n < size || page >= (p.Total+size-1)/size || (q.Pages > 0 && page-first+1 >= q.Pages) {
			return
		}
	}
}

// listRetry calls List and repeats it after transient failures.
func (c *Client) listRetry(ctx context.Context, q Query, skip Skipper, fs *SweepStats) (*Page, error) {
	set := c.set.Load() // Retries and RetryWait stay as they were at the first attempt
	b := &backoff.ExponentialBackOff{
		InitialInterval:     set.retryWait,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         max(set.retryWait, retryMaxWait),
		Stop:                backoff.Stop,
		Clock:               backoff.SystemClock,
	}
	b.Reset()
	for attempt := 0; ; attempt++ {
		fs.Requests++
		p, err := c.ListSkip(ctx, q, skip)
		if err == nil {
			return p, nil
		}
		var ae *APIError
		if !errors.As(err, &ae) || !ae.Transient() || attempt >= set.retries || ctx.Err() != nil ||
			ae.RetryAfter > retryMaxWait {
			// A long Retry-After ends the sweep so that the failure shows;
			// the gate still holds the next request back until it passed.
			return nil, err
		}
		wait := max(b.NextBackOff(), ae.RetryAfter)
		c.log.Debug().Err(err).Int("attempt", attempt+1).Dur("wait", wait).Msg("retrying request")
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		fs.Retries++
	}
}
