package embeddedpg

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ErrInUse is returned (wrapped) by Start when another process, or another
// Server in this one, holds the directory.
var ErrInUse = errors.New("in use")

// lockDir creates Dir if it is missing and takes an exclusive, non-blocking
// flock on it, before anything else touches it: two servers starting at once
// on a new directory would otherwise each run initdb and delete the other's
// scratch cluster, and a second server on a running one would wait for its
// postmaster to exit. The lock is on the directory itself, so it leaves no
// file behind, and the kernel releases it when this process dies, however it
// dies. It reports whether this call created Dir.
func (s *Server) lockDir() (created bool, err error) {
	dir := s.cfg.Dir
	// Parents are made world-searchable so the postgres user can reach Dir; Dir itself is private.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return false, fmt.Errorf("create parent of %s: %w", dir, err)
	}
	if err := os.Mkdir(dir, 0o700); err == nil {
		created = true
	} else if !errors.Is(err, os.ErrExist) {
		return false, fmt.Errorf("create %s: %w", dir, err)
	}
	f, err := os.Open(dir)
	if err != nil {
		return false, fmt.Errorf("open %s to lock it: %w", dir, err)
	}
	if err := flockBriefly(f); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			// Even if our Mkdir made Dir, it is the holder's now: keep it.
			return false, fmt.Errorf("data directory %s is %w by another server; stop it or choose another directory", dir, ErrInUse)
		}
		return false, fmt.Errorf("lock %s: %w", dir, err)
	}
	s.mu.Lock()
	s.lock = f
	s.mu.Unlock()
	return created, nil
}

// forkWindow bounds how long flockBriefly waits for a lock that is held only
// for a moment. A child that this process is starting holds a copy of every
// descriptor from its fork until its exec closes them (close-on-exec), and
// with it a lock this process has just released: a Start right after Stop
// found the directory in use (CI, once). Go's fork lock does not cover it,
// since the parent resumes before the exec closes the descriptors.
const forkWindow = 250 * time.Millisecond

// flockBriefly takes an exclusive flock on f without blocking, retrying for
// up to forkWindow while it is held.
func flockBriefly(f *os.File) error {
	deadline := time.Now().Add(forkWindow)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}

// unlockDir releases the directory's lock, if held.
func (s *Server) unlockDir() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock != nil {
		_ = s.lock.Close() // closing the last descriptor releases the flock
		s.lock = nil
	}
}
