package relay

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config/configtest"
)

// testSecret is a valid Standard Webhooks secret.
const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// TestReadmeRecipes_Valid keeps the README's config recipes working.
func TestReadmeRecipes_Valid(t *testing.T) {
	b, err := os.ReadFile("../../../../README.md")
	require.NoError(t, err)
	readme := string(b)
	i := strings.Index(readme, "### Recipes")
	require.GreaterOrEqual(t, i, 0)
	section := readme[i:]
	section = section[:strings.Index(section, "### Commands")]
	blocks := strings.Split(section, "```yaml\n")[1:]
	require.Len(t, blocks, 4)
	lookup := configtest.Env("INCS_TOKEN", "t", "WEBHOOK_SECRET", testSecret, "SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/X",
		"FEISHU_WEBHOOK_URL", "https://open.feishu.cn/open-apis/bot/v2/hook/x", "FEISHU_SECRET", "s")
	for n, blk := range blocks {
		y := blk[:strings.Index(blk, "```")]
		cfg, err := config.Parse("README recipe", []byte(y), lookup)
		require.NoError(t, err, "recipe %d", n)
		require.NoError(t, CheckSinks(cfg), "recipe %d", n)
	}
}

// TestMaxInFlight_Defaults: a sink without max_in_flight gets 16, a NATS
// sink 512 (publishes pipeline on one connection); a set value wins.
func TestMaxInFlight_Defaults(t *testing.T) {
	assert.Equal(t, 16, maxInFlight(config.SinkConfig{Type: config.SinkWebhook}))
	assert.Equal(t, 16, maxInFlight(config.SinkConfig{Type: config.SinkSlack}))
	assert.Equal(t, 512, maxInFlight(config.SinkConfig{Type: config.SinkNATS}))
	assert.Equal(t, 8, maxInFlight(config.SinkConfig{Type: config.SinkNATS, MaxInFlight: 8}))
}
