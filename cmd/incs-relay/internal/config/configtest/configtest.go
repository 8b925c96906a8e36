// Package configtest holds what tests of the config and of the commands
// need to write configs: an environment lookup, and NATS credentials and
// TLS files for the authentication options.
package configtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"
)

// Env returns a lookup (as config.Parse takes) of the key, value pairs kv.
func Env(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// WriteCreds writes a NATS credentials file (a user JWT and its nkey
// seed) into dir and returns its path.
func WriteCreds(t *testing.T, dir string) string {
	t.Helper()
	acc, err := nkeys.CreateAccount()
	require.NoError(t, err)
	user, err := nkeys.CreateUser()
	require.NoError(t, err)
	pub, err := user.PublicKey()
	require.NoError(t, err)
	tok, err := jwt.NewUserClaims(pub).Encode(acc)
	require.NoError(t, err)
	seed, err := user.Seed()
	require.NoError(t, err)
	b, err := jwt.FormatUserConfig(tok, seed)
	require.NoError(t, err)
	p := filepath.Join(dir, "relay.creds")
	require.NoError(t, os.WriteFile(p, b, 0o600))
	return p
}

// WriteTLS writes a self-signed CA certificate and a client certificate
// and key signed by it, as PEM files.
func WriteTLS(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	return WriteCertPair(t, dir, "client", &x509.Certificate{Subject: pkix.Name{CommonName: "relay"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
}

// WriteCertPair writes a new CA and a certificate from tmpl signed by it,
// with its key, as PEM files named after prefix.
func WriteCertPair(t *testing.T, dir, prefix string, tmpl *x509.Certificate) (ca, cert, key string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	certKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = big.NewInt(2), time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, &certKey.PublicKey, caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(certKey)
	require.NoError(t, err)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, prefix+"-"+name)
		require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", certDER), write("key.pem", "EC PRIVATE KEY", keyDER)
}

// JetStreamYAML is a config with store.type jetstream on a two-node
// cluster whose NATS sink is on the same cluster.
const JetStreamYAML = `
upstream:
  token: t
store:
  type: jetstream
  url: "nats://n1:4222,nats://n2:4222"
  name: relay
sinks:
  - name: bus
    type: nats
    url: "nats://n1:4222"
`
