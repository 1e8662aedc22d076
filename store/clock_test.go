package store_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/cacheservice/cacheservice/store"
)

// TestCheckClockRefusesAnOffset: a session whose clock is moved by
// cacheservice.clock_offset, from its connection string or from ALTER
// DATABASE, fails CheckClock with ErrClockOffset in one line, unless the
// test-only AllowClockOffset is set; no offset, or a zero one, passes.
func TestCheckClockRefusesAnOffset(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	check := func(connString string, allow bool) error {
		t.Helper()
		st, err := store.Open(t.Context(), store.Config{URL: connString, MaxConns: 2, Timeout: 10 * time.Second, AllowClockOffset: allow})
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		defer st.Close()
		return st.CheckClock(t.Context())
	}
	wantRefused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, store.ErrClockOffset) {
			t.Fatalf("%s: CheckClock = %v, want ErrClockOffset", what, err)
		}
		if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "test-only clock offset") {
			t.Errorf("%s: %q, want one line naming the test-only clock offset", what, err)
		}
	}

	if err := check(url, false); err != nil {
		t.Fatalf("no offset: CheckClock = %v, want nil", err)
	}
	if err := check(pgtest.WithClockOffset(url, 0), false); err != nil {
		t.Fatalf("zero offset: CheckClock = %v, want nil", err)
	}
	wantRefused("offset in the connection string", check(pgtest.WithClockOffset(url, -time.Minute), false))
	if err := check(pgtest.WithClockOffset(url, -time.Minute), true); err != nil {
		t.Fatalf("offset allowed: CheckClock = %v, want nil", err)
	}
	// WithClockOffset spells the value in either form of connection string.
	notInterval := strings.Replace(pgtest.WithClockOffset(url, 7*time.Microsecond), "7us", "soon", 1)
	wantRefused("offset not an interval", check(notInterval, false))

	pgtest.SetClockOffset(t, url, time.Hour)
	wantRefused("offset set by ALTER DATABASE", check(url, false))
	if err := check(url, true); err != nil {
		t.Fatalf("ALTER DATABASE offset allowed: CheckClock = %v, want nil", err)
	}
}
