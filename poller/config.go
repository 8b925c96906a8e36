package poller

// Config, which configures a Client, a Poller and a Tiered strategy, with
// its defaults and the API's constants they rest on.

import (
	"math"
	"net/http"
	"time"
)

const (
	// TasksPath is the API's only endpoint, appended to Config.BaseURL.
	TasksPath = "/external/tasks"

	// DefaultBaseURL is the API's base URL when Config.BaseURL is empty.
	DefaultBaseURL = "https://api.incsapp.com"
	// DefaultTimezone is the API's zone when Config.Location is nil.
	DefaultTimezone = "Asia/Shanghai"
	// MaxPageSize is the largest page the API serves.
	MaxPageSize = 100
	// DefaultPageSize is Config.PageSize's default: the largest page.
	DefaultPageSize = MaxPageSize
	// DefaultRateLimit is Config.RateLimit's default, in requests per
	// second.
	DefaultRateLimit = 5.0
	// DefaultTimeout is Config.Timeout's default.
	DefaultTimeout = 10 * time.Second
	// DefaultLookback is Config.Lookback's default: 30 days.
	DefaultLookback = 720 * time.Hour
	// DefaultInterval is Config.Interval's default.
	DefaultInterval = 10 * time.Second
	// DefaultFullSweep is Config.FullSweep's default.
	DefaultFullSweep = 10 * time.Minute
	// DefaultRetries is Config.Retries's default.
	DefaultRetries = 3
	// DefaultRetryWait is Config.RetryWait's default.
	DefaultRetryWait = 500 * time.Millisecond

	shanghaiUTC = 8 * 60 * 60 // Asia/Shanghai's offset, for systems without tzdata
)

// MaxBudget is the most requests the rate limit lets one interval send,
// the ceiling of a sensible Config.Budget.
func MaxBudget(rateLimit float64, interval time.Duration) float64 {
	return rateLimit * interval.Seconds()
}

// DefaultBudget is the request budget per interval when Config.Budget is
// not set: 80 % of MaxBudget, at least 1. The rest is left for retries,
// follow-ups and cycles that run long.
func DefaultBudget(rateLimit float64, interval time.Duration) int {
	return max(int(math.Floor(0.8*MaxBudget(rateLimit, interval)+1e-9)), 1)
}

// DefaultOpenSweep is Config.OpenSweep's default for an interval: two
// intervals, so each cycle reads half of the open tasks.
func DefaultOpenSweep(interval time.Duration) time.Duration { return 2 * interval }

// Config configures a Client and a Poller. Zero fields take the defaults
// named on each; cmd fills it from the YAML config. Client.Reconfigure,
// Poller.Reconfigure and Tiered.Reconfigure change all but BaseURL,
// Location, HTTPClient and Now while the relay runs; each says from when.
type Config struct {
	// BaseURL is the API's base URL; "/external/tasks" is appended.
	// Default DefaultBaseURL.
	BaseURL string
	// Token is the bearer token. It is sent in the Authorization header only
	// and never appears in logs or errors.
	Token string
	// Location is the API's zone, used for start_at/end_at and for reading
	// times. Default Asia/Shanghai.
	Location *time.Location
	// PageSize is the page size requested, at most MaxPageSize. Default 100.
	PageSize int
	// RateLimit is the most requests per second sent to the API. Default 5;
	// negative or +Inf means no limit.
	RateLimit float64
	// Timeout bounds one request, body included. Default 10s.
	Timeout time.Duration
	// Lookback: tasks created longer ago are not scanned. Default 720h.
	Lookback time.Duration
	// Interval is the time between the starts of two poll cycles. Default 10s.
	Interval time.Duration
	// FullSweep is, for the Tiered strategy, the longest time between two
	// reads of a finished task (status 2 or 3): every task in the lookback
	// window is read at least this often. Default 10m; at least Interval.
	FullSweep time.Duration
	// OpenSweep is, for the Tiered strategy, the longest time between two
	// reads of an open task (status 0 or 1), counted in cycles:
	// OpenSweep/Interval of them, at least 1. Default 2×Interval: each
	// cycle reads half of the open tasks. Interval reads all of them every
	// cycle, at twice the requests. When the rate limit makes cycles
	// longer than Interval, so many cycles take longer too.
	OpenSweep time.Duration
	// Budget is, for the Tiered strategy, the number of API requests per
	// Interval it aims to spend on average: after the newest window, the
	// open tier and the follow-ups, it reads as many finished bands as the
	// rest of the budget pays for, least recently read first, so a world
	// whose full sweep fits is read whole every cycle. OpenSweep and
	// FullSweep stay ceilings that are kept even beyond the budget; the
	// rate limit is never exceeded. Default DefaultBudget(RateLimit,
	// Interval); without a rate limit, or when negative, there is no budget
	// and only the ceilings are read.
	Budget int
	// Retries is how often a sweep repeats a request that failed in a
	// transient way before it gives up. Default 3; negative means none.
	Retries int
	// RetryWait is the first backoff step between retries; it doubles with
	// jitter up to 30s, and a longer Retry-After wins. Default 500ms.
	RetryWait time.Duration
	// HTTPClient sends the requests. Default: a client of its own with a
	// clone of http.DefaultTransport. Its Timeout should be zero: Timeout
	// above bounds each request.
	HTTPClient *http.Client
	// Now returns the current time; default time.Now. Tests set it.
	Now func() time.Time
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.BaseURL == "" {
		c.BaseURL = DefaultBaseURL
	}
	if c.Location == nil {
		c.Location = DefaultLocation()
	}
	if c.PageSize <= 0 {
		c.PageSize = DefaultPageSize
	}
	c.PageSize = min(c.PageSize, MaxPageSize)
	if c.RateLimit == 0 {
		c.RateLimit = DefaultRateLimit
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Lookback <= 0 {
		c.Lookback = DefaultLookback
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.FullSweep <= 0 {
		c.FullSweep = DefaultFullSweep
	}
	c.FullSweep = max(c.FullSweep, c.Interval)
	if c.OpenSweep <= 0 {
		c.OpenSweep = DefaultOpenSweep(c.Interval)
	}
	c.OpenSweep = min(max(c.OpenSweep, c.Interval), c.FullSweep)
	if c.Budget == 0 && c.RateLimit > 0 && !math.IsInf(c.RateLimit, 1) {
		c.Budget = DefaultBudget(c.RateLimit, c.Interval)
	}
	c.Budget = max(c.Budget, 0)
	if c.Retries == 0 {
		c.Retries = DefaultRetries
	}
	if c.Retries < 0 {
		c.Retries = 0
	}
	if c.RetryWait <= 0 {
		c.RetryWait = DefaultRetryWait
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// DefaultLocation returns Asia/Shanghai, or a fixed UTC+8 zone named CST
// where the system has no time zone database.
func DefaultLocation() *time.Location {
	if loc, err := time.LoadLocation(DefaultTimezone); err == nil {
		return loc
	}
	return time.FixedZone("CST", shanghaiUTC)
}
