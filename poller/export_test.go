package poller

import (
	"fmt"

	"golang.org/x/time/rate"

	"github.com/incs-relay/incs-relay/diff"
)

// The page decoders, for the external tests:
// those import poller/sim, which imports poller, so they cannot be
// internal tests.
var (
	DecodePage = decodePage
	// DecodeSkip is decodePageSkip; DecodePageSkip never keeps the body.
	DecodeSkip     = decodePageSkip
	DecodePageSkip = func(body []byte, number, size int, skip Skipper) (*Page, error) {
		p, _, err := decodePageSkip(body, number, size, skip, false)
		return p, err
	}
)

// ParseWallTime reads an API time such as "2026-04-08 17:22:01", the
// inverse of WallTime.String, for the tests.
func ParseWallTime(s string) (WallTime, error) {
	w, ok := parseWall([]byte(s))
	if !ok {
		return 0, fmt.Errorf("poller: wall time %q: want the layout %q", s, diff.TimeLayout)
	}
	return w, nil
}

// Limiter returns the rate limiter's limit and burst, for the tests of
// Reconfigure.
func (c *Client) Limiter() (rate.Limit, int) { return c.limiter.Limit(), c.limiter.Burst() }
