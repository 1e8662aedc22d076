package manager_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/manager"
)

// seedReservations inserts n reservations key0..key(n-1) held by owner and
// expiring at the database's clock plus in, straight into the table.
func (b *observedBundle) seedReservations(t *testing.T, prefix string, n int, owner string, in time.Duration) {
	t.Helper()
	_, err := b.pool.Exec(b.ctx, `
		INSERT INTO reservations (org, project, domain, key, owner_id, heartbeat_interval_ns, expires_at)
		SELECT $1, $2, $3, $4 || g, $5, 1000000000, cache_now() + $6::interval FROM generate_series(0, $7 - 1) g`,
		scope().Org, scope().Project, scope().Domain, prefix, owner, in, n)
	if err != nil {
		t.Fatalf("seed reservations %s: %v", prefix, err)
	}
}

// seedEntries inserts n entries key0..key(n-1) last updated at the
// database's clock plus in (negative: in the past).
func (b *observedBundle) seedEntries(t *testing.T, prefix string, n int, in time.Duration) {
	t.Helper()
	_, err := b.pool.Exec(b.ctx, `
		INSERT INTO cache_entries (org, project, domain, key, output_uri, created_at, last_updated_at)
		SELECT $1, $2, $3, $4 || g, 'seeded', cache_now() + $5::interval, cache_now() + $5::interval FROM generate_series(0, $6 - 1) g`,
		scope().Org, scope().Project, scope().Domain, prefix, in, n)
	if err != nil {
		t.Fatalf("seed entries %s: %v", prefix, err)
	}
}

// rows runs query, which selects a key and a text describing its row, and
// returns them as a map.
func (b *observedBundle) rows(t *testing.T, query string) map[string]string {
	t.Helper()
	rows, err := b.pool.Query(b.ctx, query)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	got := map[string]string{}
	var k, v string
	if _, err := pgx.ForEachRow(rows, []any{&k, &v}, func() error { got[k] = v; return nil }); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return got
}

// reservations describes each reservation by its owner and the whole
// minutes until it expires by the database's clock (a lease of 30s granted
// during the test is "in 0m"; one seeded at -30m is "in -30m").
func (b *observedBundle) reservations(t *testing.T) map[string]string {
	t.Helper()
	return b.rows(t, `SELECT key, owner_id || ' in ' || floor(extract(epoch FROM expires_at - cache_now()) / 60 + 0.5) || 'm' FROM reservations`)
}

func (b *observedBundle) entries(t *testing.T) map[string]string {
	t.Helper()
	return b.rows(t, `SELECT key, output_uri FROM cache_entries`)
}

func TestSweepDeletesPastRetentionAndTTLOnly(t *testing.T) {
	t.Parallel()
	b := setupObserved(t)
	b.seedReservations(t, "gone", 3, "w", -time.Hour-10*time.Second)
	b.seedReservations(t, "kept-at-cutoff", 1, "w", -time.Hour+10*time.Second)
	b.seedReservations(t, "kept-expired", 2, "w", -time.Minute)
	b.seedReservations(t, "kept-live", 2, "w", time.Minute)
	b.seedEntries(t, "gone", 4, -24*time.Hour-10*time.Second)
	b.seedEntries(t, "kept-at-cutoff", 1, -24*time.Hour+10*time.Second)
	b.seedEntries(t, "kept", 2, -time.Hour)

	cfg := manager.SweepConfig{ReservationRetention: time.Hour, EntryTTL: 24 * time.Hour}
	res, err := b.manager.Sweep(b.ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Reservations != 3 || res.Entries != 4 || res.Incomplete {
		t.Errorf("result = %+v, want 3 reservations and 4 entries, complete", res)
	}
	for name, rows := range map[string]map[string]string{"reservations": b.reservations(t), "entries": b.entries(t)} {
		for key := range rows {
			if key[:4] != "kept" {
				t.Errorf("%s: %s was not deleted", name, key)
			}
		}
	}
	if got := len(b.reservations(t)); got != 5 {
		t.Errorf("%d reservations left, want 5", got)
	}
	if got := len(b.entries(t)); got != 3 {
		t.Errorf("%d entries left, want 3", got)
	}
	if b.rec.sweepCount() != 1 || b.rec.sweeps[0].Reservations != 3 || b.rec.sweeps[0].Entries != 4 || b.rec.sweepErrs[0] != nil {
		t.Errorf("observed sweeps %+v (errors %v), want the one result", b.rec.sweeps, b.rec.sweepErrs)
	}
}

func TestSweepWithoutEntryTTLKeepsEntries(t *testing.T) {
	t.Parallel()
	b := setupObserved(t)
	b.seedEntries(t, "ancient", 3, -10*365*24*time.Hour)
	res, err := b.manager.Sweep(b.ctx, manager.SweepConfig{})
	if err != nil || res.Entries != 0 {
		t.Fatalf("sweep = %+v, %v; want no entries deleted", res, err)
	}
	if got := len(b.entries(t)); got != 3 {
		t.Fatalf("%d entries left, want 3", got)
	}
}

func TestSweepPassIsBoundedByMaxBatches(t *testing.T) {
	t.Parallel()
	b := setupObserved(t)
	b.seedReservations(t, "r", 5, "w", -2*time.Hour)
	cfg := manager.SweepConfig{ReservationRetention: time.Hour, BatchSize: 2, MaxBatches: 2}
	first, err := b.manager.Sweep(b.ctx, cfg)
	if err != nil || first.Reservations != 4 || !first.Incomplete {
		t.Fatalf("first pass = %+v, %v; want 4 deleted and incomplete", first, err)
	}
	second, err := b.manager.Sweep(b.ctx, cfg)
	if err != nil || second.Reservations != 1 || second.Incomplete {
		t.Fatalf("second pass = %+v, %v; want the last 1 deleted, complete", second, err)
	}
}

func TestRunSweeperSweepsEveryIntervalUntilCancelled(t *testing.T) {
	t.Parallel()
	b := setupObserved(t)
	b.seedReservations(t, "r", 3, "w", -2*time.Hour)
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.manager.RunSweeper(ctx, manager.SweepConfig{Interval: 20 * time.Millisecond, ReservationRetention: time.Hour})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for b.rec.sweepCount() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("RunSweeper did not return after its context ended")
	}
	if n := b.rec.sweepCount(); n < 3 {
		t.Fatalf("%d passes in 10s at a 20ms interval, want at least 3", n)
	}
	if got := len(b.reservations(t)); got != 0 {
		t.Fatalf("%d reservations left, want 0", got)
	}
}

