package embeddedpg

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// forwardLog copies PostgreSQL's stderr to logger line by line until r reaches EOF (every process
// of the cluster has exited), and remembers the last lines for error messages.
//
// Levels: PANIC is an error; FATAL and WARNING are warnings (FATAL is mostly a refused or
// terminated session, which the client also sees); everything else, including ERROR, which the
// client that caused it already receives, and routine LOG lines (checkpoints, startup), is debug.
func forwardLog(r io.Reader, logger *slog.Logger, tail *lineTail) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		tail.add(line)
		logger.Log(context.Background(), levelOf(line), "postgres", slog.String("line", line))
	}
	// A scan error (an absurdly long line) leaves the pipe unread; drain it so PostgreSQL never
	// blocks writing to stderr.
	_, _ = io.Copy(io.Discard, r)
}

func levelOf(line string) slog.Level {
	switch {
	case strings.HasPrefix(line, "PANIC:"):
		return slog.LevelError
	case strings.HasPrefix(line, "FATAL:"):
		for _, routine := range routineFatals {
			if strings.Contains(line, routine) {
				return slog.LevelDebug
			}
		}
		return slog.LevelWarn
	case strings.HasPrefix(line, "WARNING:"):
		return slog.LevelWarn
	default:
		return slog.LevelDebug
	}
}

// routineFatals are FATAL messages that starts (our readiness polling), stops and forced DROP
// DATABASE produce as a matter of course; they would only be noise at warning level.
var routineFatals = []string{
	"the database system is starting up",
	"the database system is not yet accepting connections",
	"the database system is in recovery mode",
	"the database system is shutting down",
	"terminating connection due to administrator command",
}

// lineTail keeps the last few lines of output.
type lineTail struct {
	mu    sync.Mutex
	lines []string
}

const tailLines = 20

func (t *lineTail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > tailLines {
		t.lines = t.lines[len(t.lines)-tailLines:]
	}
}

// String joins the kept lines with "; " so an error stays on one line.
func (t *lineTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "; ")
}
