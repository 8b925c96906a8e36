package config

// The store section and NATS: store.type, the jetstream store's keys and
// defaults, NATS authentication and connection options, the subjects a
// NATS sink may not share with the store, and the hash replicas agree on.

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/store/jsstore"
)

// Store types (store.type).
const (
	StoreBbolt     = "bbolt"
	StoreJetStream = "jetstream"
)

// Defaults of the jetstream store.
const (
	defaultStoreName       = "incs"
	defaultStoreReplicas   = 1
	defaultStoreLease      = 10 * time.Second
	defaultStorePartitions = 12
	defaultStoreCacheMB    = jsstore.DefaultCacheBytes >> 20 // the store's own default, not a copy
)

// JetStreamStoreConfig is the part of the store section that selects the
// backend and, with store.type jetstream, says where and how the relay
// keeps its state on a NATS JetStream cluster.
type JetStreamStoreConfig struct {
	// Type is bbolt (the default: one relay, one file) or jetstream.
	Type string `yaml:"type"`
	// URL is the cluster (comma-separated nats:// URLs); empty means the
	// URL of the config's NATS sink.
	URL string `yaml:"url"`
	// Replicas of every stream and bucket the relay creates (1 to 5).
	Replicas int `yaml:"replicas"`
	// Lease is the leader lease TTL: whole seconds, at least 2s.
	Lease Duration `yaml:"lease"`
	// Name prefixes every stream and bucket, so two relays on one cluster
	// never share state.
	Name string `yaml:"name"`
	// Partitions spread delivery over the replicas; fixed when the stream
	// is created.
	Partitions int `yaml:"partitions"`
	// MigrateFrom is a bbolt file carried over on the first start on an
	// empty store.
	MigrateFrom string `yaml:"migrate_from"`
	// CacheMB bounds, in MiB, the event messages a replica keeps in memory
	// for delivery (the newest it stored or read); the rest are read from
	// the stream. Each replica's own: not in Hash.
	CacheMB int `yaml:"cache_mb"`

	NATSAuth `yaml:",inline"`
}

// NATSAuth are the authentication options of a NATS connection (the
// jetstream store and NATS sinks): a credentials file, an nkey seed file,
// and TLS files. A user and password go into the URL.
type NATSAuth struct {
	Creds string   `yaml:"creds"`
	NKey  string   `yaml:"nkey"`
	TLS   *TLSFile `yaml:"tls"`
}

// TLSFile names the PEM files of a TLS connection: the CA that signed the
// servers, and this client's certificate and key (both or neither).
type TLSFile struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// NATSSinkOptions are the NATS sink's keys besides the common ones.
type NATSSinkOptions struct {
	NATSAuth `yaml:",inline"`
	// DataDir is where an embedded NATS server keeps its JetStream data;
	// default beside store.path (required with store.type jetstream).
	DataDir string `yaml:"data_dir"`
}

// JetStream reports whether the config keeps its state on a JetStream
// cluster.
func (c *Config) JetStream() bool { return c.Store.Type == StoreJetStream }

// set reports whether any authentication option is given.
func (a *NATSAuth) set() bool { return a.Creds != "" || a.NKey != "" || a.TLS != nil }

var storeNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// validateStore checks the store section and fills the jetstream
// defaults. pathSet says whether the file sets store.path itself.
func (c *Config) validateStore(bad func(key, format string, args ...any) error) error {
	s := &c.Store
	if c.Store.Retention.D() <= 0 {
		return bad("store.retention", "must be above 0")
	}
	switch s.Type {
	case "", StoreBbolt:
		s.Type = StoreBbolt
		if strings.TrimSpace(s.Path) == "" {
			return bad("store.path", "required: the bbolt file")
		}
		for _, k := range []struct {
			key string
			set bool
		}{
			{"url", s.URL != ""}, {"replicas", s.Replicas != 0}, {"lease", s.Lease != 0}, {"name", s.Name != ""},
			{"partitions", s.Partitions != 0}, {"migrate_from", s.MigrateFrom != ""}, {"cache_mb", s.CacheMB != 0},
			{"creds", s.Creds != ""}, {"nkey", s.NKey != ""}, {"tls", s.TLS != nil},
		} {
			if k.set {
				return bad("store."+k.key, "only with store.type: jetstream")
			}
		}
		return nil
	case StoreJetStream:
	default:
		return bad("store.type", "must be bbolt or jetstream, got %q", s.Type)
	}
	if s.pathSet {
		return bad("store.path", "not used with store.type: jetstream (the state lives in the cluster): remove it")
	}
	if s.URL == "" {
		if sc := c.firstNATSSink(); sc != nil {
			s.URL = sc.URL
			if !s.NATSAuth.set() {
				s.NATSAuth = sc.NATSAuth
			}
		} else {
			return bad("store.url", "required with store.type: jetstream: the NATS cluster's URLs (nats://n1:4222,nats://n2:4222)")
		}
	}
	if err := checkNATSURLs(s.URL); err != nil {
		return bad("store.url", "%v", err)
	}
	if s.Replicas == 0 {
		s.Replicas = defaultStoreReplicas
	}
	if s.Replicas < 1 || s.Replicas > 5 {
		return bad("store.replicas", "must be 1 to 5 (JetStream's limit), got %d", s.Replicas)
	}
	if s.Lease == 0 {
		s.Lease = Duration(defaultStoreLease)
	}
	if d := s.Lease.D(); d < 2*time.Second || d%time.Second != 0 {
		return bad("store.lease", "must be whole seconds and at least 2s (NATS key TTLs are whole seconds), got %s", d)
	}
	if s.Name == "" {
		s.Name = defaultStoreName
	}
	if !storeNameRE.MatchString(s.Name) {
		return bad("store.name", "%q: use 1 to 32 letters, digits, '_' and '-' (it prefixes stream and bucket names)", s.Name)
	}
	if s.Partitions == 0 {
		s.Partitions = defaultStorePartitions
	}
	if s.Partitions < 1 || s.Partitions > 256 {
		return bad("store.partitions", "must be 1 to 256, got %d", s.Partitions)
	}
	if s.CacheMB == 0 {
		s.CacheMB = defaultStoreCacheMB
	}
	if s.CacheMB < 1 || s.CacheMB > 65536 {
		return bad("store.cache_mb", "must be 1 to 65536 (MiB of event messages kept in memory), got %d", s.CacheMB)
	}
	if s.MigrateFrom != "" && strings.TrimSpace(s.MigrateFrom) == "" {
		return bad("store.migrate_from", "empty file name")
	}
	return s.NATSAuth.validate("store", bad)
}

// firstNATSSink is the first NATS sink that connects to a server (not an
// embedded one), or nil.
func (c *Config) firstNATSSink() *SinkConfig {
	for i := range c.Sinks {
		if s := &c.Sinks[i]; s.Type == SinkNATS && s.URL != "" && s.URL != "embedded" {
			return s
		}
	}
	return nil
}