// logDeletions makes the database record every committed row deletion, so a
// test can tell which rows were deleted and how many times.
func (b *observedBundle) logDeletions(t *testing.T) {
	t.Helper()
	_, err := b.pool.Exec(b.ctx, `
		CREATE TABLE deletions (tbl text NOT NULL, key text NOT NULL);
		CREATE FUNCTION log_deletion() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO deletions VALUES (TG_TABLE_NAME, OLD.key);
			RETURN OLD;
		END $$;
		CREATE TRIGGER log_deletion AFTER DELETE ON reservations FOR EACH ROW EXECUTE FUNCTION log_deletion();
		CREATE TRIGGER log_deletion AFTER DELETE ON cache_entries FOR EACH ROW EXECUTE FUNCTION log_deletion();`)
	if err != nil {
		t.Fatalf("install deletion log: %v", err)
	}
}

// TestConcurrentSweepersDeleteEachOldRowOnceAndNothingElse runs several
// sweepers (as several replicas would) against one database while clients
// take over some of the old reservations, extend live ones, refresh some of
// the old entries and write new keys, all behind one barrier, over several
// trials. A trigger records every deletion. Every untouched old row must be
// deleted exactly once, no other row at all, a row a client refreshed must
// hold what the client wrote, and the counts the sweepers report must add up
// to the deletions the database saw.
func TestConcurrentSweepersDeleteEachOldRowOnceAndNothingElse(t *testing.T) {
	t.Parallel()
	const (
		trials   = 3
		sweepers = 4
		writers  = 4
		old      = 200 // old reservations and old entries each
		every    = 5   // clients refresh every 5th old one during the sweep, spread over the sweep's order
		others   = 50  // reservations expired within retention, live ones, fresh entries
		newKeys  = 40  // keys the clients create during the sweep
	)
	cfg := manager.SweepConfig{ReservationRetention: time.Hour, EntryTTL: 24 * time.Hour, BatchSize: 7, MaxBatches: 3}
	for trial := range trials {
		b := setupObserved(t)
		b.logDeletions(t)
		b.seedReservations(t, "old", old, "dead", -2*time.Hour)
		b.seedReservations(t, "recent", others, "dead", -30*time.Minute)
		b.seedReservations(t, "live", others, "live", time.Hour)
		b.seedEntries(t, "old", old, -48*time.Hour)
		b.seedEntries(t, "fresh", others, -time.Hour)

		// The clients' work, split among the writers.
		var ops []func() error
		for i := 0; i < old; i += every {
			ops = append(ops,
				func() error { return b.claimAs(fmt.Sprint("old", i), "taker") },
				func() error { return b.putURI(fmt.Sprint("old", i), "refreshed", true) },
			)
		}
		for i := range others / 2 {
			ops = append(ops, func() error { return b.claimAs(fmt.Sprint("live", i), "live") })
		}
		for i := range newKeys {
			ops = append(ops,
				func() error { return b.claimAs(fmt.Sprint("new", i), "creator") },
				func() error { return b.putURI(fmt.Sprint("new", i), "created", false) },
			)
		}

		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, sweepers+len(ops))
		var mu sync.Mutex
		var swept manager.SweepResult
		for range sweepers {
			wg.Go(func() {
				<-start
				for range 100 { // bounded; stops earlier once a pass finds nothing
					res, err := b.manager.Sweep(b.ctx, cfg)
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					swept.Reservations += res.Reservations
					swept.Entries += res.Entries
					mu.Unlock()
					if res.Reservations == 0 && res.Entries == 0 {
						return
					}
				}
			})
		}
		for w := range writers {
			wg.Go(func() {
				<-start
				for i := w; i < len(ops); i += writers {
					if err := ops[i](); err != nil {
						errs <- err
					}
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("trial %d: %v", trial, err)
		}
		// A row a claim held locked was skipped; one more pass takes it.
		last, err := b.manager.Sweep(b.ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		swept.Reservations += last.Reservations
		swept.Entries += last.Entries

		b.checkSweptExactly(t, trial, swept, old, every)

		wantRes, wantEnt := map[string]string{}, map[string]string{}
		for i := 0; i < old; i += every {
			wantRes[fmt.Sprint("old", i)] = "taker in 0m"
			wantEnt[fmt.Sprint("old", i)] = "refreshed"
		}
		for i := range others {
			wantRes[fmt.Sprint("recent", i)] = "dead in -30m"
			wantRes[fmt.Sprint("live", i)] = "live in 60m"
			if i < others/2 {
				wantRes[fmt.Sprint("live", i)] = "live in 0m" // extended: 30s from now
			}
		}
		for i := range others {
			wantEnt[fmt.Sprint("fresh", i)] = "seeded"
		}
		for i := range newKeys {
			wantRes[fmt.Sprint("new", i)] = "creator in 0m"
			wantEnt[fmt.Sprint("new", i)] = "created"
		}
		diffRows(t, fmt.Sprintf("trial %d reservations", trial), b.reservations(t), wantRes)
		diffRows(t, fmt.Sprintf("trial %d entries", trial), b.entries(t), wantEnt)
	}
}

// checkSweptExactly checks the deletion log: each untouched old row deleted
// exactly once, a touched one at most once (before the client recreated it),
// nothing else, and the sweepers' counts equal to the log's.
func (b *observedBundle) checkSweptExactly(t *testing.T, trial int, swept manager.SweepResult, old, every int) {
	t.Helper()
	counts := map[string]map[string]int{"reservations": {}, "cache_entries": {}}
	rows, err := b.pool.Query(b.ctx, `SELECT tbl, key, count(*)::int FROM deletions GROUP BY tbl, key`)
	if err != nil {
		t.Fatal(err)
	}
	var tbl, key string
	var n int
	total := map[string]int64{}
	_, err = pgx.ForEachRow(rows, []any{&tbl, &key, &n}, func() error {
		counts[tbl][key] = n
		total[tbl] += int64(n)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for tbl, byKey := range counts {
		for i := range old {
			key := fmt.Sprint("old", i)
			switch got := byKey[key]; {
			case i%every != 0 && got != 1:
				t.Errorf("trial %d: %s %s deleted %d times, want once", trial, tbl, key, got)
			case i%every == 0 && got > 1:
				t.Errorf("trial %d: %s %s (refreshed by a client) deleted %d times, want at most once", trial, tbl, key, got)
			}
			delete(byKey, key)
		}
		for key, got := range byKey {
			t.Errorf("trial %d: %s %s deleted %d times, want never", trial, tbl, key, got)
		}
	}
	if total["reservations"] != swept.Reservations || total["cache_entries"] != swept.Entries {
		t.Errorf("trial %d: sweepers reported %d reservations and %d entries, the database deleted %d and %d",
			trial, swept.Reservations, swept.Entries, total["reservations"], total["cache_entries"])
	}
	t.Logf("trial %d: swept %d reservations and %d entries; of the %d refreshed by clients, %d and %d were swept before", trial,
		swept.Reservations, swept.Entries, old/every, swept.Reservations-int64(old-old/every), swept.Entries-int64(old-old/every))
}

func diffRows(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for k, w := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("%s: %s missing, want %q", what, k, w)
		} else if g != w {
			t.Errorf("%s: %s = %q, want %q", what, k, g, w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: %s = %q should have been deleted", what, k, g)
		}
	}
}

func (b *observedBundle) claimAs(key, owner string) error {
	res, err := b.manager.GetOrExtendReservation(b.ctx, &cachev1.GetOrExtendReservationRequest{Scope: scope(), Key: key, OwnerId: owner})
	if err == nil && res.GetReservation().GetOwnerId() != owner {
		err = fmt.Errorf("claim %s by %s: held by %s", key, owner, res.GetReservation().GetOwnerId())
	}
	return err
}

func (b *observedBundle) putURI(key, uri string, overwrite bool) error {
	_, err := b.manager.Put(b.ctx, &cachev1.PutRequest{Scope: scope(), Key: key, Output: uriOutput(uri), Overwrite: overwrite})
	return err
}
