package poller

// The page decoders and the Retry-After parser, for the external tests:
// those import poller/sim, which imports poller, so they cannot be
// internal tests.
var (
	DecodePage      = decodePage
	DecodePageSkip  = decodePageSkip
	ParseRetryAfter = parseRetryAfter
)
