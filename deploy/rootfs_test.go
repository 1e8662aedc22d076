package deploy_test

import (
	"bufio"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cacheservice/cacheservice/internal/pgtest"
)

// nonroot is distroless's non-root user, the one deploy/Dockerfile runs as.
const nonroot = 65532

// TestBinaryIsStatic checks the binary the image ships needs nothing from its filesystem: no
// program interpreter (dynamic loader) and no shared library. distroless/static has neither.
func TestBinaryIsStatic(t *testing.T) {
	t.Parallel()
	if why := dynamicLinking(t, binary(t)); why != "" {
		t.Errorf("CGO_ENABLED=0 build is not static: %s", why)
	}
	// Control: the check does see a dynamic executable, so its silence above means something.
	if _, err := os.Stat("/bin/sh"); err == nil {
		if why := dynamicLinking(t, "/bin/sh"); why == "" {
			t.Log("/bin/sh looks static here; the control proves nothing on this machine")
		} else {
			t.Logf("control: /bin/sh %s", why)
		}
	}
}

// dynamicLinking returns why the ELF file at path is dynamically linked, or "" if it is not.
func dynamicLinking(t *testing.T, path string) string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	var why []string
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			why = append(why, "has a PT_INTERP segment")
		case elf.PT_DYNAMIC:
			why = append(why, "has a PT_DYNAMIC segment")
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatalf("%s: read DT_NEEDED: %v", path, err)
	}
	if len(libs) > 0 {
		why = append(why, fmt.Sprintf("needs %v", libs))
	}
	return strings.Join(why, ", ")
}

