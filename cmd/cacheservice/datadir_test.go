package main

import (
	"bytes"
	"context"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
)

// TestEmbeddedRefusalNamesDataDirAndLeavesNothing runs as root with the data
// directory inside a directory only root may enter (as a checkout under
// /root is): the postgres user could not reach it, so the start is refused
// in one line that names --data-dir, and creates nothing on the way.
func TestEmbeddedRefusalNamesDataDirAndLeavesNothing(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the embedded PostgreSQL then runs as the postgres user, whose reach is what is tested")
	}
	if _, err := user.Lookup("postgres"); err != nil {
		t.Skipf("needs the postgres user: %v", err)
	}
	private := t.TempDir() // mode 0700, owned by root, like /root
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	checkout := filepath.Join(private, "checkout")
	dataDir := filepath.Join(checkout, ".cacheservice")

	var stdout, stderr bytes.Buffer
	code := cli(context.Background(), []string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dataDir}, noEnv, &stdout, &stderr)
	if code != exitFail {
		t.Fatalf("exit code %d, want %d; stderr:\n%s", code, exitFail, &stderr)
	}
	out := stderr.String()
	t.Logf("stderr: %s", out)
	if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "cacheservice: ") {
		t.Errorf("stderr = %q, want one line", out)
	}
	for _, want := range []string{"--data-dir (CACHESERVICE_DATA_DIR)", "postgres user", "cannot enter " + private + " (mode 0700)"} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr = %q, want it to contain %q", out, want)
		}
	}
	if _, err := os.Stat(checkout); !os.IsNotExist(err) {
		t.Errorf("the refused start left %s behind (stat: %v)", checkout, err)
	}
}
