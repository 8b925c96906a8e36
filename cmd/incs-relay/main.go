// Command incs-relay polls the incsapp task API, turns every new task log
// into one typed CloudEvents event, stores it in a bbolt outbox and delivers
// it to NATS, signed webhooks, Slack and Feishu.
//
// This package holds the commands, one file each: flags, a call into its
// internal packages (config, relay the runtime, admin the admin API and
// its client, bench the benchmark harness), output. main.go dispatches
// and maps errors to exit codes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	_ "time/tzdata" // the API's zone must load in minimal images too

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/admin"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/bench"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
)

// Exit codes.
const (
	exitOK       = 0
	exitFailure  = 1
	exitBadInput = 2
)

func main() {
	if os.Getenv(bench.LimitEnv) != "" { // a limit process of `incs-relay bench`
		os.Exit(bench.LimitMain())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := &Main{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.LookupEnv}
	os.Exit(m.Run(ctx, os.Args[1:]))
}

// Main dispatches to one command per file.
type Main struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) (string, bool)
}

// usageError is bad input on the command line; it exits 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// Run runs the command named by args[0] and returns the process exit code.
func (m *Main) Run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		m.usage()
		return exitBadInput
	}
	var err error
	switch args[0] {
	case "run":
		err = (&RunCommand{m: m}).Run(ctx, args[1:])
	case "demo":
		err = (&DemoCommand{m: m}).Run(ctx, args[1:])
	case "sim":
		err = (&SimCommand{m: m}).Run(ctx, args[1:])
	case "events":
		err = (&EventsCommand{m: m}).Run(ctx, args[1:])
	case "status":
		err = (&StatusCommand{m: m}).Run(ctx, args[1:])
	case "replay":
		err = (&ReplayCommand{m: m}).Run(ctx, args[1:])
	case "check-config":
		err = (&CheckConfigCommand{m: m}).Run(ctx, args[1:])
	case "migrate":
		err = (&MigrateCommand{m: m}).Run(ctx, args[1:])
	case "preview":
		err = (&PreviewCommand{m: m}).Run(ctx, args[1:])
	case "bench":
		err = (&BenchCommand{m: m}).Run(ctx, args[1:])
	case "health":
		err = (&HealthCommand{m: m}).Run(ctx, args[1:])
	case "version":
		fmt.Fprintln(m.Stdout, "incs-relay", version)
		return exitOK
	case "-h", "--help", "help":
		m.usage()
		return exitOK
	default:
		fmt.Fprintf(m.Stderr, "incs-relay: unknown command %q\n", args[0])
		m.usage()
		return exitBadInput
	}
	return m.exitCode(err)
}

func (m *Main) exitCode(err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	var ce *config.Error
	var ue *usageError
	var ae *admin.APIError
	switch {
	case errors.As(err, &ce), errors.As(err, &ue), errors.As(err, &ae) && ae.BadRequest():
		fmt.Fprintln(m.Stderr, "incs-relay:", err)
		return exitBadInput
	}
	fmt.Fprintln(m.Stderr, "incs-relay:", err)
	return exitFailure
}

var version = "dev"

func (m *Main) usage() {
	fmt.Fprint(m.Stderr, `incs-relay turns the incsapp task API into a stream of typed change events.

Usage:
  incs-relay demo                                   zero-config showcase (simulator + embedded NATS)
  incs-relay run --config FILE [--watch]            run the relay until SIGINT/SIGTERM; SIGHUP
                                                    (or a change of the file, with --watch) reloads it
  incs-relay sim [--addr A] [--token T] [--tasks N] [--seed S] [--tick D]
                                                    serve a simulated incsapp task API
  incs-relay events --config FILE [--from N] [--limit K] [--type T]
                                                    print stored events as JSON lines
  incs-relay status --config FILE                   per sink: cursor, head, lag, dead letters
  incs-relay replay --config FILE --sink NAME (--from OFFSET | --since RFC3339)
                                                    deliver a sink's events again
  incs-relay check-config --config FILE             validate a config and exit
  incs-relay migrate --config FILE [--from BBOLT_FILE]
                                                    carry a bbolt store over to the config's jetstream store
  incs-relay preview --config FILE --sink NAME [--event FILE]
                                                    print what a chat sink would send
  incs-relay bench [--tasks 20000] [--sinks jetstream,webhook] [--webhook-delay D]
                                                    measure the relay end to end against the simulator
  incs-relay health [--addr 127.0.0.1:8086] [--ready]
                                                    ask a running relay if it is healthy

Bad input exits 2; other failures exit 1.
`)
}

// newFlagSet returns a FlagSet that reports errors instead of exiting.
func (m *Main) newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("incs-relay "+name, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	return fs
}

// parseFlags parses args and turns flag errors into usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{msg: fs.Name() + ": " + err.Error()}
	}
	if fs.NArg() > 0 {
		return &usageError{msg: fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return nil
}

// loadConfig reads the file named by --config.
// checkedConfig reads the config at path and runs every check of
// check-config that needs no network: what a reload applies.
func (m *Main) checkedConfig(path string) (*config.Config, error) {
	cfg, err := m.loadConfig(path)
	if err != nil {
		return nil, err
	}
	if err := relay.CheckSinks(cfg); err != nil {
		return nil, err
	}
	if err := cfg.CheckNATSFiles(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (m *Main) loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return nil, &usageError{msg: "--config FILE is required"}
	}
	getenv := m.Getenv
	if getenv == nil {
		getenv = os.LookupEnv
	}
	return config.ReadFile(path, getenv)
}
