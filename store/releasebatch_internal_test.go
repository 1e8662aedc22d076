package store

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestReleasesThatQueuedShareOneDelete holds the pool's only connection
// while releases queue: holders releasing their keys, another owner
// releasing a key it does not hold, two identical releases of one key, and
// a key with no reservation. One DELETE serves them all, and each caller
// learns what it alone would have: only a holder's release deletes, and of
// the two identical ones exactly one reports it.
func TestReleasesThatQueuedShareOneDelete(t *testing.T) {
	t.Parallel()
	s := oneConnStore(t)
	for i := range 6 {
		c := Claim{ID: ID{"o", "p", "d", fmt.Sprint("r", i)}, OwnerID: fmt.Sprint("w", i), HeartbeatInterval: time.Second, Lease: time.Minute}
		if _, err := s.ClaimReservation(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	held, err := s.pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	type rel struct {
		key, owner string
		want       bool // whether it deletes (for the identical pair: how many do)
	}
	rels := []rel{
		{"r0", "w0", true}, {"r1", "w1", true}, {"r2", "w2", true},
		{"r3", "someone-else", false},          // r3 stays w3's
		{"r4", "w4", true}, {"r4", "w4", true}, // exactly one of the two
		{"missing", "w9", false},
	}
	got := make([]bool, len(rels))
	errs := make([]error, len(rels))
	var wg sync.WaitGroup
	for i, r := range rels {
		wg.Go(func() { got[i], errs[i] = s.ReleaseReservation(t.Context(), ID{"o", "p", "d", r.key}, r.owner) })
	}
	waitQueued(t, s, func() int { return len(s.releases.waiting) }, len(rels))
	held.Release()
	wg.Wait()
	for i, r := range rels {
		if errs[i] != nil {
			t.Fatalf("release %s by %s: %v", r.key, r.owner, errs[i])
		}
		if i != 4 && i != 5 && got[i] != r.want {
			t.Errorf("release %s by %s = %v, want %v", r.key, r.owner, got[i], r.want)
		}
	}
	if got[4] == got[5] {
		t.Errorf("identical releases of r4 reported %v and %v, want exactly one true", got[4], got[5])
	}
	for key, want := range map[string]bool{"r0": false, "r3": true, "r4": false, "r5": true} {
		_, err := s.GetReservation(t.Context(), ID{"o", "p", "d", key})
		if (err == nil) != want {
			t.Errorf("%s: reservation present = %v, want %v", key, err == nil, want)
		}
	}
	if n := s.releases.batched.Load(); n != int64(len(rels)) {
		t.Errorf("%d releases were served by a shared statement, want all %d", n, len(rels))
	}
}
