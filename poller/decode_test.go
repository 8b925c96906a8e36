package poller_test

// Tests, fuzzing and a benchmark of the strict page decoder (decode.go).

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/poller/sim"
)

// simPage returns the body of page 1 of a simulated API with n tasks.
func simPage(t testing.TB, n int) []byte {
	t.Helper()
	s := sim.New(sim.Options{Tasks: n, Seed: 1, Extra: true,
		Now: func() time.Time { return time.Date(2026, 4, 8, 17, 30, 0, 0, time.UTC) }})
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, poller.TasksPath+"?page_size=100", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	return rec.Body.Bytes()
}

func FuzzDecodePage(f *testing.F) {
	valid := simPage(f, 3)
	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Add([]byte(`{"status":"success","code":200,"message":"","data":{"total":0,"data":[]},"error":{}}`))
	f.Add([]byte(`{"status":"success","code":200,"data":{"total":3,"data":null}}`))
	f.Add([]byte(`{"status":"error","code":"500","message":"系统繁忙","data":[]}`))
	f.Add([]byte(`<html><body>502 Bad Gateway</body></html>`))
	f.Add([]byte(`{"status":"success","code":200,"data":{"total":1,"data":[{"id":1,"logs":[{"id":0}]}]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := poller.DecodePage(body, 1, 100)
		if err != nil {
			assert.Nil(t, p)
			var ae *poller.APIError
			require.True(t, errors.As(err, &ae), "%T %v", err, err)
			assert.Contains(t, []poller.ErrorKind{poller.KindDecode, poller.KindEnvelope}, ae.Kind)
			assert.NotEmpty(t, ae.Error())
			return
		}
		require.NotNil(t, p)
		assert.GreaterOrEqual(t, p.Total, 0)
		for _, task := range p.Tasks {
			assert.Positive(t, task.ID)
			assert.True(t, json.Valid(task.Raw))
			for _, l := range task.Logs {
				assert.Positive(t, l.ID)
				assert.True(t, json.Valid(l.Raw))
			}
		}
	})
}

func TestDecodePage(t *testing.T) {
	p, err := poller.DecodePage(simPage(t, 3), 1, 100)
	require.NoError(t, err)
	assert.Equal(t, 3, p.Total)
	require.Len(t, p.Tasks, 3)
	assert.Contains(t, string(p.Tasks[0].Raw), `"priority":`)

	// A null list is an empty page where the API counts no tasks for it.
	p, err = poller.DecodePage([]byte(`{"status":"success","code":200,"data":{"total":100,"data":null}}`), 2, 100)
	require.NoError(t, err)
	assert.Empty(t, p.Tasks)
	_, err = poller.DecodePage([]byte(`{"status":"success","code":200,"data":{"total":101,"data":null}}`), 2, 100)
	assert.ErrorContains(t, err, "missing data.data")
}

func BenchmarkDecodePage(b *testing.B) {
	body := simPage(b, 100)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for range b.N {
		p, err := poller.DecodePage(body, 1, 100)
		if err != nil || len(p.Tasks) != 100 {
			b.Fatal(err)
		}
	}
}
