package filewatch

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// run watches dir with settle and counts the calls of changed on a channel.
func run(t *testing.T, dir string, settle time.Duration) (<-chan struct{}, *atomic.Int32) {
	t.Helper()
	w, err := New(settle)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(dir); err != nil {
		w.Close()
		t.Fatal(err)
	}
	calls := make(chan struct{}, 100)
	var n atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := w.Run(ctx, func() { n.Add(1); calls <- struct{}{} }, func(err error) { t.Logf("watch error: %v", err) })
	t.Cleanup(func() { cancel(); <-done })
	return calls, &n
}

func wait(t *testing.T, calls <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-calls:
	case <-time.After(10 * time.Second):
		t.Fatalf("no change reported after %s", what)
	}
}

// TestFileReplacedByRename: a file written elsewhere and renamed over the
// watched one, as editors and cp do, is a change of the directory.
func TestFileReplacedByRename(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	calls, _ := run(t, dir, 10*time.Millisecond)
	tmp := filepath.Join(dir, ".f.tmp")
	if err := os.WriteFile(tmp, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "f")); err != nil {
		t.Fatal(err)
	}
	wait(t, calls, "a rename over the file")
}

// TestKubernetesDataSwap: a mounted Secret's file is a symlink through
// ..data to a timestamped directory; an update points ..data at a new
// directory. That swap is seen in the watched directory.
func TestKubernetesDataSwap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	version := func(name, content string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "f"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	version("..v1", "one")
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "f"), filepath.Join(dir, "f")); err != nil {
		t.Fatal(err)
	}
	calls, _ := run(t, dir, 10*time.Millisecond)

	// As kubelet does: a new version, a new link beside ..data, renamed over it.
	version("..v2", "two")
	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	wait(t, calls, "the ..data swap")
	if b, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(b) != "two" {
		t.Fatalf("f reads %q, %v after the swap, want two", b, err)
	}
}

// TestBurstIsOneChange: events closer together than settle are reported
// once, after the last of them; a later event is reported again.
func TestBurstIsOneChange(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// settle is far longer than the burst takes, even on a loaded machine.
	calls, n := run(t, dir, 500*time.Millisecond)
	for i := range 20 {
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte{byte(i)}, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	wait(t, calls, "a burst of writes")
	// Another settle without events: no second call for the same burst.
	time.Sleep(time.Second)
	if got := n.Load(); got != 1 {
		t.Fatalf("a burst of 20 writes was reported %d times, want 1", got)
	}
	if err := os.WriteFile(filepath.Join(dir, "g"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	wait(t, calls, "a write after the burst")
}

// TestRunStopsWithContext: the returned channel closes once ctx ends.
func TestRunStopsWithContext(t *testing.T) {
	t.Parallel()
	w, err := New(time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := w.Run(ctx, func() {}, func(error) {})
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop after its context ended")
	}
}