// validateNATSOptions checks a sink's NATS-only keys: authentication and
// the embedded server's data_dir.
func (c *Config) validateNATSOptions(key string, s *SinkConfig, bad func(key, format string, args ...any) error) error {
	if s.Type != SinkNATS {
		for _, k := range []struct {
			f   string
			set bool
		}{{"creds", s.Creds != ""}, {"nkey", s.NKey != ""}, {"tls", s.TLS != nil}, {"data_dir", s.DataDir != ""}} {
			if k.set {
				return bad(key+"."+k.f, "not a setting of a %s sink (only nats)", s.Type)
			}
		}
		return nil
	}
	if s.URL == "embedded" {
		if s.NATSAuth.set() {
			return bad(key+".url", "an embedded server takes no creds, nkey or tls")
		}
		if s.DataDir == "" && c.JetStream() {
			return bad(key+".data_dir", "required for an embedded server with store.type: jetstream (there is no store.path to keep its data beside)")
		}
	} else if s.DataDir != "" {
		return bad(key+".data_dir", "only for url: embedded")
	}
	if c.JetStream() && sharesHost(s.URL, c.Store.URL) {
		subjects := append([]string{s.Subject}, streamSubjects(s)...)
		store := jsstore.SubjectPrefix(c.Store.Name) + ">"
		for _, subj := range subjects {
			if subjectsOverlap(subj, store) {
				return bad(key+".subject", "%q overlaps the store's subjects (%s) on the same cluster: the store's stream would take the sink's messages; set another subject (or store.name)", subj, store)
			}
		}
	}
	return s.NATSAuth.validate(key, bad)
}

func streamSubjects(s *SinkConfig) []string {
	if s.Stream == nil {
		return nil
	}
	return s.Stream.Subjects
}

// subjectsOverlap reports whether some subject matches both NATS subject
// patterns a and b ("*" one token, ">" one or more at the end). A sink
// subject's template tokens ("{task_id}") may become any token.
func subjectsOverlap(a, b string) bool {
	return server.SubjectsCollide(subjectFilter(a), subjectFilter(b))
}

// subjectFilter is the NATS filter a subject or a sink's subject template
// covers (sink.Subject.Wildcard); a pattern that is no valid template (it
// has wildcards) keeps its tokens, a template token becoming "*".
func subjectFilter(subj string) string {
	if t, err := sink.ParseSubject(subj); err == nil {
		return t.Wildcard()
	}
	toks := strings.Split(subj, ".")
	for i, tok := range toks {
		if strings.Contains(tok, "{") {
			toks[i] = "*"
		}
	}
	return strings.Join(toks, ".")
}

// sharesHost reports whether two comma-separated URL lists name a common
// host:port.
func sharesHost(a, b string) bool {
	hosts := map[string]bool{}
	for _, u := range strings.Split(a, ",") {
		hosts[HostOf(strings.TrimSpace(u))] = true
	}
	for _, u := range strings.Split(b, ",") {
		if h := HostOf(strings.TrimSpace(u)); h != "?" && hosts[h] {
			return true
		}
	}
	return false
}

// validate checks the shape of the options; the files are read when the
// connection is made (NATSOptions).
func (a *NATSAuth) validate(prefix string, bad func(key, format string, args ...any) error) error {
	if a.Creds != "" && a.NKey != "" {
		return bad(prefix+".nkey", "set creds or nkey, not both")
	}
	if t := a.TLS; t != nil {
		if t.CA == "" && t.Cert == "" && t.Key == "" {
			return bad(prefix+".tls", "set ca, or cert and key, or all three")
		}
		if (t.Cert == "") != (t.Key == "") {
			return bad(prefix+".tls", "cert and key go together")
		}
	}
	return nil
}

// checkNATSURLs checks a comma-separated list of NATS URLs.
func checkNATSURLs(list string) error {
	for _, u := range strings.Split(list, ",") {
		if err := checkURL(strings.TrimSpace(u), "nats", "tls", "ws", "wss"); err != nil {
			return err
		}
	}
	return nil
}

