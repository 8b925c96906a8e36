package sink

// Tests of FilterConfig (filter.go): the events it lets through and its
// validation.

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

func TestFilterConfig(t *testing.T) {
	evs := diff.SampleEvents() // created(0), assigned(0, incs_1), status 0→1, commented(1), logged(1); task type 3
	created, assigned, changed := &evs[0], &evs[1], &evs[2]
	tests := []struct {
		name string
		cfg  FilterConfig
		ev   *diff.Event
		want bool
	}{
		{name: "none", cfg: FilterConfig{}, ev: created, want: true},
		{name: "status match", cfg: FilterConfig{Statuses: []int{1, 2}}, ev: changed, want: true},
		{name: "status miss", cfg: FilterConfig{Statuses: []int{2}}, ev: changed},
		{name: "assignee from log", cfg: FilterConfig{Assignees: []string{"incs_1"}}, ev: assigned, want: true},
		{name: "assignee miss", cfg: FilterConfig{Assignees: []string{"incs_2"}}, ev: assigned},
		{name: "assignee from task when log has none", cfg: FilterConfig{Assignees: []string{"incs_1"}}, ev: created, want: true},
		{name: "type match", cfg: FilterConfig{TaskTypes: []int{3}}, ev: created, want: true},
		{name: "type miss", cfg: FilterConfig{TaskTypes: []int{1}}, ev: created},
		{name: "all match", cfg: FilterConfig{Statuses: []int{1}, Assignees: []string{"incs_1"}, TaskTypes: []int{3}}, ev: changed, want: true},
		{name: "one misses", cfg: FilterConfig{Statuses: []int{1}, Assignees: []string{"nobody"}, TaskTypes: []int{3}}, ev: changed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.cfg.Filter()
			if tt.name == "none" {
				assert.Nil(t, f)
				return
			}
			require.NotNil(t, f)
			assert.Equal(t, tt.want, f(tt.ev))
		})
	}
	t.Run("untyped task", func(t *testing.T) {
		ev := evs[0]
		ev.Data.Task = json.RawMessage(`{"id":1}`)
		assert.False(t, FilterConfig{TaskTypes: []int{3}}.Filter()(&ev))
	})
}

func TestFilterConfig_Events(t *testing.T) {
	evs := diff.SampleEvents()
	f := FilterConfig{Events: []string{diff.TypeTaskCommented}, Statuses: []int{1}}.Filter()
	require.NotNil(t, f)
	for _, ev := range evs {
		assert.Equal(t, ev.Type == diff.TypeTaskCommented, f(&ev), ev.Type)
	}
	assert.False(t, FilterConfig{Events: []string{diff.TypeTaskCommented}, Statuses: []int{2}}.Filter()(&evs[3]), "every list must match")
}

// TestFilterConfig_Edits: the changes that leave no log pass an events
// list naming them, and their status and assignee are the task's, since
// their data has none.
func TestFilterConfig_Edits(t *testing.T) {
	evs := diff.SampleEvents() // the task: in progress (1), incs_1, type 3
	edits := evs[slices.Index(diff.Types, diff.TypeTaskUpdated):]
	require.Len(t, edits, 3)
	for _, ev := range edits {
		require.Zero(t, ev.Data.Status, "no status member of its own")
		for name, tt := range map[string]struct {
			cfg  FilterConfig
			want bool
		}{
			"its type":          {FilterConfig{Events: []string{ev.Type}}, true},
			"another type":      {FilterConfig{Events: []string{diff.TypeTaskCommented}}, false},
			"the task's status": {FilterConfig{Statuses: []int{1}}, true},
			"another status":    {FilterConfig{Statuses: []int{0}}, false},
			"the assignee":      {FilterConfig{Assignees: []string{"incs_1"}}, true},
			"another assignee":  {FilterConfig{Assignees: []string{"incs_2"}}, false},
			"all of them":       {FilterConfig{Events: diff.Types, Statuses: []int{1}, Assignees: []string{"incs_1"}, TaskTypes: []int{3}}, true},
		} {
			assert.Equal(t, tt.want, tt.cfg.Filter()(&ev), "%s: %s", ev.Type, name)
		}
	}
	bare := diff.Deleted(9, nil, time.Now())
	assert.False(t, FilterConfig{Statuses: []int{0}}.Filter()(&bare), "no status kept: matches no status")
	assert.True(t, FilterConfig{Events: []string{diff.TypeTaskDeleted}}.Filter()(&bare))
}

func TestFilterConfig_Validate(t *testing.T) {
	assert.NoError(t, FilterConfig{Statuses: []int{0, 1, 2, 3}}.Validate())
	assert.EqualError(t, FilterConfig{Statuses: []int{1, 7}}.Validate(), "statuses: 7 is not a task status (0-3)")
	assert.Error(t, FilterConfig{Statuses: []int{-1}}.Validate())
}
