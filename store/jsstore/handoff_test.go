package jsstore

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestParseCursorRec: a cursor written before owner records (a bare
// offset) reads as released at generation 0; a record reads whole.
func TestParseCursorRec(t *testing.T) {
	assert.Equal(t, cursorRec{Off: 123}, parseCursorRec([]byte("123")))
	assert.Equal(t, cursorRec{}, parseCursorRec(nil))
	assert.Equal(t, cursorRec{Off: 9, Owner: "r2", Gen: 4, Done: []uint64{11, 14}},
		parseCursorRec([]byte(`{"off":9,"owner":"r2","gen":4,"done":[11,14]}`)))
}
