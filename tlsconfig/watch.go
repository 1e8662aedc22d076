package tlsconfig

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/cacheservice/cacheservice/internal/filewatch"
)

// Watch re-reads the files whenever something changes in a directory holding one of them, until
// ctx ends. It watches directories, not the files: Kubernetes updates a mounted Secret by
// pointing the symlink ..data at a new directory, which replaces every file at once and sends no
// event for the file names themselves, and an editor or `cp` replaces a file by renaming over it,
// which ends a watch on the file. Changes are debounced (Config.Debounce) so that a certificate
// and key written one after the other are read as one pair; a reload that changes nothing is
// skipped silently.
//
// Watch returns once the watch is in place, so a change made after it returns is seen; the
// returned channel is closed when watching has stopped. A file outside the watched directories
// that a path resolves to through other symlinks is not watched, and a watched directory that is
// removed and created again is no longer watched: Reload covers both (SIGHUP).
func (r *Reloader) Watch(ctx context.Context) (<-chan struct{}, error) {
	w, err := filewatch.New(r.cfg.Debounce)
	if err != nil {
		return nil, fmt.Errorf("tls: watch certificate files: %w", err)
	}
	seen := map[string]bool{}
	for _, f := range []string{r.cfg.CertFile, r.cfg.KeyFile, r.cfg.ClientCAFile} {
		dir := filepath.Dir(f)
		if f == "" || seen[dir] {
			continue
		}
		seen[dir] = true
		if err := w.Add(dir); err != nil {
			w.Close()
			return nil, fmt.Errorf("tls: watch directory %s: %w", dir, err)
		}
	}
	reload := func() { _ = r.Reload() } // logged and counted by Reload; the previous material stays in force
	return w.Run(ctx, reload, func(err error) {
		// An overflowed event queue loses events: reload to be sure nothing was missed.
		r.logger.Warn("tls certificate watch error; reloading to be safe", slog.String("error", err.Error()))
	}), nil
}
