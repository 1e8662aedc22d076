package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/internal/pgtest"
)

// TestAuthFileIsReReadOnSIGHUP runs the real command with an auth file
// reached through a symlink, and edits the file it points to in another
// directory: no watch sees that, so only SIGHUP can make the new grant
// count. The token's Put is refused before the signal and allowed after.
func TestAuthFileIsReReadOnSIGHUP(t *testing.T) {
	t.Parallel()
	real := filepath.Join(t.TempDir(), "auth.yaml")
	replaceFile(t, real, []byte(testAuthFile("")))
	link := filepath.Join(t.TempDir(), "auth.yaml")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	cmd, stderr := startCommand(t, "serve", "--addr", "127.0.0.1:0", "--database-url", pgtest.NewDatabase(t), "--auth-file", link)
	listening := regexp.MustCompile(`msg=listening addr=(\S+)`)
	var addr string
	waitFor(t, startTimeout, "the listening line", func() bool {
		if m := listening.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[1]
		}
		return addr != ""
	})
	client := cachev1connect.NewCacheServiceClient(http1Client(t), "http://"+addr, connect.WithProtoJSON(), bearer(readToken))
	put := func() error {
		_, err := client.Put(callCtx(t), connect.NewRequest(&cachev1.PutRequest{Scope: acme("hup"), Key: "k", Output: uriOutput("s3://b/k")}))
		return err
	}
	if err := put(); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("Put with a read token: %v, want permission_denied", err)
	}
	// The reader becomes a writer, in the file behind the symlink.
	if err := os.WriteFile(real, []byte(strings.Replace(testAuthFile(""), "role: read}", "role: write}", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // longer than the watch's settle time: proves no watch fired
	if err := put(); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("Put before SIGHUP: %v, want permission_denied still", err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the new grant after SIGHUP", func() bool { return put() == nil })
	if !regexp.MustCompile(`msg="SIGHUP: reloaded" reloaded="[^"]*auth file`).MatchString(stderr.String()) {
		t.Errorf("no reload line:\n%s", stderr)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(t, cmd); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr)
	}
}

// TestAuthFileIsReReadWhenItChanges replaces the auth file in its directory
// (as an editor or a Secret update does): the new grant counts without a
// signal.
func TestAuthFileIsReReadWhenItChanges(t *testing.T) {
	t.Parallel()
	file := writeAuthFile(t, testAuthFile(""))
	s := startAuthServer(t, "--auth-file", file)
	client := s.clientsWith(t, readToken)[1].client
	put := func() error {
		_, err := client.Put(callCtx(t), connect.NewRequest(&cachev1.PutRequest{Scope: acme("watch"), Key: "k", Output: uriOutput("s3://b/k")}))
		return err
	}
	if err := put(); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("Put with a read token: %v, want permission_denied", err)
	}
	replaceFile(t, file, []byte("principals: [broken"))
	time.Sleep(300 * time.Millisecond)
	if err := put(); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("Put after a broken file: %v, want the previous file in force", err)
	}
	replaceFile(t, file, []byte(strings.Replace(testAuthFile(""), "role: read}", "role: write}", 1)))
	waitFor(t, 10*time.Second, "the new grant", func() bool { return put() == nil })
}

// TestServeRefusesOpenAddressInOneLine runs the real command on every
// interface without authentication: it exits 2 with one line.
func TestServeRefusesOpenAddressInOneLine(t *testing.T) {
	t.Parallel()
	cmd, stderr := startCommand(t, "serve", "--addr", "0.0.0.0:0", "--database-url", "postgres://127.0.0.1:1/none")
	err := waitExit(t, cmd)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitUsage {
		t.Fatalf("exit: %v, want code %d\n%s", err, exitUsage, stderr)
	}
	out := strings.TrimSuffix(stderr.String(), "\n")
	if strings.Contains(out, "\n") || !strings.HasPrefix(out, "cacheservice: refusing to listen on 0.0.0.0:0 without authentication") {
		t.Errorf("output = %q, want one refusal line", out)
	}
}
