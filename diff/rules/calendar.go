package rules

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Calendar is a set of business hours in a time zone. Business time is
// the real time that elapses inside the windows a day's hours open,
// outside holidays. A window runs from the instant its start's wall clock
// is shown to the instant its end's is, so a daylight-saving change inside
// a window shortens it by the hour the clock skips, or lengthens it by the
// hour the clock repeats: what counts is the time the office was open. A
// window edge whose wall time the change skips is the instant the skip
// ends; one the change repeats is its first showing.
type Calendar struct {
	Name     string
	Location *time.Location
	// Hours holds each weekday's windows (index time.Weekday), sorted and
	// not overlapping, in minutes since midnight; End may be 1440.
	Hours    [7][]Window
	Holidays []DateRange // sorted; both ends included
}

// Window is a span of one day's wall clock, in minutes since midnight.
type Window struct{ Start, End int }

// DateRange is a span of civil dates, both included, as yyyymmdd numbers.
type DateRange struct{ From, To int }

// Never is the due time of a step a calendar never reaches: it has no
// business hours for ten years from the anchor.
var Never = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)

// searchDays bounds Calendar.Add's walk.
const searchDays = 3660

var dayNames = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// NewCalendar builds a calendar from its config values: an IANA zone,
// hours keyed by day ("mon", "mon-fri", "sat,sun") with windows
// "HH:MM-HH:MM" (end "24:00" allowed), and holidays "YYYY-MM-DD" or ranges
// "YYYY-MM-DD..YYYY-MM-DD" (both ends included). Its error is a
// *FieldError.
func NewCalendar(name, timezone string, hours map[string][]string, holidays []string) (*Calendar, error) {
	c := &Calendar{Name: name}
	if !nameRe.MatchString(name) {
		return nil, fieldErr("", "calendar name must match [a-z0-9_]+, got %q", name)
	}
	loc, err := time.LoadLocation(timezone)
	if err != nil || timezone == "" {
		return nil, fieldErr("timezone", "unknown time zone %q (want an IANA name such as Asia/Shanghai)", timezone)
	}
	c.Location = loc
	if len(hours) == 0 {
		return nil, fieldErr("hours", "required: e.g. { mon-fri: [\"09:00-18:00\"] }")
	}
	keys := make([]string, 0, len(hours))
	for k := range hours {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	named := [7]string{}
	for _, k := range keys {
		days, err := parseDays(k)
		if err != nil {
			return nil, fieldErr("hours."+k, "%v", err)
		}
		var ws []Window
		for i, s := range hours[k] {
			w, err := parseWindow(s)
			if err != nil {
				return nil, fieldErr(fmt.Sprintf("hours.%s[%d]", k, i), "%v", err)
			}
			ws = append(ws, w)
		}
		if len(ws) == 0 {
			return nil, fieldErr("hours."+k, "no windows: leave the day out instead")
		}
		for _, d := range days {
			if named[d] != "" {
				return nil, fieldErr("hours."+k, "%s is also in %q", dayNames[d], named[d])
			}
			named[d] = k
		}
		slices.SortFunc(ws, func(a, b Window) int { return a.Start - b.Start })
		for i := 1; i < len(ws); i++ {
			if ws[i].Start < ws[i-1].End {
				return nil, fieldErr("hours."+k, "windows overlap")
			}
		}
		for _, d := range days {
			c.Hours[d] = slices.Clone(ws)
		}
	}
	for i, h := range holidays {
		r, err := parseDateRange(h)
		if err != nil {
			return nil, fieldErr(fmt.Sprintf("holidays[%d]", i), "%v", err)
		}
		c.Holidays = append(c.Holidays, r)
	}
	slices.SortFunc(c.Holidays, func(a, b DateRange) int { return a.From - b.From })
	return c, nil
}

// parseDays reads "mon", "mon-fri" or a comma list of those.
func parseDays(s string) ([]time.Weekday, error) {
	var out []time.Weekday
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		from, to, isRange := strings.Cut(part, "-")
		a := slices.Index(dayNames, from)
		b := a
		if isRange {
			b = slices.Index(dayNames, to)
		}
		if a < 0 || b < 0 {
			return nil, fmt.Errorf("want days mon tue wed thu fri sat sun, a range such as mon-fri, or a comma list, got %q", s)
		}
		// Monday-first order, so that "mon-sun" is the whole week.
		ma, mb := (a+6)%7, (b+6)%7
		if ma > mb {
			return nil, fmt.Errorf("day range %q runs backwards (weeks start on mon)", part)
		}
		for m := ma; m <= mb; m++ {
			out = append(out, time.Weekday((m+1)%7))
		}
	}
	return out, nil
}

