package main

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
)

// newLogger returns a logger at cfg's fixed log level.
func newLogger(w io.Writer, cfg Config) *slog.Logger {
	return newLeveledLogger(w, cfg.LogFormat, cfg.LogLevel)
}

// newLeveledLogger returns the server's one logger, logging at level (a
// *slog.LevelVar lets SIGHUP change it).
func newLeveledLogger(w io.Writer, format string, level slog.Leveler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// maxLevelFileBytes bounds what is read of --log-level-file: a level is a
// word, and a wrong path must not make us read a large file.
const maxLevelFileBytes = 64

// initialLogLevel is the level to start at: --log-level-file's, if set, else
// --log-level's (from the flag or its environment variable).
func initialLogLevel(cfg Config) (*slog.LevelVar, error) {
	level := new(slog.LevelVar)
	level.Set(cfg.LogLevel)
	if cfg.LogLevelFile != "" {
		l, err := readLevelFile(cfg.LogLevelFile)
		if err != nil {
			return nil, err
		}
		level.Set(l)
	}
	return level, nil
}

// logLevelReload is the SIGHUP hook of the log level. Only a file can change
// under a running process: flags and the environment cannot. Without
// --log-level-file it reloads nothing and says so.
func logLevelReload(cfg Config, level *slog.LevelVar) func() (string, error) {
	if cfg.LogLevelFile == "" {
		return func() (string, error) {
			return fmt.Sprintf("log level unchanged (%v): it comes from --log-level or %s, which a running process cannot re-read; use --log-level-file to change it on SIGHUP",
				level.Level(), envName("log-level")), nil
		}
	}
	return func() (string, error) {
		l, err := readLevelFile(cfg.LogLevelFile)
		if err != nil {
			return "", err
		}
		old := level.Level()
		level.Set(l)
		return fmt.Sprintf("log level %v (was %v) from %s", l, old, cfg.LogLevelFile), nil
	}
}

// readLevelFile reads a level name (debug, info, warn, error, or e.g.
// info+2) from path.
func readLevelFile(path string) (slog.Level, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read log level: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxLevelFileBytes+1))
	if err != nil {
		return 0, fmt.Errorf("read log level from %s: %w", path, err)
	}
	var l slog.Level
	if len(b) > maxLevelFileBytes || l.UnmarshalText(bytes.TrimSpace(b)) != nil {
		return 0, fmt.Errorf("read log level from %s: want debug, info, warn or error", path)
	}
	return l, nil
}
