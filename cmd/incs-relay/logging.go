package main

// The process logger the commands build from flags and log settings.

import (
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// newLogger builds the process logger: human-readable on a terminal, JSON
// otherwise (format "auto"), or as forced by format.
func newLogger(w io.Writer, level, format string) (zerolog.Logger, error) {
	log, _, err := newLevelLogger(w, level, format)
	return log, err
}

// newLevelLogger is newLogger whose level can change while it is used:
// the returned levelWriter's SetLevel (a config reload's log.level).
func newLevelLogger(w io.Writer, level, format string) (zerolog.Logger, *levelWriter, error) {
	lvl := zerolog.InfoLevel
	if level != "" {
		l, err := zerolog.ParseLevel(level)
		if err != nil {
			return zerolog.Nop(), nil, &usageError{msg: "--log-level: want debug, info, warn or error, got " + level}
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
		return zerolog.Nop(), nil, &usageError{msg: "--log-format: want auto, json or console, got " + format}
	}
	if console {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	lw := &levelWriter{w: zerolog.LevelWriterAdapter{Writer: w}}
	if l, ok := w.(zerolog.LevelWriter); ok {
		lw.w = l
	}
	lw.SetLevel(lvl)
	// The logger passes debug and up to the writer, which drops what is
	// below the level in force: the debug lines are few and off the
	// per-event paths, so their cost is small.
	return zerolog.New(lw).Level(min(lvl, zerolog.DebugLevel)).With().Timestamp().Logger(), lw, nil
}

// levelWriter drops the log events below a level that can change while
// the logger is in use.
type levelWriter struct {
	w     zerolog.LevelWriter
	level atomic.Int32
}

// Write writes p.
func (l *levelWriter) Write(p []byte) (int, error) { return l.w.Write(p) }

// WriteLevel writes p unless lv is below the level in force.
func (l *levelWriter) WriteLevel(lv zerolog.Level, p []byte) (int, error) {
	if lv < zerolog.Level(l.level.Load()) {
		return len(p), nil
	}
	return l.w.WriteLevel(lv, p)
}

// SetLevel sets the level in force.
func (l *levelWriter) SetLevel(lv zerolog.Level) { l.level.Store(int32(lv)) }