// NATSOptions reads the authentication files and returns the connection
// options. A file that cannot be read or parsed is a *Error naming
// prefix's key (e.g. "store.creds", "sinks[0].tls.cert"); its content is
// never quoted.
func (c *Config) NATSOptions(prefix string, a NATSAuth) ([]nats.Option, error) {
	bad := func(key string, err error) error {
		msg := err.Error()
		var pe *os.PathError
		if errors.As(err, &pe) {
			msg = "cannot read " + pe.Path + ": " + pe.Err.Error()
		}
		return &Error{File: c.path, Key: prefix + "." + key, Msg: msg}
	}
	var opts []nats.Option
	if a.Creds != "" {
		b, err := os.ReadFile(a.Creds)
		if err != nil {
			return nil, bad("creds", err)
		}
		if _, err := nkeys.ParseDecoratedJWT(b); err != nil {
			return nil, bad("creds", fmt.Errorf("%s is not a NATS credentials file (no user JWT)", a.Creds))
		}
		if _, err := nkeys.ParseDecoratedNKey(b); err != nil {
			return nil, bad("creds", fmt.Errorf("%s is not a NATS credentials file (no nkey seed)", a.Creds))
		}
		opts = append(opts, nats.UserCredentials(a.Creds))
	}
	if a.NKey != "" {
		o, err := nats.NkeyOptionFromSeed(a.NKey)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				return nil, bad("nkey", err)
			}
			return nil, bad("nkey", fmt.Errorf("%s holds no nkey seed", a.NKey))
		}
		opts = append(opts, o)
	}
	if t := a.TLS; t != nil {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if t.CA != "" {
			pem, err := os.ReadFile(t.CA)
			if err != nil {
				return nil, bad("tls.ca", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, bad("tls.ca", fmt.Errorf("%s holds no PEM certificate", t.CA))
			}
			cfg.RootCAs = pool
		}
		if t.Cert != "" {
			if _, err := os.Stat(t.Cert); err != nil {
				return nil, bad("tls.cert", err)
			}
			if _, err := os.Stat(t.Key); err != nil {
				return nil, bad("tls.key", err)
			}
			cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
			if err != nil {
				return nil, bad("tls.cert", fmt.Errorf("%s and %s are not a PEM certificate and its key", t.Cert, t.Key))
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, nats.Secure(cfg))
	}
	return opts, nil
}

// CheckNATSFiles reads every authentication file the config names, as a
// connection would: check-config reports an unreadable one.
func (c *Config) CheckNATSFiles() error {
	if c.JetStream() {
		if _, err := c.NATSOptions("store", c.Store.NATSAuth); err != nil {
			return err
		}
	}
	for i := range c.Sinks {
		if s := &c.Sinks[i]; s.Type == SinkNATS {
			if _, err := c.NATSOptions(fmt.Sprintf("sinks[%d]", i), s.NATSAuth); err != nil {
				return err
			}
		}
	}
	return nil
}

// Hash is a digest of what every replica of one jetstream store must
// agree on, which is what cannot change while a relay runs (Compare): the
// store section, upstream.base_url and upstream.timezone. Each replica's
// own store keys (the bbolt path, migrate_from, the NATS authentication
// files, the order of the cluster's URLs, cache_mb) do not count, nor does
// anything a reload applies (sinks, poll, upstream's token and limits,
// rules, calendars, admin, log): replicas reload one by one, so they may
// differ there for a while. A replica whose hash differs from the
// leader's refuses to join.
func (c *Config) Hash() string {
	st := c.Store
	st.Path, st.MigrateFrom, st.NATSAuth = "", "", NATSAuth{}
	st.URL = "" // each replica may list the cluster's nodes in its own order
	st.CacheMB = 0
	b, err := json.Marshal(struct {
		Store    StoreConfig
		BaseURL  string
		Timezone string
	}{st, c.Upstream.BaseURL, c.Upstream.Timezone})
	if err != nil { // only plain values: cannot happen
		panic(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// StoreLabel names the store in messages: the bbolt file, or the
// jetstream store's name and cluster (without credentials).
func (c *Config) StoreLabel() string {
	if !c.JetStream() {
		return c.Store.Path
	}
	hosts := make([]string, 0, 3)
	for _, u := range strings.Split(c.Store.URL, ",") {
		hosts = append(hosts, HostOf(strings.TrimSpace(u)))
	}
	return fmt.Sprintf("jetstream %q on %s", c.Store.Name, strings.Join(hosts, ","))
}
