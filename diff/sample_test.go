package diff

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSampleEvents(t *testing.T) {
	evs := SampleEvents()
	require.Len(t, evs, len(Types))
	for i, ev := range evs {
		assert.Equal(t, Types[i], ev.Type)
		assert.Equal(t, uint64(i+1), ev.Offset)
		assert.Equal(t, "237", ev.Subject)
		_, off := ev.Time.Zone()
		assert.Equal(t, 8*3600, off)
		var back Event
		require.NoError(t, json.Unmarshal(ev.Body, &back))
		assert.Equal(t, ev.ID, back.ID)
		assert.NotContains(t, string(ev.Data.Task), `"logs"`)
	}
	assert.Equal(t, "incs_2", evs[1].Data.PreviousAssignee)
	assert.Equal(t, 0, evs[2].Data.PreviousStatus)
	assert.Equal(t, 1, evs[2].Data.Status)
	assert.NotEmpty(t, evs[3].Data.Comment)
	evs[0].ID = "changed"
	assert.Equal(t, "log-531", SampleEvents()[0].ID, "fresh copies")
}

func TestSampleStatusChanges(t *testing.T) {
	evs := SampleStatusChanges()
	require.Len(t, evs, StatusTerminated+1)
	for s, ev := range evs {
		assert.Equal(t, TypeTaskStatusChanged, ev.Type)
		assert.Equal(t, s, ev.Data.Status)
		assert.NotEqual(t, s, ev.Data.PreviousStatus)
		var lg struct {
			Status    int `json:"status"`
			PreStatus int `json:"pre_status"`
		}
		require.NoError(t, json.Unmarshal(ev.Data.Log, &lg))
		assert.Equal(t, s, lg.Status)
		assert.Equal(t, ev.Data.PreviousStatus, lg.PreStatus)
	}
}

func TestSampleDerivedEvent(t *testing.T) {
	fired := SampleDerivedEvent("stalled", "task.stalled", "last_log", 4*time.Hour, false)
	resolved := SampleDerivedEvent("stalled", "task.stalled", "last_log", 4*time.Hour, true)
	require.NotNil(t, fired.Data.Derived)
	assert.Equal(t, 4*time.Hour, fired.Data.Derived.DueAt.Sub(fired.Data.Derived.AnchorAt))
	assert.Equal(t, ResolvedType("task.stalled"), resolved.Type)
	assert.True(t, resolved.Data.Resolved)
	assert.NotEqual(t, fired.ID, resolved.ID)
}
