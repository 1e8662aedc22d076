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
	"github.com/cacheservice/cacheservice/internal/metricstest"
	"github.com/cacheservice/cacheservice/internal/pgtest"
)

// TestEmbeddedModeKeepsDataAcrossRestarts runs the server with no database
// URL twice on one data directory: the second start finds the cluster the
// first one created, with its data.
func TestEmbeddedModeKeepsDataAcrossRestarts(t *testing.T) {
	t.Parallel()
	// Under the system temp dir, not t.TempDir(): the postgres user must be
	// able to reach it when the tests run as root.
	dir, err := os.MkdirTemp("", "cacheservice-embedded-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	req := &cachev1.GetRequest{Scope: scope(t), Key: "survives-restarts"}

	first := startServerWith(t, "--data-dir", dir)
	client := cachev1connect.NewCacheServiceClient(http1Client(t), first.url, connect.WithProtoJSON())
	if _, err := client.Put(callCtx(t), connect.NewRequest(&cachev1.PutRequest{
		Scope: req.Scope, Key: req.Key, Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Uri{Uri: "s3://bucket/kept"}},
	})); err != nil {
		t.Fatalf("Put: %v", err)
	}
	first.stop()
	if !strings.Contains(first.logs.String(), "database=embedded") {
		t.Errorf("start line does not say the database is embedded:\n%s", first.logs)
	}

	second := startServerWith(t, "--data-dir", dir)
	client = cachev1connect.NewCacheServiceClient(http1Client(t), second.url, connect.WithProtoJSON())
	res, err := client.Get(callCtx(t), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("Get after restart: %v", err)
	}
	if got := res.Msg.GetOutput().GetUri(); got != "s3://bucket/kept" {
		t.Fatalf("Get after restart: uri = %q, want s3://bucket/kept", got)
	}
	if strings.Contains(second.logs.String(), "initialized embedded postgresql cluster") {
		t.Errorf("second start initialized a new cluster instead of finding the first:\n%s", second.logs)
	}
}

// TestServeStopsGracefullyOnSIGTERM runs the real command in a child
// process and stops it the way an orchestrator does.
func TestServeStopsGracefullyOnSIGTERM(t *testing.T) {
	t.Parallel()
	cmd, stderr := startCommand(t, "serve", "--addr", "127.0.0.1:0", "--database-url", pgtest.NewDatabase(t))
	addr := listeningAddr(t, stderr)
	client := cachev1connect.NewCacheServiceClient(http1Client(t), "http://"+addr, connect.WithProtoJSON())
	putAndGet(t, client)
	// The command tunes the collector: its percent is above Go's default
	// for a heap this small.
	if p := metricstest.Scrape(t, "http://"+addr+"/metrics").Get(t, "go_gc_gogc_percent"); p <= 100 {
		t.Errorf("go_gc_gogc_percent = %v, want above 100 with the default --gc-headroom", p)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(t, cmd); err != nil {
		t.Fatalf("exit after SIGTERM: %v\nstderr:\n%s", err, stderr)
	}
	if !strings.Contains(stderr.String(), "msg=stopped") {
		t.Errorf("no stop line in the log:\n%s", stderr)
	}
	_, err := client.Get(callCtx(t), connect.NewRequest(&cachev1.GetRequest{Scope: scope(t), Key: "k"}))
	wantCode(t, err, connect.CodeUnavailable)
}

// TestServeTunesTheCollectorUnlessTold runs the command with GOGC in its
// environment, which the operator chose and the runtime applied, and with
// --gc-headroom=0: neither is tuned. A GOGC the runtime ignores is warned
// about and tuned (want 0: above the default).
func TestServeTunesTheCollectorUnlessTold(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	tests := []struct {
		name    string
		env     []string
		args    []string
		want    float64
		wantLog string
	}{
		{"GOGC set", []string{"GOGC=150"}, nil, 150, "GOGC is set: --gc-headroom is not applied"},
		{"headroom off", nil, []string{"--gc-headroom=0"}, 100, ""},
		// The runtime ignores a GOGC it cannot read; so does the server.
		{"GOGC unreadable", []string{"GOGC=fast"}, nil, 0, "GOGC is neither a number nor off"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"serve", "--addr", "127.0.0.1:0", "--database-url", db}, tt.args...)
			_, stderr := startCommandEnv(t, tt.env, args...)
			addr := listeningAddr(t, stderr)
			// A tuner sets the percent as it starts, before the listener.
			p := metricstest.Scrape(t, "http://"+addr+"/metrics").Get(t, "go_gc_gogc_percent")
			if tt.want == 0 && p <= 100 {
				t.Errorf("go_gc_gogc_percent = %v, want above 100: tuned", p)
			}
			if tt.want != 0 && p != tt.want {
				t.Errorf("go_gc_gogc_percent = %v, want %v", p, tt.want)
			}
			if !strings.Contains(stderr.String(), tt.wantLog) {
				t.Errorf("log does not say %q:\n%s", tt.wantLog, stderr)
			}
		})
	}
}

