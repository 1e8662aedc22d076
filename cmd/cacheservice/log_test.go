package main

import (
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
)

func TestStartIsLoggedWithoutTheDatabaseURL(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	logs := srv.logs.String()
	addr := strings.TrimPrefix(srv.url, "http://")
	if !strings.Contains(logs, "msg=listening addr="+addr+" database=external") {
		t.Errorf("log has no start line with the address and the database kind:\n%s", logs)
	}
	for _, secret := range []string{"dbname", "host=", "postgres://", "pgtest_"} {
		if strings.Contains(logs, secret) {
			t.Errorf("log contains %q:\n%s", secret, logs)
		}
	}
}

func TestFailedRequestIsLoggedOnceWithoutTheRequest(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	client := cachev1connect.NewCacheServiceClient(http1Client(t), srv.url, connect.WithProtoJSON())
	const secretKey = "key-that-must-not-be-logged"
	_, err := client.Get(callCtx(t), connect.NewRequest(&cachev1.GetRequest{Scope: scope(t), Key: secretKey}))
	wantCode(t, err, connect.CodeNotFound)
	_, err = client.Put(callCtx(t), connect.NewRequest(&cachev1.PutRequest{Scope: scope(t), Key: secretKey}))
	wantCode(t, err, connect.CodeInvalidArgument)

	var lines []string
	waitFor(t, 5*time.Second, "two failure lines", func() bool {
		lines = nil
		for line := range strings.Lines(srv.logs.String()) {
			if strings.Contains(line, `msg="request failed"`) {
				lines = append(lines, line)
			}
		}
		return len(lines) >= 2
	})
	wants := []string{
		"procedure=/cacheservice.v1.CacheService/Get protocol=connect code=not_found duration=",
		"procedure=/cacheservice.v1.CacheService/Put protocol=connect code=invalid_argument duration=",
	}
	if len(lines) != len(wants) {
		t.Fatalf("%d failure lines, want %d:\n%s", len(lines), len(wants), strings.Join(lines, ""))
	}
	for i, want := range wants {
		if !strings.Contains(lines[i], want) {
			t.Errorf("failure line %q does not contain %q", lines[i], want)
		}
		if strings.Contains(lines[i], secretKey) {
			t.Errorf("failure line %q contains the request's key", lines[i])
		}
	}
}

// TestUnreachableDatabaseFailsStartInOneLineWithoutThePassword: with no
// time to wait (--db-connect-timeout=0; connect_test.go tests the waiting),
// an unreachable database stops the start with one line.
func TestUnreachableDatabaseFailsStartInOneLineWithoutThePassword(t *testing.T) {
	t.Parallel()
	var stdout, stderr syncBuffer
	code := cli(t.Context(), []string{"serve", "--addr", "127.0.0.1:0", "--db-connect-timeout", "0", "--database-url", "postgres://cache:s3cret@127.0.0.1:1/cache"},
		noEnv, &stdout, &stderr)
	if code != exitFail {
		t.Fatalf("exit code %d, want %d; stderr:\n%s", code, exitFail, &stderr)
	}
	out := stderr.String()
	if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "cacheservice: reach database: ") {
		t.Errorf("stderr = %q, want one line saying the database cannot be reached", out)
	}
	if strings.Contains(out, "s3cret") {
		t.Errorf("stderr = %q contains the password", out)
	}
}
