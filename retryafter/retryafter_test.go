package retryafter

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestParse(t *testing.T) {
	now := time.Date(2026, 4, 8, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		name, value string
		want        time.Duration
	}{
		{"empty", "", 0},
		{"spaces", "  ", 0},
		{"seconds", "7", 7 * time.Second},
		{"padded", " 7 ", 7 * time.Second},
		{"zero", "0", 0},
		{"negative", "-3", 0},
		{"capped seconds", "999999999999", Max},
		{"huge seconds", "99999999999999999999", 0}, // not an int64: unreadable
		{"date ahead", now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"date far ahead", now.Add(48 * time.Hour).Format(http.TimeFormat), Max},
		{"date now", now.Format(http.TimeFormat), 0},
		{"date past", now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"garbage", "soon", 0},
		{"fraction", "1.5", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, Parse(tt.value, now))
		})
	}
}

func TestHeader(t *testing.T) {
	now := time.Now()
	h := http.Header{}
	assert.Zero(t, Header(h, now))
	h.Set("X-Ogw-Ratelimit-Reset", "5")
	assert.Zero(t, Header(h, now), "only Retry-After without names")
	assert.Equal(t, 5*time.Second, Header(h, now, "Retry-After", "X-Ogw-Ratelimit-Reset"))
	h.Set("Retry-After", "2")
	assert.Equal(t, 2*time.Second, Header(h, now, "Retry-After", "X-Ogw-Ratelimit-Reset"), "the first name wins")
	h.Set("Retry-After", "junk")
	assert.Equal(t, 5*time.Second, Header(h, now, "Retry-After", "X-Ogw-Ratelimit-Reset"), "an unreadable one is skipped")
}
