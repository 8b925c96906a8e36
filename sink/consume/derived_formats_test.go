package consume_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/sink/consume"
)

// TestDecodeHTTP_DerivedEvents: a rule's derived event (id rule-…) reads
// back the same in every webhook format, as the relay sends it.
func TestDecodeHTTP_DerivedEvents(t *testing.T) {
	for _, resolved := range []bool{false, true} {
		ev := diff.SampleDerivedEvent("stalled", "task.stalled", "last_log", 4*time.Hour, resolved)
		for format, got := range decodeEveryFormat(t, &ev) {
			require.NotNil(t, got.Data.Derived, format)
			assert.Equal(t, "stalled", got.Data.Derived.Rule, format)
		}
	}
}

// decodeEveryFormat sends ev as the relay's webhook sink does in each
// format, decodes it with DecodeHTTP and checks the envelope; it returns
// the decoded events by format.
func decodeEveryFormat(t *testing.T, ev *diff.Event) map[string]*consume.Event {
	t.Helper()
	out := map[string]*consume.Event{}
	for _, format := range sink.WebhookFormats {
		h, body, err := sink.WebhookMessage(format, ev)
		require.NoError(t, err)
		got, err := consume.DecodeHTTP(h, body)
		require.NoError(t, err, "%s %s", format, ev.ID)
		assert.Equal(t, ev.ID, got.ID, format)
		assert.Equal(t, ev.Type, got.Type, format)
		assert.Equal(t, ev.Offset, got.Offset, format)
		out[format] = got
	}
	return out
}