// emptyRoot builds a root filesystem holding only what deploy/Dockerfile's image holds that the
// server could touch: the binary, /etc/passwd and /etc/group naming the nonroot user, /tmp, and
// the user's home. No shell, no libc, no PostgreSQL, no /proc. It skips the test unless the
// process may chroot.
func emptyRoot(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: chroot(2) into an empty directory requires CAP_SYS_CHROOT")
	}
	root := t.TempDir()
	for _, dir := range []struct {
		path string
		mode os.FileMode
		uid  int
	}{
		{".", 0o755, 0},
		{"usr/local/bin", 0o755, 0},
		{"etc", 0o755, 0},
		{"tmp", 0o777 | os.ModeSticky, 0},
		{"home/nonroot", 0o700, nonroot},
	} {
		p := filepath.Join(root, dir.path)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, dir.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, dir.uid, dir.uid); err != nil {
			t.Fatal(err)
		}
	}
	writeRootFile(t, root, "etc/passwd", "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
	writeRootFile(t, root, "etc/group", "root:x:0:\nnonroot:x:65532:\n")
	bin, err := os.ReadFile(binary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "usr/local/bin/cacheservice"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

func writeRootFile(t *testing.T, root, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// inRoot returns the command `cacheservice args...` confined to root as a container would run
// it: chroot, the nonroot user, new PID, mount, IPC and UTS namespaces, working directory the
// user's home, only env in the environment. The network namespace is the host's, so the
// database and the test reach each other on 127.0.0.1.
func inRoot(root string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command("/usr/local/bin/cacheservice", args...)
	cmd.Env = env
	cmd.Dir = "/home/nonroot"
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     root,
		Credential: &syscall.Credential{Uid: nonroot, Gid: nonroot},
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS,
		Pdeathsig:  syscall.SIGKILL,
	}
	return cmd
}

// loopbackURL returns a URL reaching the database of connString over TCP on 127.0.0.1, which a
// chrooted process can use without anything mounted into its root: the address itself when the
// server listens on TCP, else a proxy from a loopback port to the unix socket (the test cluster
// has no TCP port), closed at cleanup.
func loopbackURL(t *testing.T, connString string) string {
	t.Helper()
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(cfg.Host, "/") {
		u, err := url.Parse(pgtest.TCPURL(t, connString, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.TLSConfig != nil {
			u.RawQuery = "sslmode=require"
		}
		return u.String()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pgtest.Forward(t, ln, connString)
	return pgtest.TCPURL(t, connString, ln.Addr().String())
}

// logLines collects a process's stderr and hands out the JSON log lines as they come.
type logLines struct {
	mu    sync.Mutex
	text  strings.Builder
	lines chan map[string]any
}

func newLogLines(r io.Reader) *logLines {
	l := &logLines{lines: make(chan map[string]any, 100)}
	go func() {
		defer close(l.lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			l.mu.Lock()
			l.text.WriteString(sc.Text() + "\n")
			l.mu.Unlock()
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil {
				select {
				case l.lines <- line:
				default: // nobody waits for more
				}
			}
		}
	}()
	return l
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.text.String()
}

// TestStaticBinaryServesInEmptyRoot runs the static binary with nothing around it but what the
// image has, against an external PostgreSQL given by CACHESERVICE_DATABASE_URL (as the
// Kubernetes Secret gives it): it migrates, reports ready on /readyz and alive on /livez, reports
// its stamped build in cacheservice_build_info, stores and returns an entry over Connect JSON, and
// stops cleanly on SIGTERM.
func TestStaticBinaryServesInEmptyRoot(t *testing.T) {
	t.Parallel()
	root := emptyRoot(t)
	dbURL := loopbackURL(t, pgtest.NewDatabase(t))

	cmd := inRoot(root, []string{"CACHESERVICE_DATABASE_URL=" + dbURL},
		"serve", "--addr=127.0.0.1:0", "--log-format=json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start in the empty root: %v", err)
	}
	exited := make(chan error, 1)
	logs := newLogLines(stderr)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
	})

	var addr string
	for deadline := time.After(time.Minute); addr == ""; {
		select {
		case line, ok := <-logs.lines:
			if !ok {
				t.Fatalf("server exited before listening:\n%s", logs)
			}
			if line["msg"] == "listening" {
				addr, _ = line["addr"].(string)
			}
		case <-deadline:
			t.Fatalf("no listening line within a minute:\n%s", logs)
		}
	}
	base := "http://" + addr
	t.Logf("serving on %s from the empty root, database at %s", addr, dbURL)

	if code, body := call(t, http.MethodGet, base+"/readyz", ""); code != http.StatusOK {
		t.Errorf("GET /readyz = %d %s, want 200", code, body)
	}
	if code, body := call(t, http.MethodGet, base+"/livez", ""); code != http.StatusOK {
		t.Errorf("GET /livez = %d %s, want 200", code, body)
	}
	if code, body := call(t, http.MethodGet, base+"/metrics", ""); code != http.StatusOK || !hasLine(body, buildInfoLine()) {
		t.Errorf("GET /metrics = %d, want 200 with the line %s", code, buildInfoLine())
	}
	const scope = `"scope":{"org":"deploy","project":"rootfs","domain":"test"},"key":"static-binary"`
	if code, body := call(t, http.MethodPost, base+"/cacheservice.v1.CacheService/Put",
		`{`+scope+`,"output":{"uri":"s3://bucket/static"}}`); code != http.StatusOK {
		t.Fatalf("Put = %d %s, want 200", code, body)
	}
	code, body := call(t, http.MethodPost, base+"/cacheservice.v1.CacheService/Get", `{`+scope+`}`)
	var got struct {
		Output struct {
			URI string `json:"uri"`
		} `json:"output"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &got) != nil || got.Output.URI != "s3://bucket/static" {
		t.Fatalf("Get = %d %s, want the stored uri s3://bucket/static", code, body)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, logs)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("still running 30s after SIGTERM:\n%s", logs)
	}
}

// call makes one HTTP request with a JSON body (when body is not empty) and returns the status
// and the response body.
func call(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

// TestStaticBinaryWithoutDatabaseURLSaysSoInOneLine starts the binary in the empty root with no
// database URL: the image has no PostgreSQL, so the embedded default cannot run. It must exit 1
// with one line that says the embedded database is not available in this image and points at
// --database-url, and create nothing.
func TestStaticBinaryWithoutDatabaseURLSaysSoInOneLine(t *testing.T) {
	t.Parallel()
	root := emptyRoot(t)
	cmd := inRoot(root, nil, "serve", "--addr=127.0.0.1:0")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start in the empty root: %v", err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("still running 30s after start without a database URL:\n%s", &stderr)
	}
	if exitErr := new(exec.ExitError); !errors.As(err, &exitErr) || exitErr.ExitCode() != 1 {
		t.Fatalf("exit: %v, want exit code 1\nstderr:\n%s", err, &stderr)
	}
	out := stderr.String()
	t.Logf("stderr: %s", out)
	if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "cacheservice: ") {
		t.Errorf("stderr = %q, want exactly one line starting with cacheservice:", out)
	}
	if !strings.Contains(out, "--database-url") || !strings.Contains(out, "embedded PostgreSQL is not available in this build or image") {
		t.Errorf("stderr = %q, want it to say the embedded PostgreSQL is not available here and to give --database-url", out)
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout = %q, want nothing", stdout.String())
	}
	entries, err := os.ReadDir(filepath.Join(root, "home/nonroot"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left %s behind in the working directory", e.Name())
	}
}
