package rules

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

func office(t *testing.T, zone string, holidays ...string) *Calendar {
	t.Helper()
	c, err := NewCalendar("office", zone, map[string][]string{"mon-fri": {"09:00-12:00", "13:30-18:30"}}, holidays)
	require.NoError(t, err)
	return c
}

func TestCalendar_Add(t *testing.T) {
	sh := office(t, "Asia/Shanghai", "2026-10-01..2026-10-08")
	ny, err := NewCalendar("ny", "America/New_York", map[string][]string{
		"mon-fri": {"09:00-17:00"},
		"sun":     {"00:00-04:00"}, // spans the 02:00 change of both days
	}, []string{"2026-11-26"})
	require.NoError(t, err)
	in := func(loc *time.Location, s string) time.Time {
		tm, err := time.ParseInLocation(diff.TimeLayout, s, loc)
		require.NoError(t, err)
		return tm
	}
	tests := []struct {
		name string
		cal  *Calendar
		from string
		d    time.Duration
		want string
	}{
		{"within a window", sh, "2026-04-08 09:30:00", time.Hour, "2026-04-08 10:30:00"},
		{"over lunch", sh, "2026-04-08 11:00:00", 2 * time.Hour, "2026-04-08 14:30:00"},
		{"starts before opening", sh, "2026-04-08 07:00:00", 30 * time.Minute, "2026-04-08 09:30:00"},
		{"starts at lunch", sh, "2026-04-08 12:10:00", time.Hour, "2026-04-08 14:30:00"},
		{"over a weekend", sh, "2026-04-10 17:30:00", 4 * time.Hour, "2026-04-13 12:00:00"}, // Fri -> Mon
		{"starts on a sunday", sh, "2026-04-12 10:00:00", time.Hour, "2026-04-13 10:00:00"},
		{"exactly at closing", sh, "2026-04-08 17:30:00", time.Hour, "2026-04-08 18:30:00"},
		// 2026-09-30 is a Wednesday; 10-01..10-08 are holidays, both ends
		// included; 10-09 is a Friday.
		{"over a holiday range", sh, "2026-09-30 18:00:00", time.Hour, "2026-10-09 09:30:00"},
		{"whole day", sh, "2026-04-08 00:00:00", 8 * time.Hour, "2026-04-08 18:30:00"},
		// New York: 2026-03-08 (Sunday) the clock jumps 02:00 -> 03:00: the
		// window 00:00-04:00 holds 3 real hours.
		{"spring forward skips an hour", ny, "2026-03-08 00:00:00", 3 * time.Hour, "2026-03-08 04:00:00"},
		{"spring forward, then monday", ny, "2026-03-08 00:00:00", 3*time.Hour + time.Minute, "2026-03-09 09:01:00"},
		// 2026-11-01 (Sunday) 02:00 -> 01:00: the window holds 5 real hours.
		{"fall back repeats an hour", ny, "2026-11-01 00:00:00", 5 * time.Hour, "2026-11-01 04:00:00"},
		{"fall back, weekday", ny, "2026-10-30 16:00:00", 2 * time.Hour, "2026-11-01 01:00:00"},
		{"thanksgiving", ny, "2026-11-25 16:30:00", time.Hour, "2026-11-27 09:30:00"},
		{"business hours across DST are wall hours", ny, "2026-03-06 16:00:00", 2 * time.Hour, "2026-03-08 01:00:00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.cal.Add(in(tt.cal.Location, tt.from), tt.d)
			assert.Equal(t, tt.want, got.In(tt.cal.Location).Format(diff.TimeLayout))
		})
	}
	// The repeated hour: 01:30 of the fall-back day comes twice. Real time
	// counts, so 1h30 after midnight is the first 01:30 (EDT) and 2h30 the
	// second (EST).
	mid := in(newYork, "2026-11-01 00:00:00")
	first, second := ny.Add(mid, 90*time.Minute), ny.Add(mid, 150*time.Minute)
	assert.Equal(t, "01:30 EDT", first.In(newYork).Format("15:04 MST"))
	assert.Equal(t, "01:30 EST", second.In(newYork).Format("15:04 MST"))

	closed, err := NewCalendar("closed", "UTC", map[string][]string{"mon": {"09:00-10:00"}}, []string{"2026-01-01..2040-01-01"})
	require.NoError(t, err)
	assert.Equal(t, Never, closed.Add(in(time.UTC, "2026-04-08 00:00:00"), time.Hour))
}

