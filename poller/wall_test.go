package poller_test

// Tests of WallTime (wall.go): reading, writing and stepping wall-clock
// seconds, across daylight-saving changes too.

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/poller"
)

func TestWallTime(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	tests := []struct {
		name    string
		instant time.Time
		want    string
	}{
		{name: "shanghai", instant: time.Date(2026, 4, 8, 9, 22, 1, 0, time.UTC), want: "2026-04-08 17:22:01"},
		{name: "first 01:30 of a fall-back", instant: time.Date(2026, 11, 1, 5, 30, 0, 0, time.UTC), want: "2026-11-01 01:30:00"},
		{name: "second 01:30 of a fall-back", instant: time.Date(2026, 11, 1, 6, 30, 0, 0, time.UTC), want: "2026-11-01 01:30:00"},
		{name: "after a spring-forward", instant: time.Date(2026, 3, 8, 7, 0, 0, 0, time.UTC), want: "2026-03-08 03:00:00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loc := ny
			if tt.name == "shanghai" {
				loc = shanghai
			}
			w := poller.WallTimeOf(tt.instant, loc)
			assert.Equal(t, tt.want, w.String())
			back, err := poller.ParseWallTime(tt.want)
			require.NoError(t, err)
			assert.Equal(t, w, back)
		})
	}
	// The second before 03:00 on a spring-forward day never shows on the
	// clock, but it is the wall second before 03:00: ranges stay gapless.
	w, err := poller.ParseWallTime("2026-03-08 03:00:00")
	require.NoError(t, err)
	assert.Equal(t, "2026-03-08 02:59:59", (w - 1).String())
	for _, bad := range []string{"", "2026-04-08", "2026-04-31 00:00:00", "2026-02-29 00:00:00", "2026-13-01 00:00:00",
		"2026-04-08T17:22:01", "2026-04-08 24:00:00", "２026-04-08 17:22:01"} {
		_, err := poller.ParseWallTime(bad)
		assert.Error(t, err, bad)
	}
	_, err = poller.ParseWallTime("2024-02-29 23:59:59")
	assert.NoError(t, err)
}
