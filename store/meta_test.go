package store

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMeta(t *testing.T) {
	db := mustOpen(t)
	_, err := db.Meta("poller.tiers")
	assert.ErrorIs(t, err, ErrNotFound)

	require.NoError(t, db.SetMeta("poller.tiers", []byte(`{"hot":[1,2]}`)))
	v, err := db.Meta("poller.tiers")
	require.NoError(t, err)
	assert.Equal(t, `{"hot":[1,2]}`, string(v))

	require.NoError(t, db.SetMeta("poller.tiers", nil))
	_, err = db.Meta("poller.tiers")
	assert.ErrorIs(t, err, ErrNotFound)
	assert.Error(t, db.SetMeta("", []byte("x")))
}

func TestInitialized(t *testing.T) {
	db := mustOpen(t)
	ok, err := db.Initialized()
	require.NoError(t, err)
	assert.False(t, ok)
	require.NoError(t, db.SetInitialized())
	require.NoError(t, db.SetInitialized())
	ok, err = db.Initialized()
	require.NoError(t, err)
	assert.True(t, ok)
}
