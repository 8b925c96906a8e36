package sink

// Benchmarks of the webhook sink's per-delivery work.

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// BenchmarkWebhookSignature signs an 825-byte body (the bench's average
// event) with one key. Before the pooled signer (hmac.New per signature):
// 1.58–1.96 µs, 690 B and 13 allocations; after: 0.92–0.94 µs, 160 B, 4.
func BenchmarkWebhookSignature(b *testing.B) {
	s := newWebhookSigner([][]byte{[]byte("0123456789abcdef0123456789abcdef")})
	body := make([]byte, 825)
	b.ReportAllocs()
	for range b.N {
		_ = s.sign("log-123456", "1700000000", body)
	}
}

// TestWebhookSigner_ReusedStates: a pooled signer gives, for every key and
// from concurrent callers, what a fresh HMAC gives.
func TestWebhookSigner_ReusedStates(t *testing.T) {
	k1, k2 := []byte("first key of 32 bytes, exactly!!"), []byte("second")
	s := newWebhookSigner([][]byte{k1, k2})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				id, ts, body := "log-"+string(rune('a'+g)), "17000000"+string(rune('0'+i%10)), []byte{byte(i), byte(g)}
				want := freshSig(k1, id, ts, body) + " " + freshSig(k2, id, ts, body)
				require.Equal(t, want, s.sign(id, ts, body))
			}
		})
	}
	wg.Wait()
}

// freshSig is one "v1," signature from a new HMAC.
func freshSig(key []byte, id, ts string, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}
