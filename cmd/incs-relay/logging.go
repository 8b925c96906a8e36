package main

// The process logger the commands build from flags and log settings.

import (
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// newLogger builds the process logger: human-readable on a terminal, JSON
// otherwise (format "auto"), or as forced by format.
func newLogger(w io.Writer, level, format string) (zerolog.Logger, error) {
	lvl := zerolog.InfoLevel
	if level != "" {
		l, err := zerolog.ParseLevel(level)
		if err != nil {
			return zerolog.Nop(), &usageError{msg: "--log-level: want debug, info, warn or error, got " + level}
		}
		lvl = l
	}
	console := false
	switch format {
	case "", "auto":
		if f, ok := w.(*os.File); ok {
			console = isatty.IsTerminal(f.Fd())
		}
	case "console":
		console = true
	case "json":
	default:
		return zerolog.Nop(), &usageError{msg: "--log-format: want auto, json or console, got " + format}
	}
	if console {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}
