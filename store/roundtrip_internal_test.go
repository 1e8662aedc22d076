package store

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cacheservice/cacheservice/internal/pgtest"
)

// tripCounter counts round trips on the connections it dials: a write that
// follows a read (or comes first) starts a new one. However pgx splits its
// writes and reads, a request and its answer count once.
type tripCounter struct {
	trips atomic.Int64
}

type countedConn struct {
	net.Conn
	c       *tripCounter
	reading atomic.Bool // the last call was a read
	wrote   atomic.Bool // anything was written yet
}

func (cc *countedConn) Write(p []byte) (int, error) {
	if cc.reading.Swap(false) || !cc.wrote.Swap(true) {
		cc.c.trips.Add(1)
	}
	return cc.Conn.Write(p)
}

func (cc *countedConn) Read(p []byte) (int, error) {
	cc.reading.Store(true)
	return cc.Conn.Read(p)
}

// TestRoundTrips counts the database round trips of each operation on a warm
// connection (its statements already prepared): one for Get, Put, Delete and
// Release, two for a claim in a transaction (its lock timeout and its
// reading of the clock included), one for Store.ClaimReservation's create
// and held, two for its extend (the read, then the extension: one
// statement, no transaction).
func TestRoundTrips(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cfg, err := pgxpool.ParseConfig(pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns, cfg.MinConns = 1, 0
	// The pool's own liveness pings (after an idle second, as a loaded
	// machine can leave between two operations) would count as trips.
	cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return false }
	cfg.HealthCheckPeriod = time.Hour
	counter := &tripCounter{}
	dial := cfg.ConnConfig.DialFunc
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countedConn{Conn: conn, c: counter}, nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	s := newStore(pool, 10*time.Second, time.Second)
	id := ID{"o", "p", "d", "k"}
	claim := func(owner string) func() error {
		return func() error {
			return s.InTx(ctx, func(ctx context.Context, tx *Tx) error {
				_, err := tx.ClaimReservation(ctx, Claim{ID: id, OwnerID: owner, HeartbeatInterval: time.Second, Lease: time.Minute})
				return err
			})
		}
	}
	storeClaim := func(owner string) func() error {
		return func() error {
			_, err := s.ClaimReservation(ctx, Claim{ID: id, OwnerID: owner, HeartbeatInterval: time.Second, Lease: time.Minute})
			return err
		}
	}
	ops := []struct {
		name string
		want int64
		op   func() error
	}{
		{"put", 1, func() error {
			return s.PutEntry(ctx, Entry{ID: id, URI: "u"}, Replace{Always: true})
		}},
		{"get", 1, func() error { _, err := s.GetEntry(ctx, id); return err }},
		{"delete", 1, func() error { return s.DeleteEntry(ctx, id) }},
		{"claim, creating the reservation", 2, claim("w1")},
		{"claim, finding it held", 2, claim("w2")},
		{"claim, extending it", 2, claim("w1")},
		{"release", 1, func() error { _, err := s.ReleaseReservation(ctx, id, "w1"); return err }},
		// Store.ClaimReservation needs the locked transaction only for an
		// expired row.
		{"store claim, creating the reservation", 1, storeClaim("w1")},
		{"store claim, finding it held", 1, storeClaim("w2")},
		{"store claim, extending it", 2, storeClaim("w1")},
		{"release again", 1, func() error { _, err := s.ReleaseReservation(ctx, id, "w1"); return err }},
	}
	// Warm up: connect, and let pgx prepare and cache every statement. Each
	// pass leaves the rows as the next pass needs them.
	for _, o := range ops {
		if err := o.op(); err != nil {
			t.Fatalf("warm-up %s: %v", o.name, err)
		}
	}
	for _, o := range ops {
		before := counter.trips.Load()
		if err := o.op(); err != nil {
			t.Fatalf("%s: %v", o.name, err)
		}
		if got := counter.trips.Load() - before; got != o.want {
			t.Errorf("%s: %d round trips, want %d", o.name, got, o.want)
		}
	}
}
