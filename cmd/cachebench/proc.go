package main

import (
	"os"
	"sync"
	"time"

	"github.com/prometheus/procfs"
)

// cpuOf returns the CPU time (user + system) pid has used, zero if it
// cannot be read.
func cpuOf(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0
	}
	st, err := p.Stat()
	if err != nil {
		return 0
	}
	return time.Duration(st.CPUTime() * float64(time.Second))
}

// cpuOfChildren returns the CPU time used by pid's children: for the
// postmaster, its backends and background workers. Backends that exited
// are lost, but pools keep theirs open for the whole run.
func cpuOfChildren(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	procs, err := procfs.AllProcs()
	if err != nil {
		return 0
	}
	var total time.Duration
	for _, p := range procs {
		if st, err := p.Stat(); err == nil && st.PPID == pid {
			total += time.Duration(st.CPUTime() * float64(time.Second))
		}
	}
	return total
}

// cpuSnapshot is the CPU time used so far by each side of a run.
type cpuSnapshot struct{ client, server, db time.Duration }

func takeCPU(serverPID, dbPID int) cpuSnapshot {
	return cpuSnapshot{client: cpuOf(os.Getpid()), server: cpuOf(serverPID), db: cpuOfChildren(dbPID)}
}

// perOp returns microseconds of CPU per operation between two snapshots.
func perOp(before, after time.Duration, ops int64) float64 {
	if ops == 0 || after <= before {
		return 0
	}
	return float64(after-before) / float64(time.Microsecond) / float64(ops)
}

// rssSampler follows a process's resident memory while a run goes.
type rssSampler struct {
	pid  int
	mu   sync.Mutex
	peak int64 // bytes, since the last reset
	stop chan struct{}
	done chan struct{}
}

// sampleRSS reads pid's resident memory every 50ms until stopped. A zero
// pid samples nothing.
func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		if pid == 0 {
			return
		}
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			s.sample()
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// sample reads the process's resident memory now and keeps the peak.
func (s *rssSampler) sample() {
	if s.pid == 0 {
		return
	}
	p, err := procfs.NewProc(s.pid)
	if err != nil {
		return
	}
	if st, err := p.Stat(); err == nil {
		s.mu.Lock()
		s.peak = max(s.peak, int64(st.ResidentMemory()))
		s.mu.Unlock()
	}
}

// takePeak returns the peak since the last call, in MiB, and starts over.
// It samples once itself, so that a run shorter than the sampling period
// still has a figure.
func (s *rssSampler) takePeak() float64 {
	s.sample()
	s.mu.Lock()
	defer s.mu.Unlock()
	peak := s.peak
	s.peak = 0
	return float64(peak) / (1 << 20)
}

func (s *rssSampler) close() { close(s.stop); <-s.done }
