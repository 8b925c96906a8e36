package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
)

// deployDir is the repository's deploy/ directory, seen from this package.
const deployDir = "../../deploy"

// TestDeploy_ComposeCheckConfig runs check-config on the config
// deploy/compose.yaml mounts, once per relay service with that service's
// environment (compose's ${VAR:-default}s resolved as compose would with
// nothing set), and checks the topology the file promises: three NATS nodes
// in one JetStream cluster, two replicas, each with its own admin address.
func TestDeploy_ComposeCheckConfig(t *testing.T) {
	var compose struct {
		Services map[string]struct {
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			Volumes     []string          `yaml:"volumes"`
			Ports       []string          `yaml:"ports"`
		} `yaml:"services"`
	}
	readYAMLT(t, filepath.Join(deployDir, "compose.yaml"), &compose)

	var nats, relays []string
	for name, s := range compose.Services {
		switch {
		case strings.HasPrefix(name, "nats-"):
			nats = append(nats, name)
			cmd := strings.Join(s.Command, " ")
			assert.Contains(t, cmd, "--jetstream", "%s runs JetStream", name)
			assert.Contains(t, cmd, "--cluster_name incs", "%s joins the cluster", name)
			assert.Contains(t, cmd, "--routes nats://nats-1:6222,nats://nats-2:6222,nats://nats-3:6222", "%s routes to every node", name)
		case strings.HasPrefix(name, "relay-"):
			relays = append(relays, name)
		}
	}
	assert.Len(t, nats, 3, "three NATS nodes")
	require.Len(t, relays, 2, "two relay replicas")

	addrs := map[string]string{}
	for _, name := range relays {
		s := compose.Services[name]
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, []string{"run", "--config", "/etc/incs-relay/config.yaml", "--watch"}, s.Command, "--watch applies an edit of the config")
			require.Len(t, s.Volumes, 1, "the config is mounted")
			host, target, ok := strings.Cut(strings.TrimSuffix(s.Volumes[0], ":ro"), ":")
			require.True(t, ok, "volume %q", s.Volumes[0])
			assert.Equal(t, "/etc/incs-relay/config.yaml", target)
			env := map[string]string{}
			for k, v := range s.Environment {
				env[k] = composeDefault(v)
			}
			addrs[name] = env["INCS_ADMIN_ADDR"]
			_, port, _ := strings.Cut(addrs[name], ":")
			assert.Equal(t, []string{"127.0.0.1:" + port + ":" + port}, s.Ports, "the admin port is published on loopback")
			checkConfigT(t, filepath.Join(deployDir, host), env)
		})
	}
	assert.NotEqual(t, addrs[relays[0]], addrs[relays[1]], "each replica has its own admin.addr")
}

