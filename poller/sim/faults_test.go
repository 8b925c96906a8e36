package sim_test

// Tests of injected faults (faults.go): each kind as served, the rate, and
// faults on task_id look-ups as the relay's client sees them.

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/poller/sim"
)

func TestSim_FaultKinds(t *testing.T) {
	tests := []struct {
		kind       sim.FaultKind
		wantStatus int
		check      func(t *testing.T, rec *httptest.ResponseRecorder)
	}{
		{kind: sim.Status401, wantStatus: 401},
		{kind: sim.Status429, wantStatus: 429, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			assert.Empty(t, rec.Header().Get("Retry-After"))
		}},
		{kind: sim.Status429RetryAfter, wantStatus: 429, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			assert.Equal(t, "1", rec.Header().Get("Retry-After"))
		}},
		{kind: sim.Status500, wantStatus: 500},
		{kind: sim.Status503, wantStatus: 503, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			assert.Contains(t, rec.Body.String(), "<html>")
		}},
		{kind: sim.ErrorEnvelope, wantStatus: 200, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			var env envelope
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &env))
			assert.True(t, env.Status != "success" || env.Code != 200, rec.Body.String())
		}},
		{kind: sim.Truncated, wantStatus: 200, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			assert.False(t, json.Valid(rec.Body.Bytes()))
			assert.True(t, strings.HasPrefix(rec.Body.String(), `{"status":"success"`))
		}},
		{kind: sim.NotJSON, wantStatus: 200, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			assert.False(t, json.Valid(rec.Body.Bytes()))
			assert.Equal(t, "text/html", rec.Header().Get("Content-Type"))
		}},
		{kind: sim.Slow, wantStatus: 200, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			assert.True(t, json.Valid(rec.Body.Bytes()))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.kind.String(), func(t *testing.T) {
			s := newSim(t, sim.Options{Tasks: 10, Seed: 1, Faults: sim.Faults{Rate: 1, Kinds: []sim.FaultKind{tt.kind}, SlowDelay: 20 * time.Millisecond}})
			start := time.Now()
			rec := get(s, "")
			assert.Equal(t, tt.wantStatus, rec.Code)
			if tt.kind == sim.Slow {
				assert.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond)
			}
			if tt.check != nil {
				tt.check(t, rec)
			}
		})
	}
}

func TestSim_FaultRate(t *testing.T) {
	s := newSim(t, sim.Options{Tasks: 5, Seed: 11, Faults: sim.Faults{Rate: 0.3, Kinds: []sim.FaultKind{sim.Status500, sim.Status429}}})
	const n = 2000
	counts := map[int]int{}
	for range n {
		counts[get(s, "").Code]++
	}
	failed := counts[500] + counts[429]
	assert.Equal(t, n, counts[200]+failed, "only the chosen kinds: %v", counts)
	assert.InDelta(t, 0.3, float64(failed)/n, 0.04)
	assert.InDelta(t, counts[500], counts[429], n*0.06, "kinds picked evenly")
	assert.Equal(t, int64(n), s.Requests())

	s.SetFaults(sim.Faults{})
	for range 50 {
		assert.Equal(t, http.StatusOK, get(s, "").Code)
	}
}

// TestSim_LookupFaults serves task_id look-ups through a real client: a
// failed look-up is an error, never a page listing nothing, while a
// deleted task's look-up is a page listing nothing.
func TestSim_LookupFaults(t *testing.T) {
	s := newSim(t, sim.Options{Tasks: 40, Seed: 3})
	require.True(t, s.Delete(5))
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	cl := client(srv, 200*time.Millisecond)
	ctx := context.Background()
	lookup := func(id int64) (*poller.Page, error) { return cl.List(ctx, poller.Query{TaskID: &id}) }

	p, err := lookup(5)
	require.NoError(t, err)
	assert.Zero(t, p.Total)
	assert.Empty(t, p.Tasks)

	kinds := []sim.FaultKind{sim.Status401, sim.Status429, sim.Status500, sim.Status503, sim.ErrorEnvelope, sim.Truncated, sim.NotJSON, sim.Slow}
	for _, k := range kinds {
		s.SetFaults(sim.Faults{Rate: 1, Kinds: []sim.FaultKind{k}, Scope: sim.LookupsOnly, SlowDelay: 2 * time.Second})
		for _, id := range []int64{5, 6} {
			for range 3 { // both ErrorEnvelope variants, likely
				p, err := lookup(id)
				var ae *poller.APIError
				assert.True(t, errors.As(err, &ae), "%s: look-up of %d: %v", k, id, err)
				assert.Nil(t, p, "%s: look-up of %d gave a page", k, id)
			}
		}
		_, err := cl.List(ctx, poller.Query{PageSize: 10})
		assert.NoError(t, err, "%s: lists do not fail", k)
	}
	s.SetFaults(sim.Faults{Rate: 1, Kinds: []sim.FaultKind{sim.Status500}, Scope: sim.ListsOnly})
	p, err = lookup(6)
	require.NoError(t, err, "look-ups do not fail")
	assert.Equal(t, 1, p.Total)
	_, err = cl.List(ctx, poller.Query{PageSize: 10})
	assert.Error(t, err)
	s.SetFaults(sim.Faults{Rate: 1, Kinds: []sim.FaultKind{sim.Status500}})
	_, err = lookup(6)
	assert.Error(t, err, "AllRequests: look-ups fail too")
	cl.CloseIdleConnections()
}
