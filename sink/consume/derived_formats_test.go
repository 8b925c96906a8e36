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
		for _, format := range []string{"json", "cloudevents", "binary"} {
			h, body, err := sink.WebhookMessage(format, &ev)
			require.NoError(t, err)
			got, err := consume.DecodeHTTP(h, body)
			require.NoError(t, err, "%s %s", format, ev.ID)
			assert.Equal(t, ev.ID, got.ID, format)
			assert.Equal(t, ev.Type, got.Type, format)
			assert.Equal(t, ev.Offset, got.Offset, format)
			require.NotNil(t, got.Data.Derived, format)
			assert.Equal(t, "stalled", got.Data.Derived.Rule, format)
		}
	}
}
