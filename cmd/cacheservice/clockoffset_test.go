package main

import (
	"strings"
	"testing"
	"time"

	"github.com/cacheservice/cacheservice/internal/pgtest"
)

// TestClockOffsetRefusesStart: a database URL carrying the test-only
// cacheservice.clock_offset, which would move every lease this replica
// judges, stops the server at start with one line.
func TestClockOffsetRefusesStart(t *testing.T) {
	t.Parallel()
	url := pgtest.WithClockOffset(pgtest.NewDatabase(t), time.Hour)
	var stdout, stderr syncBuffer
	code := cli(t.Context(), []string{"serve", "--addr", "127.0.0.1:0", "--database-url", url}, noEnv, &stdout, &stderr)
	if code != exitFail {
		t.Fatalf("exit code %d, want %d; stderr:\n%s", code, exitFail, &stderr)
	}
	out := stderr.String()
	if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "cacheservice: refusing to start: ") || !strings.Contains(out, "test-only clock offset") {
		t.Errorf("stderr = %q, want one line refusing to start over the clock offset", out)
	}
}
