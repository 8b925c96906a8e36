package sink

// The embedded NATS server a NATS sink starts for the URL "embedded":
// EmbeddedOptions, StartEmbeddedNATS and its logger over zerolog.

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// Embedded NATS server defaults.
const (
	DefaultEmbeddedHost = "127.0.0.1"
	DefaultEmbeddedPort = 4222
)

// EmbeddedOptions configures the in-process NATS server started for a NATS
// sink whose URL is "embedded".
type EmbeddedOptions struct {
	// Host to listen on (default 127.0.0.1: only this machine).
	Host string
	// Port to listen on: 0 means 4222, -1 a random free port.
	Port int
	// FallbackRandomPort makes a taken Port fall back to a random free
	// port (logged) instead of failing; meant for the demo. Read the port
	// used from the server's ClientURL.
	FallbackRandomPort bool
	// StoreDir is where JetStream keeps its streams. Required.
	StoreDir string
	// ServerName defaults to "incs-relay".
	ServerName string
	// ReadyTimeout bounds the wait for the server to accept clients
	// (default 10s).
	ReadyTimeout time.Duration
	// Logger receives the server's notices, warnings and errors.
	Logger zerolog.Logger
}

// StartEmbeddedNATS starts an in-process NATS server with JetStream enabled
// and blocks until it accepts connections. The caller owns the server and
// stops it with Shutdown and WaitForShutdown. It fails if the port is
// taken (unless FallbackRandomPort) or StoreDir is empty.
func StartEmbeddedNATS(opts EmbeddedOptions) (*server.Server, error) {
	if opts.StoreDir == "" {
		return nil, errors.New("embedded nats: no store dir for JetStream")
	}
	if opts.Host == "" {
		opts.Host = DefaultEmbeddedHost
	}
	if opts.Port == 0 {
		opts.Port = DefaultEmbeddedPort
	}
	if opts.ServerName == "" {
		opts.ServerName = "incs-relay"
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 10 * time.Second
	}
	if opts.Port > 0 {
		// The server reports a failed listen only through its logger, so
		// check the port first (a race with another process is reported
		// as not becoming ready).
		addr := net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			if !opts.FallbackRandomPort {
				return nil, fmt.Errorf("embedded nats: listen %s: %w", addr, err)
			}
			opts.Logger.Warn().Str("addr", addr).Msg("embedded nats: port taken; using a random port")
			opts.Port = server.RANDOM_PORT
		} else {
			_ = l.Close()
		}
	}
	sopts := &server.Options{
		ServerName: opts.ServerName,
		Host:       opts.Host,
		Port:       opts.Port,
		NoSigs:     true,
		JetStream:  true,
		StoreDir:   opts.StoreDir,
	}
	s, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	s.SetLogger(natsServerLogger{opts.Logger.With().Str("component", "nats-server").Logger()}, false, false)
	go s.Start()
	if !s.ReadyForConnections(opts.ReadyTimeout) {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, fmt.Errorf("embedded nats: not ready within %s (port %d)", opts.ReadyTimeout, opts.Port)
	}
	return s, nil
}

// natsServerLogger passes the embedded server's log to zerolog.
type natsServerLogger struct{ log zerolog.Logger }

func (l natsServerLogger) Noticef(format string, v ...any) { l.log.Debug().Msgf(format, v...) }
func (l natsServerLogger) Warnf(format string, v ...any)   { l.log.Warn().Msgf(format, v...) }
func (l natsServerLogger) Fatalf(format string, v ...any)  { l.log.Error().Msgf(format, v...) }
func (l natsServerLogger) Errorf(format string, v ...any)  { l.log.Error().Msgf(format, v...) }
func (l natsServerLogger) Debugf(format string, v ...any)  { l.log.Trace().Msgf(format, v...) }
func (l natsServerLogger) Tracef(format string, v ...any)  { l.log.Trace().Msgf(format, v...) }
