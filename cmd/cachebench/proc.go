package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// which is 100 on every Linux that Go supports.
const clockTick = 10 * time.Millisecond

// procStat is what the tool reads from /proc/<pid>/stat.
type procStat struct {
	ppid int
	cpu  time.Duration // user + system time
}

func readStat(pid string) (procStat, error) {
	data, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return procStat{}, err
	}
	// The command name may hold spaces and parentheses; fields follow the last ')'.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return procStat{}, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return procStat{}, errors.New("short /proc stat")
	}
	ppid, _ := strconv.Atoi(f[1])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return procStat{ppid: ppid, cpu: time.Duration(utime+stime) * clockTick}, nil
}

// cpuOf returns the CPU time pid has used, zero if it cannot be read.
func cpuOf(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	st, err := readStat(strconv.Itoa(pid))
	if err != nil {
		return 0
	}
	return st.cpu
}

// cpuOfChildren returns the CPU time used by pid's children: for the
// postmaster, its backends and background workers. Backends that exited
// are lost, but pools keep theirs open for the whole run.
func cpuOfChildren(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var total time.Duration
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		if st, err := readStat(e.Name()); err == nil && st.ppid == pid {
			total += st.cpu
		}
	}
	return total
}

// cpuSnapshot is the CPU time used so far by each side of a run.
type cpuSnapshot struct{ client, server, db time.Duration }

func takeCPU(e *env) cpuSnapshot {
	return cpuSnapshot{client: cpuOf(os.Getpid()), server: cpuOf(e.serverPID), db: cpuOfChildren(e.dbPID)}
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

// sampleRSS reads pid's VmRSS every 50ms until stopped. A zero pid samples
// nothing.
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
			if rss, err := readRSS(pid); err == nil {
				s.mu.Lock()
				s.peak = max(s.peak, rss)
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// takePeak returns the peak since the last call, in MiB, and starts over.
func (s *rssSampler) takePeak() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	peak := s.peak
	s.peak = 0
	return float64(peak) / (1 << 20)
}

func (s *rssSampler) close() { close(s.stop); <-s.done }

// readRSS returns the VmRSS of pid in bytes.
func readRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}
