// Package retryafter reads how long an HTTP server asked a client to wait
// before its next request, with one cap for the whole relay: the poller's
// API client and every HTTP sink use it. It imports nothing of this module,
// so any stage may import it.
package retryafter

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Max caps every wait a server asks for: a longer Retry-After (a
// misconfigured proxy, a date far ahead) waits Max, and the next answer
// may ask again.
const Max = time.Hour

// Parse reads a Retry-After value, delay-seconds or an HTTP-date, as a wait
// from now, capped at Max. It returns 0 for an empty, unreadable, zero or
// negative value and for a date not after now.
func Parse(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(Max/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), Max)
	}
	return 0
}

// Header returns the first positive wait (see Parse) among the headers
// named in h, in order; 0 when none has one. With no names it reads
// Retry-After.
func Header(h http.Header, now time.Time, names ...string) time.Duration {
	if len(names) == 0 {
		return Parse(h.Get("Retry-After"), now)
	}
	for _, n := range names {
		if w := Parse(h.Get(n), now); w > 0 {
			return w
		}
	}
	return 0
}