// TestServeWithoutPostgresBinariesPrintsOneLine hides PostgreSQL from the
// command: an empty PATH, and a mount namespace where /usr/lib/postgresql
// is an empty tmpfs (needs root or user namespaces; skipped without).
func TestServeWithoutPostgresBinariesPrintsOneLine(t *testing.T) {
	t.Parallel()
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("needs unshare(1) to hide the PostgreSQL binaries")
	}
	const hide = `if [ -d /usr/lib/postgresql ]; then mount -t tmpfs tmpfs /usr/lib/postgresql || exit 97; fi; exec "$@"`
	if out, err := exec.Command(unshare, "--mount", "/bin/sh", "-c", hide, "sh", "/bin/true").CombinedOutput(); err != nil {
		t.Skipf("cannot hide the PostgreSQL binaries in a mount namespace (%v): %s", err, out)
	}
	dataDir := filepath.Join(t.TempDir(), "data")
	cmd := exec.Command(unshare, "--mount", "/bin/sh", "-c", hide, "sh",
		"/usr/bin/env", "-i", "PATH=/nonexistent", execMainEnv+"=1",
		os.Args[0], "serve", "--addr", "127.0.0.1:0", "--data-dir", dataDir)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	err = waitExit(t, cmd)
	if exitErr := new(exec.ExitError); !errors.As(err, &exitErr) || exitErr.ExitCode() != exitFail {
		t.Fatalf("exit: %v, want exit code %d\nstderr:\n%s", err, exitFail, &stderr)
	}
	out := stderr.String()
	if out != "cacheservice: "+errEmbeddedUnavailable.Error()+"\n" {
		t.Errorf("stderr = %q, want the one line saying the embedded PostgreSQL is not available and to pass --database-url", out)
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data directory created although nothing could run in it (stat: %v)", err)
	}
}

// startCommand runs this test binary as the cacheservice command (see
// TestMain) in an environment free of the caller's configuration, and kills
// it at cleanup if it is still running.
func startCommand(t *testing.T, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	return startCommandEnv(t, nil, args...)
}

// startCommandEnv is startCommand with env (KEY=value) added to the
// command's environment.
func startCommandEnv(t *testing.T, env []string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix) && !strings.HasPrefix(kv, "DATABASE_URL=") && !strings.HasPrefix(kv, "GOGC=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Env = append(cmd.Env, execMainEnv+"=1")
	stderr := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, stderr
}

// listeningAddr waits for the command's listening line and returns its
// address.
func listeningAddr(t *testing.T, stderr *syncBuffer) string {
	t.Helper()
	listening := regexp.MustCompile(`msg=listening addr=(\S+) database=external`)
	var addr string
	waitFor(t, startTimeout, "the listening line", func() bool {
		if m := listening.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[1]
		}
		return addr != ""
	})
	return addr
}

// waitExit waits for cmd to exit, killing it after stopTimeout.
func waitExit(t *testing.T, cmd *exec.Cmd) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(stopTimeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not exit within %v", cmd.Path, stopTimeout)
		return nil
	}
}
