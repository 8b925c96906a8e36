package sim_test

// The helpers the simulator's tests share, and the tests of the Sim as a
// whole: determinism and concurrent use.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/poller/sim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "tok-sim-test"

var (
	shanghai = mustLoad("Asia/Shanghai")
	fixedNow = time.Date(2026, 4, 8, 17, 30, 0, 0, shanghai)
)

func mustLoad(name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		return time.FixedZone("CST", 8*3600)
	}
	return loc
}

func newSim(t testing.TB, o sim.Options) *sim.Sim {
	t.Helper()
	if o.Token == "" {
		o.Token = token
	}
	if o.Now == nil {
		o.Now = func() time.Time { return fixedNow }
	}
	if o.Location == nil {
		o.Location = shanghai
	}
	return sim.New(o)
}

type envelope struct {
	Status  string          `json:"status"`
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
	Error   json.RawMessage `json:"error"`
}

type pageData struct {
	Total int         `json:"total"`
	Data  []diff.Task `json:"data"`
}

// get serves one request for the query string q and returns the recorder.
func get(s *sim.Sim, q string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, poller.TasksPath+"?"+q, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec
}

// list serves q and decodes a successful page.
func list(t testing.TB, s *sim.Sim, q string) pageData {
	t.Helper()
	rec := get(s, q)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	var env envelope
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &env))
	require.Equal(t, "success", env.Status)
	require.Equal(t, 200, env.Code)
	var pd pageData
	require.NoError(t, json.Unmarshal(env.Data, &pd))
	return pd
}

// all pages through q at page_size 100 and returns every task.
func all(t testing.TB, s *sim.Sim, q string) []diff.Task {
	t.Helper()
	var out []diff.Task
	for page := 1; page <= 1000; page++ {
		pd := list(t, s, fmt.Sprintf("%s&page=%d&page_size=100", q, page))
		out = append(out, pd.Data...)
		if len(pd.Data) < 100 {
			require.Len(t, out, pd.Total)
			return out
		}
	}
	t.Fatal("too many pages")
	return nil
}

func ids(ts []diff.Task) []int64 {
	out := make([]int64, len(ts), len(ts)+1)
	for i := range ts {
		out[i] = ts[i].ID
	}
	return out
}

func TestSim_Deterministic(t *testing.T) {
	a := newSim(t, sim.Options{Tasks: 200, Seed: 42})
	b := newSim(t, sim.Options{Tasks: 200, Seed: 42})
	c := newSim(t, sim.Options{Tasks: 200, Seed: 43})
	a.Step(100)
	b.Step(100)
	c.Step(100)
	// Requests and faults do not change the world.
	b.SetFaults(sim.Faults{Rate: 0.5, Kinds: []sim.FaultKind{sim.Status500}})
	for range 10 {
		get(b, "")
	}
	b.SetFaults(sim.Faults{})
	for _, q := range []string{"page_size=100", "page=2&page_size=100", "page=3&page_size=100"} {
		assert.Equal(t, get(a, q).Body.String(), get(b, q).Body.String())
	}
	assert.Equal(t, a.Logs(), b.Logs())
	assert.NotEqual(t, get(a, "page_size=100").Body.String(), get(c, "page_size=100").Body.String())
}

func TestSim_Concurrent(t *testing.T) {
	s := newSim(t, sim.Options{Tasks: 200, Seed: 9, Order: sim.UpdatedDesc})
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 30 {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s%s?page=%d&page_size=50", srv.URL, poller.TasksPath, i%5+1), nil)
				if !assert.NoError(t, err) {
					return
				}
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := srv.Client().Do(req)
				if !assert.NoError(t, err) {
					return
				}
				var env envelope
				assert.NoError(t, json.NewDecoder(resp.Body).Decode(&env), "goroutine %d", g)
				resp.Body.Close()
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			s.Step(5)
			s.SetFaults(sim.Faults{})
			_ = s.Logs()
		}
	})
	wg.Wait()
	assert.Equal(t, int64(120), s.Requests())
}