// TestDeploy_K8sCheckConfig runs check-config on the config in
// deploy/k8s/configmap.yaml with the files the Deployment mounts from the
// Secret, and checks the Deployment: two replicas, probes on /healthz and
// /readyz, `run --watch`, the ConfigMap and the Secret mounted as
// directories (never subPath, which never sees an update) where the config
// expects them, and every secret read from a file (${file:}), none from the
// environment, so a rotation needs no restart.
func TestDeploy_K8sCheckConfig(t *testing.T) {
	var cm struct {
		Kind string            `yaml:"kind"`
		Data map[string]string `yaml:"data"`
	}
	readYAMLT(t, filepath.Join(deployDir, "k8s", "configmap.yaml"), &cm)
	require.Equal(t, "ConfigMap", cm.Kind)
	var secret struct {
		Kind       string            `yaml:"kind"`
		StringData map[string]string `yaml:"stringData"`
	}
	readYAMLT(t, filepath.Join(deployDir, "k8s", "secret.yaml"), &secret)
	require.Equal(t, "Secret", secret.Kind)

	type probe struct {
		HTTPGet struct {
			Path string `yaml:"path"`
			Port string `yaml:"port"`
		} `yaml:"httpGet"`
	}
	var dep struct {
		Kind string `yaml:"kind"`
		Spec struct {
			Replicas int `yaml:"replicas"`
			Template struct {
				Spec struct {
					SecurityContext struct {
						FSGroup int `yaml:"fsGroup"`
					} `yaml:"securityContext"`
					Containers []struct {
						Args []string `yaml:"args"`
						Env  []struct {
							Name string `yaml:"name"`
						} `yaml:"env"`
						VolumeMounts []struct {
							Name      string `yaml:"name"`
							MountPath string `yaml:"mountPath"`
							SubPath   string `yaml:"subPath"`
						} `yaml:"volumeMounts"`
						LivenessProbe  probe `yaml:"livenessProbe"`
						ReadinessProbe probe `yaml:"readinessProbe"`
					} `yaml:"containers"`
					Volumes []struct {
						Name      string `yaml:"name"`
						ConfigMap *struct {
							Name string `yaml:"name"`
						} `yaml:"configMap"`
						Secret *struct {
							SecretName string `yaml:"secretName"`
							Items      []struct {
								Key  string `yaml:"key"`
								Path string `yaml:"path"`
							} `yaml:"items"`
						} `yaml:"secret"`
					} `yaml:"volumes"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	readYAMLT(t, filepath.Join(deployDir, "k8s", "deployment.yaml"), &dep)
	require.Equal(t, "Deployment", dep.Kind)
	assert.Equal(t, 2, dep.Spec.Replicas, "two replicas")
	require.Len(t, dep.Spec.Template.Spec.Containers, 1)
	c := dep.Spec.Template.Spec.Containers[0]
	assert.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path, "liveness probe")
	assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path, "readiness probe")
	assert.Empty(t, c.Env, "secrets come from files, not the environment (an environment never changes in a running process)")
	assert.NotZero(t, dep.Spec.Template.Spec.SecurityContext.FSGroup, "the non-root user reads the Secret's files through fsGroup")
	const cfgFile = "/etc/incs-relay/config.yaml"
	assert.Equal(t, []string{"run", "--config", cfgFile, "--watch"}, c.Args)
	cfg := cm.Data["config.yaml"]
	require.NotEmpty(t, cfg, "the ConfigMap has config.yaml")
	assert.NotRegexp(t, `\$\{[A-Za-z_][A-Za-z0-9_]*\}`, cfg, "no ${VAR}: every secret is a ${file:}")
	for _, key := range []string{"INCS_TOKEN", "INCS_ADMIN_TOKEN", "WEBHOOK_SECRET"} {
		assert.Contains(t, cfg, `"${file:/etc/incs-relay/secrets/`+key+`}"`)
	}

	// The container's view: the ConfigMap's and the Secret's files under
	// /etc/incs-relay, here under a temp dir. First with the Secret as
	// shipped, whose placeholders check-config must refuse; then filled in
	// as an operator would (a user nkey seed in the credentials file).
	root := t.TempDir()
	cfgPath := filepath.Join(root, cfgFile)
	mount := func() {
		var cfgDir string
		for _, m := range c.VolumeMounts {
			assert.Empty(t, m.SubPath, "volume %s: subPath never sees an update", m.Name)
			for _, v := range dep.Spec.Template.Spec.Volumes {
				if v.Name != m.Name {
					continue
				}
				switch {
				case v.ConfigMap != nil:
					cfgDir = m.MountPath
				case v.Secret != nil:
					items := map[string]string{}
					for k := range secret.StringData {
						items[k] = k
					}
					if len(v.Secret.Items) > 0 {
						items = map[string]string{}
						for _, it := range v.Secret.Items {
							items[it.Key] = it.Path
						}
					}
					for k, path := range items {
						data, ok := secret.StringData[k]
						require.True(t, ok, "volume %s: the Secret has no key %q", v.Name, k)
						p := filepath.Join(root, m.MountPath, path)
						require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o700))
						writeFileT(t, p, data)
					}
				}
			}
		}
		require.Equal(t, filepath.Dir(cfgFile), cfgDir, "the ConfigMap is mounted as the directory of --config")
		for _, p := range regexp.MustCompile(`/etc/incs-relay/[^\s"'}]+`).FindAllString(cfg, -1) {
			_, err := os.Stat(filepath.Join(root, p))
			require.NoError(t, err, "the config names %s, which the Deployment does not mount", p)
		}
		writeFileT(t, cfgPath, strings.ReplaceAll(cfg, "/etc/incs-relay/", filepath.Join(root, "etc/incs-relay")+"/"))
	}
	noEnv := map[string]string{}

	var out, errb bytes.Buffer
	mount()
	m := &Main{Stdout: &out, Stderr: &errb, Getenv: func(string) (string, bool) { return "", false }}
	assert.Equal(t, exitBadInput, m.Run(context.Background(), []string{"check-config", "--config", cfgPath}),
		"the Secret's placeholder credentials are refused")
	assert.Contains(t, errb.String(), "store.creds", "the error names the key")

	user, err := nkeys.CreateUser()
	require.NoError(t, err)
	seed, err := user.Seed()
	require.NoError(t, err)
	creds := secret.StringData["relay.creds"]
	filled := strings.Replace(creds, "replace-me\n------END USER NKEY SEED", string(seed)+"\n------END USER NKEY SEED", 1)
	require.NotEqual(t, creds, filled, "the Secret's credentials have a seed placeholder")
	secret.StringData["relay.creds"] = filled
	mount()
	checkConfigT(t, cfgPath, noEnv)

	// The values are the Secret's; rotating one is rewriting its file, and
	// the config read again says which sink changed.
	before, err := config.ReadFile(cfgPath, func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	assert.Equal(t, strings.TrimRight(secret.StringData["INCS_TOKEN"], "\n"), before.Upstream.Token)
	assert.Equal(t, strings.TrimRight(secret.StringData["INCS_ADMIN_TOKEN"], "\n"), before.Admin.Token)
	secret.StringData["WEBHOOK_SECRET"] = "whsec_cm90YXRlZC1yb3RhdGVkLXJvdGF0ZWQ="
	mount()
	after, err := config.ReadFile(cfgPath, func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	ch, err := config.Compare(before, after)
	require.NoError(t, err)
	assert.Equal(t, "sinks: ~hooks (secret)", ch.Summary())
	assert.Equal(t, before.Digest(), after.Digest(), "the file is the same: only the secret changed")
}

// checkConfigT runs `incs-relay check-config` on path with exactly env as
// the environment and requires it to pass.
func checkConfigT(t *testing.T, path string, env map[string]string) {
	t.Helper()
	var out, errb bytes.Buffer
	m := &Main{Stdout: &out, Stderr: &errb, Getenv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
	code := m.Run(context.Background(), []string{"check-config", "--config", path})
	require.Equal(t, exitOK, code, "check-config %s: %s", path, errb.String())
	assert.Contains(t, out.String(), ": ok (")
}

// composeDefault resolves compose's "${VAR:-default}" as compose does with
// VAR unset; other values are returned as they are.
func composeDefault(v string) string {
	if m := regexp.MustCompile(`^\$\{[A-Z_]+:-(.*)\}$`).FindStringSubmatch(v); m != nil {
		return m[1]
	}
	return v
}

func readYAMLT(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, v), path)
}
