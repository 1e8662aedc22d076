package reliability

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/procfs"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/internal/pgtest"
)

// putLoad is a crowd of writers putting distinct keys, each with a value
// derived from its key, that remembers which Puts were acknowledged.
type putLoad struct {
	mu    sync.Mutex
	acked map[string][]byte // key -> value the server said OK to
	tried map[string][]byte // every key sent, acknowledged or not
}

// valueOf is the value written under key: large enough to span pages, and
// different for every key, so a torn or misplaced write shows.
func valueOf(key string) []byte {
	return bytes.Repeat([]byte(key+"|"), 2000/len(key)+1)
}

// run sends Puts from writers goroutines to srv until stop is closed or
// each writer has sent max, and returns when all have stopped. Errors are
// expected once the server dies: such Puts are unacknowledged.
func (l *putLoad) run(srv *serverProc, round, writers, max int, stop <-chan struct{}, acked *atomic.Int64) {
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			c := srv.connectClient()
			if w%2 == 1 {
				c = srv.grpcClient()
			}
			for i := range max {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("r%d-w%d-%d", round, w, i)
				val := valueOf(key)
				l.mu.Lock()
				l.tried[key] = val
				l.mu.Unlock()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := c.Put(ctx, connect.NewRequest(&cachev1.PutRequest{
					Scope: scope(), Key: key,
					Output: &cachev1.CachedOutput{
						Value:    &cachev1.CachedOutput_Inline{Inline: val},
						Metadata: &cachev1.Metadata{Labels: map[string]string{"key": key}},
					},
				}))
				cancel()
				if err != nil {
					return // the server is gone; this Put's fate is unknown
				}
				l.mu.Lock()
				l.acked[key] = val
				l.mu.Unlock()
				acked.Add(1)
			}
		})
	}
	wg.Wait()
}

// start runs the load on srv in the background and returns once minAcked
// Puts have been acknowledged (bounded), so that a kill lands mid-load. The
// returned function stops the load and waits for its writers.
func (l *putLoad) start(t *testing.T, srv *serverProc, round, writers int, minAcked int64) (stop func()) {
	t.Helper()
	var acked atomic.Int64
	stopCh := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.run(srv, round, writers, 10_000, stopCh, &acked)
	}()
	stop = func() {
		close(stopCh)
		<-done
	}
	for deadline := time.Now().Add(time.Minute); acked.Load() < minAcked; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("round %d: only %d Puts acknowledged in a minute", round, acked.Load())
		}
	}
	return stop
}

// verify reads every key tried through srv: an acknowledged one must hold
// exactly its value; an unacknowledged one holds its value or nothing.
func (l *putLoad) verify(t *testing.T, srv *serverProc) (acked, unackedStored int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	c := srv.grpcClient()
	for key, val := range l.tried {
		got, err := c.Get(t.Context(), connect.NewRequest(&cachev1.GetRequest{Scope: scope(), Key: key}))
		_, wasAcked := l.acked[key]
		switch {
		case err == nil:
			out := got.Msg.GetOutput()
			if !bytes.Equal(out.GetInline(), val) || out.GetMetadata().GetLabels()["key"] != key {
				t.Fatalf("%s holds %d bytes (labels %v), not the %d bytes sent", key, len(out.GetInline()), out.GetMetadata().GetLabels(), len(val))
			}
			if !wasAcked {
				unackedStored++
			}
		case connect.CodeOf(err) == connect.CodeNotFound && !wasAcked:
		default:
			t.Fatalf("get %s (acknowledged: %v): %v", key, wasAcked, err)
		}
	}
	return len(l.acked), unackedStored
}

// TestKill9UnderPutLoadLosesNoAcknowledgedPut kills the server with SIGKILL
// in the middle of a Put load, restarts it on the same database, and
// repeats. Every Put acknowledged before a kill reads back with exactly
// the value sent; an unacknowledged one is there whole or not at all.
func TestKill9UnderPutLoadLosesNoAcknowledgedPut(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	load := &putLoad{acked: map[string][]byte{}, tried: map[string][]byte{}}
	crashes := pick(3, 10)
	srv := startServer(t, "server-0", "--database-url", url)
	for round := range crashes {
		stopLoad := load.start(t, srv, round, 16, 200)
		srv.kill9()
		stopLoad()
		srv = startServer(t, fmt.Sprintf("server-%d", round+1), "--database-url", url)
		n, extra := load.verify(t, srv)
		t.Logf("crash %d: %d Puts acknowledged so far, all intact; %d unacknowledged Puts were stored whole", round+1, n, extra)
	}
}

// TestEmbeddedServerKill9KeepsAcknowledgedPuts kills the server with SIGKILL
// while it runs on its embedded PostgreSQL under a Put load. The
// PostgreSQL it started does not outlive it, the next serve on the same
// data directory starts cleanly, and every acknowledged Put is there.
func TestEmbeddedServerKill9KeepsAcknowledgedPuts(t *testing.T) {
	t.Parallel()
	dataDir := postgresDir(t)
	load := &putLoad{acked: map[string][]byte{}, tried: map[string][]byte{}}
	crashes := pick(2, 6)
	srv := startServer(t, "embedded-0", "--data-dir", dataDir)
	for round := range crashes {
		postmaster := readPostmasterPid(t, dataDir)
		stopLoad := load.start(t, srv, round, 8, 100)
		backends := childrenOf(postmaster) // its backends serving the load too
		srv.kill9()
		stopLoad()
		// PostgreSQL gets SIGINT from the kernel when its parent dies: a fast
		// shutdown takes seconds.
		if !processGone(postmaster, 30*time.Second) {
			t.Fatalf("round %d: embedded postgres (pid %d) outlived its server by 30s", round, postmaster)
		}
		for _, pid := range backends {
			if !processGone(pid, 10*time.Second) {
				t.Fatalf("round %d: postgres process %d outlived its postmaster", round, pid)
			}
		}
		srv = startServer(t, fmt.Sprintf("embedded-%d", round+1), "--data-dir", dataDir)
		n, extra := load.verify(t, srv)
		t.Logf("crash %d: postgres %d and its %d children gone; %d Puts acknowledged so far, all intact; %d unacknowledged stored whole",
			round+1, postmaster, len(backends), n, extra)
	}
	// A graceful stop leaves no postgres either.
	postmaster := readPostmasterPid(t, dataDir)
	if !srv.stop(30 * time.Second) {
		t.Fatalf("server did not stop on SIGTERM within 30s")
	}
	if !processGone(postmaster, 10*time.Second) {
		t.Fatalf("embedded postgres (pid %d) outlived a graceful stop", postmaster)
	}
}

// readPostmasterPid reads the embedded cluster's postmaster.pid.
func readPostmasterPid(t *testing.T, dataDir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "pgdata", "postmaster.pid"))
	if err != nil {
		t.Fatalf("read postmaster.pid: %v", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		t.Fatalf("parse postmaster.pid: %v", errors.Join(err, errors.New(first)))
	}
	return pid
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	procs, err := procfs.AllProcs()
	if err != nil {
		return nil
	}
	var out []int
	for _, p := range procs {
		if st, err := p.Stat(); err == nil && st.PPID == pid {
			out = append(out, p.PID)
		}
	}
	return out
}
