package reliability

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/procfs"

	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
)

// longEnv makes the process-level tests run longer: more outages, crashes
// and trials, and a longer soak.
const longEnv = "CACHESERVICE_LONG"

// long reports whether the long versions were asked for.
func long() bool { return os.Getenv(longEnv) != "" }

// pick returns short, or long under CACHESERVICE_LONG.
func pick[T any](short, longer T) T {
	if long() {
		return longer
	}
	return short
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	binDir    string // removed by TestMain
)

// binary builds cmd/cacheservice once per test binary and returns its path.
func binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "cacheservice-bin-")
		if buildErr != nil {
			return
		}
		goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goTool); err != nil {
			goTool = "go"
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		path := filepath.Join(binDir, "cacheservice")
		out, err := exec.CommandContext(ctx, goTool, "build", "-o", path, "github.com/cacheservice/cacheservice/cmd/cacheservice").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/cacheservice: %w: %s", err, out)
			return
		}
		binPath = path
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// serverProc is one running `cacheservice serve`.
type serverProc struct {
	t       testing.TB
	name    string
	pid     int
	addr    string // host:port it listens on
	baseURL string
	done    chan struct{} // closed when the process has exited and been reaped
	exitErr error         // read after done

	mu   sync.Mutex
	logs []map[string]any // its JSON log lines
	raw  []string         // its stderr lines that are not JSON
}

// startServer runs `cacheservice serve --addr 127.0.0.1:0 --log-format json`
// with args and waits (bounded) until it logs the address it listens on.
// Cleanup stops it with SIGTERM, then SIGKILL.
func startServer(t testing.TB, name string, args ...string) *serverProc {
	t.Helper()
	p, err := launchServer(t, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func launchServer(t testing.TB, name string, args ...string) (*serverProc, error) {
	t.Helper()
	return launchServerEnv(t, name, nil, args...)
}

// startServerEnv is startServer with extra environment variables (KEY=value),
// the way to set a flag that an older build may not know yet.
func startServerEnv(t testing.TB, name string, env []string, args ...string) *serverProc {
	t.Helper()
	p, err := launchServerEnv(t, name, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func launchServerEnv(t testing.TB, name string, env []string, args ...string) (*serverProc, error) {
	t.Helper()
	bin := binary(t)
	args = append([]string{"serve", "--addr", "127.0.0.1:0", "--log-format", "json", "--log-level", "debug"}, args...)
	cmd := exec.Command(bin, args...)
	// Without the caller's GOGC, which would turn --gc-headroom off: the
	// tests measure the collector as it is shipped.
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GOGC=") }),
		"CACHESERVICE_DATABASE_URL=", "DATABASE_URL=")
	cmd.Env = append(cmd.Env, env...)
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = w, w
	// Killed with the test binary: a test that panics leaves no server behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &serverProc{t: t, name: name, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the forking thread exits: keep it for the
		// child's life (see internal/embeddedpg).
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.pid = cmd.Process.Pid
		started <- nil
		p.exitErr = cmd.Wait()
		close(p.done)
	}()
	err = <-started
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	listening := make(chan string, 1)
	go p.readLogs(r, listening)
	t.Cleanup(func() { p.stop(20 * time.Second) })

	select {
	case p.addr = <-listening:
	case <-p.done:
		return nil, fmt.Errorf("%s exited before listening: %v; output:\n%s", name, p.exitErr, p.output())
	case <-time.After(2 * time.Minute):
		return nil, fmt.Errorf("%s did not listen within 2m; output:\n%s", name, p.output())
	}
	p.baseURL = "http://" + p.addr
	return p, nil
}

// readLogs keeps every line and reports the listening address once.
func (p *serverProc) readLogs(r io.ReadCloser, listening chan<- string) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var rec map[string]any
		p.mu.Lock()
		if json.Unmarshal([]byte(line), &rec) == nil {
			p.logs = append(p.logs, rec)
		} else {
			p.raw = append(p.raw, line)
		}
		p.mu.Unlock()
		if rec["msg"] == "listening" {
			if addr, ok := rec["addr"].(string); ok {
				listening <- addr
			}
		}
	}
}

// output returns everything the process wrote, for failure messages.
func (p *serverProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var sb strings.Builder
	for _, rec := range p.logs {
		b, _ := json.Marshal(rec)
		sb.Write(b)
		sb.WriteByte('\n')
	}
	for _, l := range p.raw {
		sb.WriteString(l + "\n")
	}
	return sb.String()
}

// logsAt returns the log records at level (e.g. "ERROR").
func (p *serverProc) logsAt(level string) []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []map[string]any
	for _, rec := range p.logs {
		if rec["level"] == level {
			out = append(out, rec)
		}
	}
	return out
}

// alive reports whether the process is still running.
func (p *serverProc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill9 kills the process with SIGKILL and waits for it.
func (p *serverProc) kill9() {
	p.t.Helper()
	_ = syscall.Kill(p.pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.t.Fatalf("%s (pid %d) survived SIGKILL for 10s", p.name, p.pid)
	}
}

// stop sends SIGTERM and waits up to timeout, then SIGKILL. It reports
// whether the graceful stop worked.
func (p *serverProc) stop(timeout time.Duration) bool {
	if !p.alive() {
		return false
	}
	_ = syscall.Kill(p.pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
		<-p.done
		return false
	}
}

// rssKiB reads the process's resident set size from /proc.
func (p *serverProc) rssKiB(t testing.TB) int {
	t.Helper()
	proc, err := procfs.NewProc(p.pid)
	if err != nil {
		t.Fatalf("find %s in /proc: %v", p.name, err)
	}
	st, err := proc.NewStatus()
	if err != nil {
		t.Fatalf("read status of %s: %v", p.name, err)
	}
	return int(st.VmRSS >> 10)
}

// httpClients are shared by every process-level test: HTTP/1.1 for the
// Connect protocol, unencrypted HTTP/2 for gRPC.
var (
	http1Client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 128}}
	http2Client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Protocols: h2cOnly()}}
)

// connectClient speaks Connect JSON over HTTP/1.1 to p.
func (p *serverProc) connectClient() cachev1connect.CacheServiceClient {
	return cachev1connect.NewCacheServiceClient(http1Client, p.baseURL, connect.WithProtoJSON())
}

// grpcClient speaks gRPC over HTTP/2 to p.
func (p *serverProc) grpcClient() cachev1connect.CacheServiceClient {
	return cachev1connect.NewCacheServiceClient(http2Client, p.baseURL, connect.WithGRPC())
}

// postgresDir makes a directory the postgres user can reach (t.TempDir's
// parent is private to us) and removes it at cleanup.
func postgresDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cacheservice-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// processGone waits (bounded) until pid is no longer a running process; a
// zombie counts as gone, since it runs nothing and holds no files.
func processGone(pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		st, err := procStat(pid)
		if errors.Is(err, os.ErrNotExist) {
			return true
		}
		if err == nil && (st.State == "Z" || st.State == "X") {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// procStat reads a process's stat through procfs; an error wraps os.ErrNotExist when the
// process is gone.
func procStat(pid int) (procfs.ProcStat, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return procfs.ProcStat{}, err
	}
	return p.Stat()
}
