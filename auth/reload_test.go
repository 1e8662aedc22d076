package auth

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
)

// whoIs authenticates a static token directly and returns the principal's
// name, or "" when the token is not known.
func whoIs(a *Authenticator, token string) string {
	p, why := a.authenticate(context.Background(), bearer(token), "127.0.0.1:1", nil)
	if why != reasonNone {
		return ""
	}
	return p.Name
}

func singleToken(name, token string) string {
	return "principals:\n  - name: " + name + "\n    token_sha256: " + sha(token) + "\n    grants: [{org: acme, project: '*', domain: '*', role: read}]\n"
}

func TestReloadKeepsThePreviousFileOnError(t *testing.T) {
	t.Parallel()
	a, logs := newAuthenticator(t, singleToken("first", readToken), nil)
	path := a.file

	writeFile(t, path, "principals:\n  - name: broken\n    token_sha256: nothex\n")
	err := a.Reload()
	if err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("Reload of a bad file: %v, want an error naming line 3", err)
	}
	if whoIs(a, readToken) != "first" {
		t.Fatal("the previous file is no longer in force")
	}
	if !strings.Contains(logs.String(), "previous one stays in force") {
		t.Errorf("the failed reload was not logged: %s", logs)
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if a.Reload() == nil || whoIs(a, readToken) != "first" {
		t.Fatal("a missing file replaced the one in force")
	}

	writeFile(t, path, singleToken("second", writeToken))
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if whoIs(a, writeToken) != "second" || whoIs(a, readToken) != "" {
		t.Fatal("the new file is not the one in force")
	}
	if ok, failed := a.stats.reloadsOK.Load(), a.stats.reloadsFailed.Load(); ok != 2 || failed != 2 {
		t.Errorf("reloads ok=%d failed=%d, want 2 and 2", ok, failed)
	}
}

func TestNewRefusesABadFile(t *testing.T) {
	t.Parallel()
	_, err := New(Config{File: writeFile(t, filepath.Join(t.TempDir(), "a.yaml"), "principals:\n  - name: a\n    role: admin\n")})
	if err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("err = %v, want one naming line 3", err)
	}
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "--auth-file") {
		t.Fatalf("err = %v, want one naming --auth-file", err)
	}
}

// TestWatchFollowsASecretSymlinkSwap updates the file the way the kubelet
// updates a mounted Secret: the file is a symlink through "..data", itself a
// symlink to a timestamped directory, and an update points "..data" at a new
// directory with one atomic rename.
func TestWatchFollowsASecretSymlinkSwap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	version := func(name, content string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name, "auth.yaml"), content)
		if err := os.Symlink(name, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_11_30_1", singleToken("first", readToken))
	if err := os.Symlink("..data/auth.yaml", filepath.Join(dir, "auth.yaml")); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{File: filepath.Join(dir, "auth.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	stop, err := a.Watch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("not seen within 10s: %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	version("..2026_11_30_2", singleToken("second", writeToken))
	waitFor("the swapped-in file in force", func() bool { return whoIs(a, writeToken) == "second" })
	if whoIs(a, readToken) != "" {
		t.Fatal("the old token still works")
	}

	// A broken update keeps the last good file, and is counted.
	version("..2026_11_30_3", "principals: [")
	waitFor("the failed reload counted", func() bool { return a.stats.reloadsFailed.Load() == 1 })
	if whoIs(a, writeToken) != "second" {
		t.Fatal("a broken update replaced the file in force")
	}
	// Events that leave the file's bytes alone reload nothing.
	okBefore := a.stats.reloadsOK.Load()
	writeFile(t, filepath.Join(dir, "unrelated"), "x")
	version("..2026_11_30_4", singleToken("third", adminToken))
	waitFor("the next good file in force", func() bool { return whoIs(a, adminToken) == "third" })
	if got := a.stats.reloadsOK.Load(); got != okBefore+1 {
		t.Errorf("%d reloads for one changed file", got-okBefore)
	}
}

func TestCollectorExposesTheCounters(t *testing.T) {
	t.Parallel()
	a, _ := newAuthenticator(t, baseFile(), nil)
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(a.Collector()); err != nil {
		t.Fatal(err)
	}
	_, _, _, _ = a.check(t.Context(), rpcs[0].procedure, bearer("wrong"), "127.0.0.1:1", nil, &cachev1.GetRequest{Scope: testScope})
	_, _, _, _ = a.check(t.Context(), rpcs[1].procedure, bearer(readToken), "127.0.0.1:1", nil, &cachev1.PutRequest{Scope: testScope})
	writeFile(t, a.file, "not: [yaml")
	_ = a.Reload()
	const want = `
# HELP cacheservice_auth_denied_total Authenticated calls refused as permission_denied (no grant for the scope and role).
# TYPE cacheservice_auth_denied_total counter
cacheservice_auth_denied_total 1
# HELP cacheservice_auth_file_reloads_total Loads of the auth file by result: ok, or error (the previous file stayed in force).
# TYPE cacheservice_auth_file_reloads_total counter
cacheservice_auth_file_reloads_total{result="error"} 1
cacheservice_auth_file_reloads_total{result="ok"} 1
# HELP cacheservice_auth_principals Principals in the auth file in force.
# TYPE cacheservice_auth_principals gauge
cacheservice_auth_principals 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "cacheservice_auth_denied_total", "cacheservice_auth_file_reloads_total", "cacheservice_auth_principals"); err != nil {
		t.Fatal(err)
	}
	n, err := testutil.GatherAndCount(reg, "cacheservice_auth_failures_total")
	if err != nil || n != int(numReasons)-1 {
		t.Fatalf("failures_total has %d series (%v), want one per reason", n, err)
	}
	if got := a.stats.failures[reasonUnknownToken].Load(); got != 1 {
		t.Fatalf("unknown_token = %d", got)
	}
}

// TestReloadUnderConcurrentCalls swaps between two files, both granting the
// token, while clients check calls: every call sees one whole file or the
// other, never none or a mix.
func TestReloadUnderConcurrentCalls(t *testing.T) {
	t.Parallel()
	fileA, fileB := singleToken("writer-a", writeToken), singleToken("writer-b", writeToken)
	a, _ := newAuthenticator(t, fileA, nil)
	const workers, calls, reloads = 8, 300, 50
	start := make(chan struct{})
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			<-start
			req := &cachev1.GetRequest{Scope: testScope}
			for range calls {
				p, _, _, err := a.check(context.Background(), rpcs[0].procedure, bearer(writeToken), "127.0.0.1:1", nil, req)
				if err != nil || (p.Name != "writer-a" && p.Name != "writer-b") {
					errs <- fmt.Errorf("principal %v, err %v", p, err)
					return
				}
			}
		})
	}
	close(start)
	for i := range reloads {
		writeFile(t, a.file, []string{fileB, fileA}[i%2])
		if err := a.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
