package jsonscan_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff/jsonscan"
)

func TestRawMemberAndElements(t *testing.T) {
	page := []byte(`{"status":"success","code":200,"data":{"total":2,"data":[{"id":1,"logs":[]} , {"id":2}]},"error":{}}`)
	data, ok := jsonscan.RawMember(page, "data")
	require.True(t, ok)
	arr, ok := jsonscan.RawMember(data, "data")
	require.True(t, ok)
	els := jsonscan.RawElements(arr)
	require.Len(t, els, 2)
	assert.Equal(t, `{"id":1,"logs":[]}`, string(els[0]))
	assert.Equal(t, `{"id":2}`, string(els[1]))
	_, ok = jsonscan.RawMember(page, "nope")
	assert.False(t, ok)
	last, ok := jsonscan.RawMember(page, "error")
	require.True(t, ok)
	assert.Equal(t, `{}`, string(last))
}

func TestValueEnd(t *testing.T) {
	b := []byte(`{"a":"x\\\"]","b":[1,{"c":"}"}],"n":-12.5e3}`)
	for _, tt := range []struct {
		at   int
		want string
	}{{5, `"x\\\"]"`}, {18, `[1,{"c":"}"}]`}, {36, `-12.5e3`}, {0, string(b)}} {
		end := jsonscan.ValueEnd(b, tt.at)
		require.Positive(t, end, "at %d", tt.at)
		assert.Equal(t, tt.want, string(b[tt.at:end]))
	}
	assert.Equal(t, -1, jsonscan.ValueEnd([]byte(`{"a":"open`), 0))
	assert.Equal(t, -1, jsonscan.ValueEnd(b, len(b)))
}
