package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/internal/pgtest"
)

// soakClient runs a mixed workload on keys of its own, keeping a model of
// what it stored, so that every answer's code is predicted exactly.
type soakClient struct {
	id     int
	c      cachev1connect.CacheServiceClient
	rng    *rand.Rand
	stored map[string]string // key -> uri
}

// step runs one random operation and returns an error if its answer is not
// the predicted one.
func (s *soakClient) step(ctx context.Context) error {
	key := fmt.Sprintf("c%d-k%d", s.id, s.rng.IntN(32))
	uri := fmt.Sprintf("s3://b/%s/%d", key, s.rng.Uint32())
	owner := fmt.Sprintf("c%d", s.id)
	switch op := s.rng.IntN(8); op {
	case 0, 1: // Put without overwrite
		_, err := s.c.Put(ctx, connect.NewRequest(&cachev1.PutRequest{Scope: scope(), Key: key, Output: uriOf(uri)}))
		if _, ok := s.stored[key]; ok {
			return wantCode("put existing "+key, err, connect.CodeAlreadyExists)
		}
		s.stored[key] = uri
		return wantCode("put "+key, err, 0)
	case 2: // Put with overwrite
		_, err := s.c.Put(ctx, connect.NewRequest(&cachev1.PutRequest{Scope: scope(), Key: key, Output: uriOf(uri), Overwrite: true}))
		s.stored[key] = uri
		return wantCode("overwrite "+key, err, 0)
	case 3, 4: // Get
		res, err := s.c.Get(ctx, connect.NewRequest(&cachev1.GetRequest{Scope: scope(), Key: key}))
		want, ok := s.stored[key]
		if !ok {
			return wantCode("get missing "+key, err, connect.CodeNotFound)
		}
		if err != nil || res.Msg.GetOutput().GetUri() != want {
			return fmt.Errorf("get %s: %v, %v; want %s", key, res, err, want)
		}
	case 5: // Delete
		_, err := s.c.Delete(ctx, connect.NewRequest(&cachev1.DeleteRequest{Scope: scope(), Key: key}))
		if _, ok := s.stored[key]; !ok {
			return wantCode("delete missing "+key, err, connect.CodeNotFound)
		}
		delete(s.stored, key)
		return wantCode("delete "+key, err, 0)
	case 6: // claim one of its own keys, then a contended one
		res, err := s.c.GetOrExtendReservation(ctx, connect.NewRequest(&cachev1.GetOrExtendReservationRequest{Scope: scope(), Key: key, OwnerId: owner}))
		if err != nil || res.Msg.GetReservation().GetOwnerId() != owner {
			return fmt.Errorf("claim own %s: %v, %v", key, res, err)
		}
		shared := fmt.Sprintf("shared-%d", s.rng.IntN(4))
		_, err = s.c.GetOrExtendReservation(ctx, connect.NewRequest(&cachev1.GetOrExtendReservationRequest{
			Scope: scope(), Key: shared, OwnerId: owner, HeartbeatInterval: durationpb.New(20 * time.Millisecond)}))
		return wantCode("claim "+shared, err, 0)
	case 7: // release (own key, then the contended one, held or not)
		_, err := s.c.ReleaseReservation(ctx, connect.NewRequest(&cachev1.ReleaseReservationRequest{Scope: scope(), Key: key, OwnerId: owner}))
		if err != nil {
			return fmt.Errorf("release %s: %v", key, err)
		}
		_, err = s.c.ReleaseReservation(ctx, connect.NewRequest(&cachev1.ReleaseReservationRequest{Scope: scope(), Key: fmt.Sprintf("shared-%d", s.rng.IntN(4)), OwnerId: owner}))
		return wantCode("release shared", err, 0)
	}
	return nil
}

func wantCode(what string, err error, code connect.Code) error {
	if code == 0 && err == nil || err != nil && connect.CodeOf(err) == code {
		return nil
	}
	return fmt.Errorf("%s: %v, want %v", what, err, map[bool]any{true: "success", false: code}[code == 0])
}

// TestSoakMixedWorkloadHasNoErrorsAndFlatMemory runs Gets, Puts, Deletes,
// claims and releases from 24 clients over two replicas for a bounded time
// (10s; 3 minutes under CACHESERVICE_LONG): every answer is the one the
// clients' model predicts, no server logs an error, and the servers'
// resident memory levels off instead of growing.
func TestSoakMixedWorkloadHasNoErrorsAndFlatMemory(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	servers := []*serverProc{
		// Contended claims use 20ms heartbeats, so that leases lapse during the soak.
		startServer(t, "soak-0", "--database-url", url, "--log-level", "info", "--min-heartbeat", "10ms"),
		startServer(t, "soak-1", "--database-url", url, "--log-level", "info", "--min-heartbeat", "10ms"),
	}
	duration := pick(10*time.Second, 3*time.Minute)
	const clients = 24
	ctx, cancel := context.WithTimeout(t.Context(), duration)
	defer cancel()

	var ops atomic.Int64
	var wg sync.WaitGroup
	failures := make(chan error, clients)
	for i := range clients {
		srv := servers[i%len(servers)]
		c := srv.connectClient()
		if i%4 >= 2 {
			c = srv.grpcClient()
		}
		sc := &soakClient{id: i, c: c, rng: rand.New(rand.NewPCG(uint64(i), 99)), stored: map[string]string{}}
		wg.Go(func() {
			for ctx.Err() == nil {
				callCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := sc.step(callCtx)
				cancel()
				if err != nil {
					failures <- fmt.Errorf("client %d after %d ops: %w", i, ops.Load(), err)
					return
				}
				ops.Add(1)
			}
		})
	}
	// Sample every server's RSS twice a second while the load runs.
	samples := make([][]int, len(servers))
	tick := time.NewTicker(500 * time.Millisecond)
	for sampling := true; sampling; {
		select {
		case <-ctx.Done():
			sampling = false
		case <-tick.C:
			for i, s := range servers {
				samples[i] = append(samples[i], s.rssKiB(t))
			}
		}
	}
	tick.Stop()
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Error(err)
	}
	for i, s := range servers {
		if errs := s.logsAt("ERROR"); len(errs) > 0 {
			t.Errorf("%s logged %d errors, first: %v", s.name, len(errs), errs[0])
		}
		// Skip the first third (warm-up: pool, caches, GC settling); the
		// last third's median may not exceed the middle third's by more than
		// 25% + 16 MiB.
		n := len(samples[i])
		mid, last := median(samples[i][n/3:2*n/3]), median(samples[i][2*n/3:])
		t.Logf("%s RSS: middle third %d KiB, last third %d KiB (%d samples)", s.name, mid, last, n)
		if last > mid*5/4+16<<10 {
			t.Errorf("%s memory grows: RSS median %d KiB, then %d KiB", s.name, mid, last)
		}
	}
	t.Logf("%d operations in %v from %d clients over %d replicas, all answered as predicted", ops.Load(), duration, clients, len(servers))
}

func median(xs []int) int {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
