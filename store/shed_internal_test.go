package store

import (
	"bytes"
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"
)

// liveHeapMiB collects garbage and returns the bytes of live objects. Three
// collections: pooled buffers (sync.Pool) survive the first.
func liveHeapMiB() float64 {
	for range 3 {
		runtime.GC()
	}
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return float64(s[0].Value.Uint64()) / (1 << 20)
}

// waitIdle waits, boundedly, until no connection of s is checked out.
func waitIdle(t *testing.T, s *Store) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); s.pool.Stat().AcquiredConns() > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("connections still checked out after 10s")
		}
	}
}

// TestALargeEntryLeavesNoBufferPinned puts a 4 MiB entry and reads it
// concurrently on both connections of a pool, then checks that once the
// pool is idle nothing of it stays live: without shedding, each connection
// keeps an 8 MiB read buffer, and one a 4 MiB encoded value, until it is
// used again. Small entries add no statement. Not parallel: it reads the
// process's heap.
func TestALargeEntryLeavesNoBufferPinned(t *testing.T) {
	s := openStore(t, Config{MaxConns: 2, Timeout: 30 * time.Second})
	small := ID{"o", "p", "d", "small"}
	if err := s.PutEntry(t.Context(), Entry{ID: small, Inline: []byte("x")}, Replace{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetEntry(t.Context(), small); err != nil {
		t.Fatal(err)
	}
	if n := s.shed.Load(); n != 0 {
		t.Fatalf("a small Put and Get shed %d connections' buffers, want none", n)
	}
	waitIdle(t, s)
	before := liveHeapMiB()

	large := ID{"o", "p", "d", "large"}
	if err := s.PutEntry(t.Context(), Entry{ID: large, Inline: bytes.Repeat([]byte{'x'}, 4<<20)}, Replace{}); err != nil {
		t.Fatal(err)
	}
	// Rounds of two concurrent Gets, until both connections have read it
	// (bounded: the pool hands out its two connections to two callers).
	for round := 0; round < 50 && s.shed.Load() < 3; round++ {
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		for range 2 {
			wg.Go(func() {
				e, err := s.GetEntry(t.Context(), large)
				if err == nil && len(e.Inline) != 4<<20 {
					err = fmt.Errorf("read %d bytes, want %d", len(e.Inline), 4<<20)
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	waitIdle(t, s)
	after := liveHeapMiB()
	t.Logf("live heap: %.1f MiB before, %.1f MiB after; %d connections shed", before, after, s.shed.Load())
	if s.shed.Load() < 3 {
		t.Fatalf("%d sheds: the Put's and both connections' reads should each have shed", s.shed.Load())
	}
	if after-before > 2 {
		t.Errorf("live heap grew %.1f MiB after a 4 MiB entry was written and read, want under 2", after-before)
	}

	shed := s.shed.Load()
	if _, err := s.GetEntry(t.Context(), small); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, s)
	if n := s.shed.Load(); n != shed {
		t.Errorf("a small Get after a large one shed again (%d, was %d)", n, shed)
	}
}
