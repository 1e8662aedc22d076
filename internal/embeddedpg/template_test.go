package embeddedpg

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestMain removes the template cluster after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if templateDir != "" {
		_ = os.RemoveAll(templateDir)
	}
	os.Exit(code)
}

var (
	templateOnce sync.Once
	templateDir  string
	templateErr  error
)

// initializedDir returns a fresh directory holding a cluster copied from one
// initialized once per test binary. initdb is most of a first start (seconds
// on a loaded machine, against a fraction of one for a copy), and only the
// tests of initialization itself need their own; the others start from this.
func initializedDir(t *testing.T) string {
	t.Helper()
	templateOnce.Do(func() {
		templateDir, templateErr = os.MkdirTemp("", "embeddedpg-template-")
		if templateErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		s, err := newServer(Config{Dir: templateDir})
		if err == nil {
			_, err = s.lockDir()
		}
		if err == nil {
			defer s.unlockDir()
			if err = s.prepareDir(); err == nil {
				err = s.initCluster(ctx)
			}
		}
		templateErr = err
	})
	if templateErr != nil {
		t.Fatalf("initialize template cluster: %v", templateErr)
	}
	dir := newDir(t)
	// cp -a keeps modes and owners (the postgres user's, when we are root).
	if out, err := exec.Command("cp", "-a", filepath.Join(templateDir, "pgdata"), filepath.Join(dir, "pgdata")).CombinedOutput(); err != nil {
		t.Fatalf("copy template cluster: %v: %s", err, out)
	}
	return dir
}
