package main

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"

	"github.com/cacheservice/cacheservice/internal/version"
)

// TestVersionCommandPrintsTheBuild: `cacheservice version` exits 0 and
// prints internal/version's values, under the build_info metric's label
// names; an argument is a usage error.
func TestVersionCommandPrintsTheBuild(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if code := cli(context.Background(), []string{"version"}, noEnv, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit code %d, want 0; stderr: %s", code, &stderr)
	}
	want := "version:   " + version.String() + "\ncommit:    " + version.Commit() + "\ngoversion: " + runtime.Version() + "\n"
	if stdout.String() != want || stderr.Len() != 0 {
		t.Errorf("stdout = %q, stderr = %q; want stdout %q", &stdout, &stderr, want)
	}
	stdout.Reset()
	if code := cli(context.Background(), []string{"version", "now"}, noEnv, &stdout, &stderr); code != exitUsage {
		t.Errorf("version now: exit code %d, want %d", code, exitUsage)
	}
	if !strings.Contains(stderr.String(), `"now"`) {
		t.Errorf("version now: stderr = %q, want it to name the argument", &stderr)
	}
}
