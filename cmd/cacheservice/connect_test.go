package main

import (
	"context"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/internal/pgtest"
)

// testPassword is put in every URL of these tests: PostgreSQL's trust
// authentication ignores it, and no log line may show it.
const testPassword = "s3cret-pw-8d1f"

// unusedAddr returns a loopback address with nothing listening on it (for
// now): a port the kernel handed out and the test gave back.
func unusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// withPassword returns u with testPassword and, if user is not empty, that user.
func withPassword(t *testing.T, u, user string) string {
	t.Helper()
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	if user == "" {
		user = parsed.User.Username()
	}
	parsed.User = url.UserPassword(user, testPassword)
	return parsed.String()
}

// runUntilError runs the server with args until run returns, which it must
// within limit, and returns its error and the log.
func runUntilError(t *testing.T, limit time.Duration, args ...string) (error, string) {
	t.Helper()
	cfg, err := parseConfig(append([]string{"--addr", "127.0.0.1:0"}, args...), noEnv, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, newLogger(logs, cfg), ln, nil) }()
	select {
	case err := <-done:
		return err, logs.String()
	case <-time.After(limit):
		cancel()
		<-done
		t.Fatalf("run still starting after %v:\n%s", limit, logs)
		return nil, ""
	}
}

var retryLine = regexp.MustCompile(`(?m)^.*msg="database unreachable, retrying" attempt=(\d+) reason="([^"]+)".*$`)

// TestStartWaitsForTheDatabase starts the server while nothing listens at
// its database's address, then, two seconds later, puts the database there:
// the server logs one line per failed attempt (why, never the password),
// then migrates and serves.
func TestStartWaitsForTheDatabase(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	addr := unusedAddr(t)
	dbURL := withPassword(t, pgtest.TCPURL(t, db, addr), "")
	go func() {
		time.Sleep(2 * time.Second)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("listen on %s to let the database in: %v", addr, err)
			return
		}
		pgtest.Forward(t, ln, db)
	}()

	srv := startServerWith(t, "--database-url", dbURL, "--db-connect-timeout", "30s")
	putAndGet(t, cachev1connect.NewCacheServiceClient(http1Client(t), srv.url, connect.WithProtoJSON()))

	logs := srv.logs.String()
	attempts := retryLine.FindAllStringSubmatch(logs, -1)
	if len(attempts) < 2 {
		t.Fatalf("%d retry lines in 2s of an unreachable database, want several:\n%s", len(attempts), logs)
	}
	for i, a := range attempts {
		if a[1] != strconv.Itoa(i+1) || a[2] != "connection refused" {
			t.Errorf("retry line %d = %q, want attempt=%d reason=\"connection refused\"", i, a[0], i+1)
		}
	}
	if !strings.Contains(logs, `msg="database reachable"`) {
		t.Errorf("no line saying the database became reachable:\n%s", logs)
	}
	if strings.Contains(logs, testPassword) {
		t.Errorf("the log shows the database password:\n%s", logs)
	}
	t.Logf("served after %d failed attempts", len(attempts))
}

// TestStartGivesUpAfterConnectTimeout: with nothing ever listening, start
// fails after --db-connect-timeout, naming it, not before.
func TestStartGivesUpAfterConnectTimeout(t *testing.T) {
	t.Parallel()
	dbURL := withPassword(t, pgtest.TCPURL(t, pgtest.NewDatabase(t), unusedAddr(t)), "")
	started := time.Now()
	err, logs := runUntilError(t, 30*time.Second, "--database-url", dbURL, "--db-connect-timeout", "2s")
	took := time.Since(started)
	if err == nil || !strings.Contains(err.Error(), "--db-connect-timeout") || !strings.Contains(err.Error(), "still unreachable") {
		t.Fatalf("run = %v, want still unreachable naming --db-connect-timeout", err)
	}
	if took < time.Second {
		t.Errorf("gave up after %v, before --db-connect-timeout=2s had nearly passed", took)
	}
	if n := len(retryLine.FindAllString(logs, -1)); n < 2 {
		t.Errorf("%d retry lines, want one per failed attempt:\n%s", n, logs)
	}
	if strings.Contains(logs+err.Error(), testPassword) {
		t.Errorf("the password leaked: %v\n%s", err, logs)
	}
}

// TestStartFailsAtOnceWhenRetryingCannotHelp: a login the server refuses
// (SQLSTATE class 28; here a role that does not exist), another answer
// waiting cannot change (an unknown run-time parameter) and a URL that does
// not parse fail the start at once, with no retry, however long
// --db-connect-timeout is.
func TestStartFailsAtOnceWhenRetryingCannotHelp(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pgtest.Forward(t, ln, db)
	tests := []struct {
		name, url, want string
	}{
		{"refused login", withPassword(t, pgtest.TCPURL(t, db, ln.Addr().String()), "no_such_role"), "authentication refused (SQLSTATE 28000)"},
		{"unknown run-time parameter", withPassword(t, pgtest.TCPURL(t, db, ln.Addr().String()), "") + "&no_such_setting_zz=1", "refused by the server (SQLSTATE 42704)"},
		{"bad url", "postgres://user:" + testPassword + "@127.0.0.1:5432/db?sslmode=nonsense", "parse database url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err, logs := runUntilError(t, 15*time.Second, "--database-url", tt.url, "--db-connect-timeout", "10m")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run = %v, want %q", err, tt.want)
			}
			if retryLine.MatchString(logs) {
				t.Errorf("retried although retrying cannot help:\n%s", logs)
			}
			if strings.Contains(err.Error()+logs, testPassword) {
				t.Errorf("the password leaked: %v\n%s", err, logs)
			}
		})
	}
}
