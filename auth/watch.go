package auth

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/cacheservice/cacheservice/internal/filewatch"
)

// settle lets a burst of events (an editor's write-then-rename, Kubernetes'
// swap of the ..data symlink) end before the file is read once.
const settle = 100 * time.Millisecond

// Watch reloads the auth file whenever its directory changes, until ctx ends
// or stop is called; stop also waits for the watching goroutine to finish.
// It watches the directory, not the file: Kubernetes updates a mounted
// Secret by pointing a symlink at a new directory, and editors replace files
// by renaming, and neither is an event on the old file. A change that does
// not alter the file's bytes is ignored; one that does not parse keeps the
// previous file (see Reload). The watch is in place when Watch returns; its
// error says why it could not start.
func (a *Authenticator) Watch(ctx context.Context) (stop func(), err error) {
	w, err := filewatch.New(settle)
	if err != nil {
		return nil, fmt.Errorf("watch auth file: %w", err)
	}
	dir := filepath.Dir(a.file)
	if err := w.Add(dir); err != nil {
		w.Close()
		return nil, fmt.Errorf("watch auth file directory %s: %w", dir, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := w.Run(ctx, a.reloadIfChanged, func(err error) {
		// An overflow may have hidden a change: the file is checked anyway.
		a.log.Warn("watching the auth file", "dir", dir, "err", err)
	})
	return func() { cancel(); <-done }, nil
}