// parseWindow reads "HH:MM-HH:MM".
func parseWindow(s string) (Window, error) {
	from, to, ok := strings.Cut(s, "-")
	a, err1 := parseClock(from)
	b, err2 := parseClock(to)
	if !ok || err1 != nil || err2 != nil || a >= 1440 {
		return Window{}, fmt.Errorf("want \"HH:MM-HH:MM\" (00:00 to 24:00), got %q", s)
	}
	if b <= a {
		return Window{}, fmt.Errorf("window %q ends before it starts", s)
	}
	return Window{Start: a, End: b}, nil
}

func parseClock(s string) (int, error) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok || len(h) != 2 || len(m) != 2 {
		return 0, fmt.Errorf("bad time %q", s)
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || hh < 0 || mm < 0 || mm > 59 || hh > 24 || hh == 24 && mm != 0 {
		return 0, fmt.Errorf("bad time %q", s)
	}
	return hh*60 + mm, nil
}

func parseDateRange(s string) (DateRange, error) {
	from, to, isRange := strings.Cut(s, "..")
	if !isRange {
		to = from
	}
	a, err1 := time.Parse(time.DateOnly, strings.TrimSpace(from))
	b, err2 := time.Parse(time.DateOnly, strings.TrimSpace(to))
	if err1 != nil || err2 != nil {
		return DateRange{}, fmt.Errorf("want YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD, got %q", s)
	}
	r := DateRange{From: dateNum(a.Date()), To: dateNum(b.Date())}
	if r.To < r.From {
		return DateRange{}, fmt.Errorf("range %q ends before it starts", s)
	}
	return r, nil
}

func dateNum(y int, m time.Month, d int) int { return y*10000 + int(m)*100 + d }

// holiday reports whether the civil date is a holiday.
func (c *Calendar) holiday(y int, m time.Month, d int) bool {
	n := dateNum(y, m, d)
	for _, r := range c.Holidays {
		if r.From > n {
			return false
		}
		if n <= r.To {
			return true
		}
	}
	return false
}

// Add returns the instant at which d of business time has passed since
// from, or Never if the calendar does not open for that long within ten
// years.
func (c *Calendar) Add(from time.Time, d time.Duration) time.Time {
	left := d
	local := from.In(c.Location)
	y, m, day := local.Date()
	for range searchDays {
		wd := time.Date(y, m, day, 12, 0, 0, 0, time.UTC).Weekday()
		if ws := c.Hours[wd]; len(ws) > 0 && !c.holiday(y, m, day) {
			for _, w := range ws {
				s, e := wallInstant(y, m, day, w.Start, c.Location), wallInstant(y, m, day, w.End, c.Location)
				if !e.After(from) {
					continue
				}
				if s.Before(from) {
					s = from
				}
				if open := e.Sub(s); open >= left {
					return s.Add(left)
				} else {
					left -= open
				}
			}
		}
		n := time.Date(y, m, day+1, 12, 0, 0, 0, time.UTC)
		y, m, day = n.Date()
	}
	return Never
}

// wallInstant returns the instant loc's clock shows minute (since midnight
// of y-m-d; 1440 is the next midnight): for a wall time a daylight-saving
// change skips, the instant the skip ends; for one it repeats, the first.
func wallInstant(y int, m time.Month, d, minute int, loc *time.Location) time.Time {
	t := time.Date(y, m, d, 0, minute, 0, 0, loc)
	want := time.Date(y, m, d, 0, minute, 0, 0, time.UTC)
	shown := time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), 0, 0, time.UTC)
	if !shown.Equal(want) {
		// Skipped: the clock jumped past it; the skip ends at the zone
		// boundary next to t.
		start, end := t.ZoneBounds()
		if shown.Before(want) {
			return end
		}
		return start
	}
	start, _ := t.ZoneBounds()
	if !start.IsZero() {
		_, before := start.Add(-time.Second).Zone()
		_, now := t.Zone()
		if before > now { // the clock was set back at start
			alt := t.Add(-time.Duration(before-now) * time.Second)
			if alt.Before(start) {
				return alt
			}
		}
	}
	return t
}
