package poller

// Tests of Config's defaults (config.go).

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestConfig_Defaults: a zero Config takes the exported defaults, which
// cmd's config defaults are built from.
func TestConfig_Defaults(t *testing.T) {
	c := Config{}.withDefaults()
	assert.Equal(t, DefaultBaseURL, c.BaseURL)
	assert.Equal(t, DefaultPageSize, c.PageSize)
	assert.Equal(t, MaxPageSize, c.PageSize)
	assert.Equal(t, DefaultRateLimit, c.RateLimit)
	assert.Equal(t, DefaultTimeout, c.Timeout)
	assert.Equal(t, DefaultLookback, c.Lookback)
	assert.Equal(t, DefaultInterval, c.Interval)
	assert.Equal(t, DefaultFullSweep, c.FullSweep)
	assert.Equal(t, DefaultOpenSweep(DefaultInterval), c.OpenSweep)
	assert.Equal(t, DefaultBudget(DefaultRateLimit, DefaultInterval), c.Budget)
	assert.Equal(t, DefaultRetries, c.Retries)
	assert.Equal(t, DefaultRetryWait, c.RetryWait)
	assert.Equal(t, 20*time.Second, DefaultOpenSweep(10*time.Second))

	big := Config{PageSize: 500}.withDefaults()
	assert.Equal(t, MaxPageSize, big.PageSize, "a page size above the API's is capped")
}

// TestMaxBudget: the rate limit's requests per interval bound a budget;
// the default is 80 % of it, at least 1.
func TestMaxBudget(t *testing.T) {
	assert.InDelta(t, 50.0, MaxBudget(5, 10*time.Second), 1e-9)
	assert.InDelta(t, 0.5, MaxBudget(5, 100*time.Millisecond), 1e-9)
	assert.Equal(t, 40, DefaultBudget(5, 10*time.Second))
	assert.Equal(t, 1, DefaultBudget(5, 100*time.Millisecond))
	assert.Equal(t, 8, DefaultBudget(1, 10*time.Second))
}
