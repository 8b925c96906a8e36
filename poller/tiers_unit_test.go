package poller

// Unit tests of Tiered's budget and schedule, small enough to run under
// the race detector and -short, where the simulations that cover them
// too are skipped: budgetAccount.spare, chooseBudget's page count and
// End restoring the schedule after a failed cycle.

import (
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBudgetAccount_Spare: spare is the budget less the ceilings' need
// rounded up, negative when the budget is short.
func TestBudgetAccount_Spare(t *testing.T) {
	for _, c := range []struct {
		need   float64
		budget int
		want   int
	}{
		{0, 10, 10},
		{7, 10, 3},
		{7.2, 10, 2},
		{10, 10, 0},
		{10.5, 10, -1},
		{12, 10, -2},
	} {
		a := budgetAccount{need: c.need}
		assert.Equal(t, c.want, a.spare(c.budget), "need %v, budget %d", c.need, c.budget)
	}
}

// unitTiered returns a Tiered, ready, whose lookback window at now is
// tiled by bands of the given sizes (two days each, the first read in
// full longest ago) and an empty newest window, each band with open
// tasks of status 0 and 1.
func unitTiered(t *testing.T, now time.Time, pageSize int, sizes ...int) *Tiered {
	t.Helper()
	tr := NewTiered(Config{Location: time.UTC, RateLimit: -1, PageSize: pageSize,
		Interval: 10 * time.Second, FullSweep: 10 * time.Minute, Lookback: 30 * 24 * time.Hour}, nil, zerolog.Nop())
	const span = 2 * 86400
	lb := WallTimeOf(now.Add(-tr.cfg.Lookback), time.UTC)
	for i, n := range sizes {
		from := lb + WallTime(i*span)
		read := now.Add(-time.Duration(len(sizes)-i) * time.Minute)
		tr.bands = append(tr.bands, &band{from: from, to: from + span - 1, size: n,
			open: [2]int{n / 10, n / 20}, lastFull: read, lastOpenAt: read, known: true})
	}
	tr.newest = band{from: lb + WallTime(len(sizes)*span), lastFull: now, lastOpenAt: now}
	tr.ready, tr.cycle = true, 7
	return tr
}

// TestTiered_ChooseBudget: the budget buys bands, least recently read
// first, as long as their pages fit: a band whose pages take exactly what
// is left is bought.
func TestTiered_ChooseBudget(t *testing.T) {
	now := time.Date(2026, 4, 8, 9, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		left int
		want []bool
	}{
		// Pages: 1, 3 (250 tasks), 1, 1.
		{0, []bool{false, false, false, false}},
		{1, []bool{true, false, false, false}},
		{3, []bool{true, false, false, false}}, // the second band's 3 pages do not fit in 2
		{4, []bool{true, true, false, false}},
		{5, []bool{true, true, true, false}},
		{6, []bool{true, true, true, true}},
		{9, []bool{true, true, true, true}},
	} {
		tr := unitTiered(t, now, 100, 100, 250, 100, 40)
		got := tr.chooseBudget(make([]bool, 4), c.left)
		assert.Equal(t, c.want, got, "left %d", c.left)
		want := 0.0
		for i, ok := range c.want {
			if ok {
				want -= float64(tr.bands[i].weight())
			}
		}
		assert.Equal(t, want, tr.fullCredit, "left %d: the bands bought count toward the ceiling", c.left)
	}

	t.Run("excluded", func(t *testing.T) {
		tr := unitTiered(t, now, 100, 100, 250, 100, 40)
		got := tr.chooseBudget([]bool{true, false, true, false}, 4)
		assert.Equal(t, []bool{false, true, false, true}, got)
	})
}

// TestTiered_FailedCycleRestoresSchedule: planning a cycle moves the
// credits and the open ring's cursor; a cycle that fails puts them back as
// they were before it, and one that succeeds keeps them as planned.
func TestTiered_FailedCycleRestoresSchedule(t *testing.T) {
	now := time.Date(2026, 4, 8, 9, 0, 0, 0, time.UTC)
	tr := unitTiered(t, now, 100, 500, 500, 500, 500)
	before := schedule{fullCredit: 5, openCredit: 3, openCursor: tr.bands[1].from}
	tr.schedule = before

	tr.Cycle(now)
	planned := tr.schedule
	assert.NotEqual(t, before.fullCredit, planned.fullCredit, "planning spends the finished tier's credit")
	assert.NotEqual(t, before.openCredit, planned.openCredit, "planning spends the open tier's credit")
	assert.NotEqual(t, before.openCursor, planned.openCursor, "planning moves the open ring on")
	tr.End(errors.New("failed"))
	assert.Equal(t, before, tr.schedule, "a failed cycle restores the schedule")

	tr.Cycle(now.Add(10 * time.Second))
	planned = tr.schedule
	require.NotEqual(t, before, planned)
	tr.End(nil)
	assert.Equal(t, planned, tr.schedule, "a successful cycle keeps the schedule it planned")
}
