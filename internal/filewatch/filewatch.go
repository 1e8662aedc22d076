// Package filewatch tells when files in some directories changed, once a
// burst of changes has settled. It watches directories rather than files:
// Kubernetes updates a mounted Secret or ConfigMap by pointing the symlink
// ..data at a new directory, which sends no event for the files' own names,
// and an editor or `cp` replaces a file by renaming over it, which ends a
// watch on the file. The auth file and the TLS files are reloaded this way.
package filewatch

import (
	"context"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watcher watches directories; Add them, then Run.
type Watcher struct {
	w      *fsnotify.Watcher
	settle time.Duration
}

// New returns a Watcher that reports a change once no event has arrived for
// settle: long enough for an editor's write-then-rename, a certificate and
// its key written one after the other, or a ..data swap to end.
func New(settle time.Duration) (*Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	return &Watcher{w: w, settle: settle}, nil
}

// Add watches dir; a change is seen from when it returns.
func (w *Watcher) Add(dir string) error { return w.w.Add(dir) }

// Close releases a Watcher that will not Run.
func (w *Watcher) Close() error { return w.w.Close() }

// Run calls changed after each settled burst of events until ctx ends, in
// its own goroutine, and closes the returned channel once it has stopped
// (and released the watcher). Every kind of event counts, chmod included (a
// key made readable is a change): a burst that changed nothing costs the
// caller one read. A watcher error is passed to failed and then counts as a
// change, since an overflowed event queue may have hidden one.
func (w *Watcher) Run(ctx context.Context, changed func(), failed func(error)) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer w.w.Close()
		w.loop(ctx, changed, failed)
	}()
	return done
}

func (w *Watcher) loop(ctx context.Context, changed func(), failed func(error)) {
	// Stopped until the first event; each event pushes the call back by settle.
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-w.w.Events:
			if !ok {
				return
			}
			timer.Reset(w.settle)
		case err, ok := <-w.w.Errors:
			if !ok {
				return
			}
			failed(err)
			timer.Reset(w.settle)
		case <-timer.C:
			changed()
		}
	}
}