func TestWallInstant(t *testing.T) {
	// 02:30 does not exist on 2026-03-08 in New York: the skip ends at 03:00 EDT.
	got := wallInstant(2026, 3, 8, 150, newYork)
	assert.Equal(t, "2026-03-08 03:00 EDT", got.Format("2006-01-02 15:04 MST"))
	// 01:30 exists twice on 2026-11-01: the first.
	got = wallInstant(2026, 11, 1, 90, newYork)
	assert.Equal(t, "2026-11-01 01:30 EDT", got.Format("2006-01-02 15:04 MST"))
	got = wallInstant(2026, 4, 8, 1440, shanghai)
	assert.Equal(t, "2026-04-09 00:00 CST", got.Format("2006-01-02 15:04 MST"))
}

// TestEngine_BusinessHours: a rule with a calendar fires after 4 business
// hours, across a weekend, a holiday and a DST change.
func TestEngine_BusinessHours(t *testing.T) {
	for _, tc := range []struct {
		zone, log, due string
	}{
		{"Asia/Shanghai", "2026-04-10 16:00:00", "2026-04-13 10:30:00"}, // Fri 16:00 + 2.5 h Fri, 1.5 h Mon
		{"Asia/Shanghai", "2026-09-30 17:00:00", "2026-10-09 11:30:00"}, // holiday week
		// The API is in Shanghai; the office in New York. 2026-03-06 (Fri)
		// 16:00 EST = 2026-03-07 05:00 CST; +1 h Fri, then Monday 03-09
		// (EDT) 09:00 + 3 h = 12:00 EDT = 2026-03-10 00:00 CST.
		{"America/New_York", "2026-03-07 05:00:00", "2026-03-10 00:00:00"},
	} {
		t.Run(tc.zone+" "+tc.log, func(t *testing.T) {
			cal := office(t, tc.zone, "2026-10-01..2026-10-08")
			if tc.zone == "America/New_York" {
				var err error
				cal, err = NewCalendar("ny", tc.zone, map[string][]string{"mon-fri": {"09:00-17:00"}}, nil)
				require.NoError(t, err)
			}
			r := stalledRule(4 * time.Hour)
			r.Calendar = cal
			e := mustEngine(t, r)
			task := buildTask(1, 1, logSpec{1, 1, tc.log, ""})
			run(e, []diff.Task{task}, nil, at(tc.log))
			due := at(tc.due)
			assert.Equal(t, due, e.NextDue())
			var fired []diff.Event
			for now := at(tc.log); now.Before(due.Add(48 * time.Hour)); now = now.Add(5 * time.Minute) {
				evs := run(e, nil, e.Due(now), now)
				if len(evs) > 0 {
					assert.Less(t, now.Sub(due), 5*time.Minute, "fired within one interval of due")
				}
				fired = append(fired, evs...)
			}
			require.Len(t, fired, 1)
			assert.True(t, fired[0].Data.DueAt.Equal(due))
		})
	}
}

func TestNewCalendar_Errors(t *testing.T) {
	tests := []struct {
		name     string
		zone     string
		hours    map[string][]string
		holidays []string
		key      string
	}{
		{"zone", "Mars/Base", map[string][]string{"mon": {"09:00-10:00"}}, nil, "timezone"},
		{"no hours", "UTC", nil, nil, "hours"},
		{"bad day", "UTC", map[string][]string{"monday": {"09:00-10:00"}}, nil, "hours.monday"},
		{"backwards days", "UTC", map[string][]string{"fri-mon": {"09:00-10:00"}}, nil, "hours.fri-mon"},
		{"bad window", "UTC", map[string][]string{"mon": {"9-10"}}, nil, "hours.mon[0]"},
		{"window backwards", "UTC", map[string][]string{"mon": {"10:00-09:00"}}, nil, "hours.mon[0]"},
		{"25 o'clock", "UTC", map[string][]string{"mon": {"09:00-25:00"}}, nil, "hours.mon[0]"},
		{"overlap", "UTC", map[string][]string{"mon": {"09:00-11:00", "10:00-12:00"}}, nil, "hours.mon"},
		{"day twice", "UTC", map[string][]string{"mon-fri": {"09:00-10:00"}, "fri": {"11:00-12:00"}}, nil, "hours.mon-fri"},
		{"holiday", "UTC", map[string][]string{"mon": {"09:00-10:00"}}, []string{"2026-13-01"}, "holidays[0]"},
		{"holiday range backwards", "UTC", map[string][]string{"mon": {"09:00-10:00"}}, []string{"2026-10-08..2026-10-01"}, "holidays[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewCalendar("c", tt.zone, tt.hours, tt.holidays)
			var fe *FieldError
			require.ErrorAs(t, err, &fe, fmt.Sprint(err))
			assert.Equal(t, tt.key, fe.Key)
		})
	}
	c, err := NewCalendar("c", "UTC", map[string][]string{"mon-wed, sat,sun": {"00:00-24:00"}}, nil)
	require.NoError(t, err)
	assert.Equal(t, []Window{{0, 1440}}, c.Hours[time.Sunday])
	assert.Empty(t, c.Hours[time.Thursday])
}
