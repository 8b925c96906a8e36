package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/diff"
)

// TestEventPrinter: the demo's line of every type's sample, decoded from
// its body as the demo reads NATS messages (a task.deleted has no Edit
// then).
func TestEventPrinter(t *testing.T) {
	var out bytes.Buffer
	p := &eventPrinter{w: &out}
	for _, s := range diff.SampleEvents() {
		var ev diff.Event
		require.NoError(t, json.Unmarshal(s.Body, &ev))
		p.Print(&ev)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	require.Len(t, lines, len(diff.Types))
	for i, want := range []string{
		"created",
		"assigned to incs_1 (was incs_2)",
		"not_started → in_progress",
		"“已经跟进 — customer will call back <tomorrow> & confirm” — incs_1",
		"log of unknown type 9 (kept raw)",
		"renamed: Callback 4.8 → Callback 4.8 (VIP); phone: 6281519140316 → 6281519140361",
		"comment edited: “已经跟进 — customer will call back <Thursday> & confirm”",
		"deleted",
	} {
		assert.True(t, strings.HasSuffix(lines[i], "  "+want), "%s: %q", diff.Types[i], lines[i])
		assert.Contains(t, lines[i], diff.Types[i])
	}
}
