package poller

// WallTime, the API's wall clock to the second, and reading it from the
// API's time strings without allocating.

import (
	"time"

	"github.com/incs-relay/incs-relay/diff"
)

// WallTime is a wall-clock time of the API's zone to the second, as the API
// writes it ("2026-04-08 17:22:01"), counted in seconds from 1970-01-01
// 00:00:00 of that wall clock as if the zone never changed its offset.
//
// It orders, filters and steps the way the API's start_at and end_at do,
// across daylight-saving changes too: there an instant skips or repeats an
// hour of wall-clock time, and a time.Time built from a wall time inside a
// skipped hour is moved out of it, so a range boundary computed with
// instants can leave a gap. WallTime+1 is always the next wall-clock second.
// The zero value means unknown.
type WallTime int64

// WallTimeOf returns the wall-clock time that instant t shows in loc.
func WallTimeOf(t time.Time, loc *time.Location) WallTime {
	t = t.In(loc)
	y, mo, d := t.Date()
	h, mi, s := t.Clock()
	return WallTime(daysFromCivil(int64(y), int64(mo), int64(d))*86400 + int64(h*3600+mi*60+s))
}

// String returns w in the API's layout, e.g. "2026-04-08 17:22:01".
func (w WallTime) String() string {
	return time.Unix(int64(w), 0).UTC().Format(diff.TimeLayout)
}

// wallLen is the length of a time in the API's layout.
const wallLen = len(diff.TimeLayout)

// parseWall reads "YYYY-MM-DD HH:MM:SS" without allocating. It rejects any
// other layout and out-of-range fields, such as a 31st of April.
func parseWall(b []byte) (WallTime, bool) {
	if len(b) != len(diff.TimeLayout) || b[4] != '-' || b[7] != '-' || b[10] != ' ' || b[13] != ':' || b[16] != ':' {
		return 0, false
	}
	num := func(i, n int) (int64, bool) {
		var v int64
		for _, c := range b[i : i+n] {
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + int64(c-'0')
		}
		return v, true
	}
	y, ok1 := num(0, 4)
	mo, ok2 := num(5, 2)
	d, ok3 := num(8, 2)
	h, ok4 := num(11, 2)
	mi, ok5 := num(14, 2)
	s, ok6 := num(17, 2)
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || mo < 1 || mo > 12 || d < 1 || d > daysIn(y, mo) ||
		h > 23 || mi > 59 || s > 59 {
		return 0, false
	}
	return WallTime(daysFromCivil(y, mo, d)*86400 + h*3600 + mi*60 + s), true
}

func daysIn(y, m int64) int64 {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil returns the days from 1970-01-01 to the given date of the
// proleptic Gregorian calendar (H. Hinnant's algorithm).
func daysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 && y%400 != 0 {
		era--
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}
