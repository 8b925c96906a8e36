package sim_test

// Tests of the demo's world (demo.go): it lives on, at its pace, bounded.

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller/sim"
)

// TestSim_DemoLives runs the demo's world over simulated hours: it keeps
// making every kind of change at a pace a person can follow, and its size
// stays bounded.
func TestSim_DemoLives(t *testing.T) {
	c := newClock()
	o := sim.DemoOptions()
	o.Seed, o.Now = 17, c.Now
	s := newSim(t, o)
	const hours = 6
	steps := int(hours * time.Hour / o.Tick)
	window := int(10 * time.Minute / o.Tick)
	var sizes []int
	var kinds map[string]int
	for i := range steps {
		if i%window == 0 {
			if kinds != nil {
				for _, k := range []string{"created", "status", "comment", "edit"} {
					assert.Positive(t, kinds[k], "window ending at step %d: %s (%v)", i, k, kinds)
				}
			}
			kinds = map[string]int{}
		}
		c.Add(o.Tick)
		n, e := s.LogCount(), s.EditCount()
		s.Step(o.ChangesPerTick)
		for _, l := range s.LogsFrom(n) {
			switch l.Type {
			case diff.LogCreated:
				kinds["created"]++
			case diff.LogStatusChanged:
				kinds["status"]++
			case diff.LogCommented:
				kinds["comment"]++
			}
		}
		for _, ed := range s.EditsFrom(e) {
			kinds["edit"]++
			kinds[ed.Kind.String()]++
		}
		require.LessOrEqual(t, s.TaskCount(), o.MaxTasks)
		if i%window == window-1 {
			size := 0
			for _, task := range all(t, s, "") {
				b, _ := json.Marshal(task)
				size += len(b)
			}
			sizes = append(sizes, size)
		}
	}
	assert.LessOrEqual(t, len(s.Logs()), 2*o.HistoryLimit)
	assert.LessOrEqual(t, len(s.Edits()), 2*o.HistoryLimit)
	assert.Greater(t, s.LogCount(), 2*o.HistoryLimit, "more made than kept")
	assert.Less(t, slices.Max(sizes), 3*sizes[len(sizes)/2]+1, "served size bounded: %v", sizes)
	assert.Less(t, slices.Max(sizes), o.MaxTasks<<13, "at most 8 KiB a task: %v", sizes)

	// The pace: a new task every 15-45s, changes of every kind.
	var deleted, commentEdits, fieldEdits int
	for _, e := range s.Edits() {
		switch e.Kind {
		case sim.TaskDeleted:
			deleted++
		case sim.CommentEdited:
			commentEdits++
		case sim.TaskEdited:
			fieldEdits++
		}
	}
	lastHour := int(time.Hour / o.Tick)
	n0 := s.LogCount()
	news := 0
	for range lastHour {
		c.Add(o.Tick)
		n := s.LogCount()
		s.Step(1)
		for _, l := range s.LogsFrom(n) {
			if l.Type == diff.LogCreated {
				news++
			}
		}
	}
	perTask := time.Hour / time.Duration(max(news, 1))
	assert.True(t, perTask >= 15*time.Second && perTask <= 45*time.Second, "a new task every %s", perTask)
	perMinute := float64(s.LogCount()-n0) / 60
	assert.True(t, perMinute >= 5 && perMinute <= 40, "%.1f logs a minute", perMinute)
	assert.Positive(t, deleted)
	assert.Positive(t, commentEdits)
	assert.Positive(t, fieldEdits)
}
