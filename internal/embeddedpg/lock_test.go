package embeddedpg

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

func TestStartRefusesDirInUseAtOnce(t *testing.T) {
	t.Parallel()
	dir := initializedDir(t)
	s := start(t, Config{Dir: dir})
	before, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Start(t.Context(), Config{Dir: dir}); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Start on a running directory: %v, want ErrInUse", err)
	}
	after, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("the refused Start changed the directory: %d entries before, %d after", len(before), len(after))
	}
	if err := ping(t, s); err != nil {
		t.Fatalf("the first server stopped serving: %v", err)
	}
	// Stop releases the directory, and Restart takes it again.
	if err := s.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(t.Context()); err != nil {
		t.Fatalf("Restart after Stop: %v", err)
	}
	if _, err := Start(t.Context(), Config{Dir: dir}); !errors.Is(err, ErrInUse) {
		t.Fatalf("Start on a restarted directory: %v, want ErrInUse", err)
	}
}

func TestFailedStartRemovesTheDirItCreated(t *testing.T) {
	t.Parallel()
	// Start fails after creating dir: as root, because the postgres user
	// cannot enter the private parent; otherwise when postgres refuses the
	// unknown setting, after initdb.
	dir := filepath.Join(newDir(t), "new")
	_, err := Start(t.Context(), Config{Dir: dir, Settings: map[string]string{"no_such_setting": "1"}})
	if err == nil {
		t.Fatal("Start with an unknown setting succeeded")
	}
	if _, statErr := os.Stat(dir); !errors.Is(statErr, os.ErrNotExist) {
		t.Errorf("the failed Start left %s behind (%v); its error: %v", dir, statErr, err)
	}
}

// TestLockIsFreeOnceReleasedWhileForking takes and releases the directory's
// lock over and over while other goroutines start processes: a child between
// its fork and its exec holds a copy of the lock's descriptor, so a release
// that did not wait out forks in flight would leave the directory locked for
// a moment, and the next take would find it in use.
func TestLockIsFreeOnceReleasedWhileForking(t *testing.T) {
	t.Parallel()
	s := &Server{cfg: Config{Dir: filepath.Join(t.TempDir(), "data")}}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				_ = exec.Command("true").Run()
			}
		})
	}
	defer wg.Wait()
	defer cancel()
	for i := range 2000 {
		if _, err := s.lockDir(); err != nil {
			t.Fatalf("take %d: %v", i, err)
		}
		s.unlockDir()
	}
}
