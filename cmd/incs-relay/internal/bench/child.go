package bench

// The relays under test: their config file and the child processes that
// run it, reached through the admin API.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/admin"
)

// relayConfig is what the harness varies in the relays' config file.
type relayConfig struct {
	API      string // the simulator's host:port
	Strategy string // poll.strategy
	Store    string // store.type: bbolt or jetstream
	NATSURL  string // the NATS servers, comma-separated
	Nodes    int    // NATS nodes: store.replicas and the JetStream sink's stream replicas
	DBPath   string // with Store bbolt: the file
	// Retention is store.retention; 0 keeps the default.
	Retention time.Duration
	Sinks     []string // jetstream, nats, webhook
	InFlight  int      // max_in_flight of every sink; 0 keeps the defaults
	HookURL   string   // the webhook sink's URL
	Secret    string   // and its secret
}

// adminEnv is the environment variable the config's admin.addr names:
// every relay started from one file gets its own address.
const adminEnv = "INCS_BENCH_ADMIN"

// write writes the config file to path.
func (c relayConfig) write(path string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "upstream: {base_url: %q, token: bench, rate_limit: 1000, page_size: 100}\n", "http://"+c.API)
	fmt.Fprintf(&b, "poll: {interval: 1s, initial: replay, strategy: %s}\n", c.Strategy)
	retention := ""
	if c.Retention > 0 {
		retention = fmt.Sprintf(", retention: %s", c.Retention)
	}
	if c.Store == "jetstream" {
		fmt.Fprintf(&b, "store: {type: jetstream, url: %q, replicas: %d, name: bench%s}\n", c.NATSURL, c.Nodes, retention)
	} else {
		fmt.Fprintf(&b, "store: {path: %q%s}\n", c.DBPath, retention)
	}
	fmt.Fprintf(&b, "admin: {addr: \"${%s}\"}\nlog: {level: warn, format: json}\nsinks:\n", adminEnv)
	for _, s := range c.Sinks {
		fl := ""
		if c.InFlight > 0 {
			fl = fmt.Sprintf(", max_in_flight: %d", c.InFlight)
		}
		switch s {
		case "jetstream":
			fmt.Fprintf(&b, "  - {name: jetstream, type: nats, url: %q, jetstream: true, stream: {name: BENCH, subjects: [\"incs.>\"], replicas: %d}%s}\n", c.NATSURL, c.Nodes, fl)
		case "nats":
			fmt.Fprintf(&b, "  - {name: nats, type: nats, url: %q, subject: \"core.{task_id}.{event}\"%s}\n", c.NATSURL, fl)
		case "webhook":
			fmt.Fprintf(&b, "  - {name: webhook, type: webhook, url: %q, secret: %q%s}\n", c.HookURL, c.Secret, fl)
		default:
			return fmt.Errorf("bench: unknown sink %q (want jetstream, nats or webhook)", s)
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// child is one relay running as `exe run --config FILE`.
type child struct {
	cmd    *exec.Cmd
	exited chan error // receives the process's exit once
	ac     *admin.Client
	addr   string // its admin address
}

// startChild starts `exe run --config cfgPath` with its admin API on a
// free loopback address, env added to this process's environment, and
// returns once /healthz answers: the relay opens its store and connects
// its sinks before it serves the admin API.
func startChild(ctx context.Context, exe, cfgPath string, stderr io.Writer, env ...string) (*child, error) {
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "run", "--config", cfgPath)
	cmd.Env = append(append(os.Environ(), env...), adminEnv+"="+addr)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, exited: make(chan error, 1), ac: admin.NewClient(addr, "", 5*time.Second), addr: addr}
	go func() { c.exited <- cmd.Wait() }()
	if err := c.await(ctx, "/healthz", 20*time.Millisecond); err != nil {
		c.kill()
		return nil, err
	}
	return c, nil
}

// await polls path every tick until it answers 2xx, the relay exits or
// ctx ends.
func (c *child) await(ctx context.Context, path string, tick time.Duration) error {
	for c.ac.Do(ctx, http.MethodGet, path, nil, nil) != nil {
		select {
		case err := <-c.exited:
			c.exited <- err // kill and stop read it again
			return fmt.Errorf("exited before %s answered: %v", path, err)
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer on %s", path, c.addr)
		case <-time.After(tick):
		}
	}
	return nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// exitedErr returns the relay's exit when it has exited, else nil.
func (c *child) exitedErr() error {
	select {
	case err := <-c.exited:
		c.exited <- err
		if err == nil {
			err = errors.New("exit status 0")
		}
		return err
	default:
		return nil
	}
}

// sinks reads GET /v1/sinks.
func (c *child) sinks(ctx context.Context) ([]sinkProgress, error) {
	var body struct {
		Sinks []sinkProgress `json:"sinks"`
	}
	err := c.ac.Do(ctx, http.MethodGet, "/v1/sinks", nil, &body)
	return body.Sinks, err
}

// pollCycles reads the poll cycles finished since the relay started
// (GET /v1/poll).
func (c *child) pollCycles(ctx context.Context) (int, error) {
	var body struct {
		Cycles int `json:"cycles"`
	}
	err := c.ac.Do(ctx, http.MethodGet, "/v1/poll", nil, &body)
	return body.Cycles, err
}

// stop sends SIGTERM and waits up to timeout for the exit, then kills.
// It returns an error when the relay did not exit 0 in time.
func (c *child) stop(timeout time.Duration) error {
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.exited:
		c.exited <- err
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("bench: relay exited %d after SIGTERM", ee.ExitCode())
		}
		return err
	case <-time.After(timeout):
		c.kill()
		return fmt.Errorf("bench: relay did not exit within %s of SIGTERM", timeout)
	}
}

// kill kills the relay if it still runs and waits for its exit.
func (c *child) kill() {
	c.cmd.Process.Kill()
	err := <-c.exited
	c.exited <- err
}
