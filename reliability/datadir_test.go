package reliability

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/internal/syncbuf"
)

// rawProc is a server binary whose whole output the test keeps, for starts
// that are meant to fail.
type rawProc struct {
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan struct{}
}

func startRaw(t *testing.T, args ...string) *rawProc {
	t.Helper()
	cmd := exec.Command(binary(t), append([]string{"serve", "--addr", "127.0.0.1:0", "--log-format", "json"}, args...)...)
	cmd.Env = append(os.Environ(), "CACHESERVICE_DATABASE_URL=", "DATABASE_URL=")
	p := &rawProc{cmd: cmd, out: &syncbuf.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *rawProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// listeningAddr returns the address p logged it listens on, or "".
func (p *rawProc) listeningAddr() string {
	for line := range strings.SplitSeq(p.out.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "listening" {
			addr, _ := rec["addr"].(string)
			return addr
		}
	}
	return ""
}

// plainLines returns p's output lines that are not JSON log records: what
// it printed on a failed start.
func (p *rawProc) plainLines() []string {
	var out []string
	for line := range strings.SplitSeq(strings.TrimSpace(p.out.String()), "\n") {
		if line != "" && !json.Valid([]byte(line)) {
			out = append(out, line)
		}
	}
	return out
}

// wantRefusedInUse checks that p exited with status 1, saying in one line
// that the directory is in use.
func wantRefusedInUse(t *testing.T, p *rawProc) {
	t.Helper()
	if code := p.cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("refused server exited %d, want 1; output:\n%s", code, p.out)
	}
	lines := p.plainLines()
	if len(lines) != 1 || !strings.Contains(lines[0], "in use") {
		t.Errorf("refused server printed %q, want one line saying the directory is in use; output:\n%s", lines, p.out)
	}
	if strings.Contains(p.out.String(), "initdb") {
		t.Errorf("refused server ran or reported initdb:\n%s", p.out)
	}
}

// TestTwoServersOnOneDataDirectory starts two embedded servers at once on a
// new data directory, several times: exactly one serves, the other exits at
// once saying in one line that the directory is in use, and the cluster the
// first made is whole. A third server on the running directory is refused
// just as quickly (it used to wait 30s for the postmaster), and none of the
// refused starts leaves anything behind.
func TestTwoServersOnOneDataDirectory(t *testing.T) {
	t.Parallel()
	for trial := range pick(2, 6) {
		parent := postgresDir(t)
		if err := os.Chmod(parent, 0o755); err != nil { // the postgres user must reach data
			t.Fatal(err)
		}
		dir := filepath.Join(parent, "data") // new: the servers race to create it
		a, b := startRaw(t, "--data-dir", dir), startRaw(t, "--data-dir", dir)
		var winner, loser *rawProc
		for deadline := time.Now().Add(2 * time.Minute); winner == nil || loser == nil; time.Sleep(20 * time.Millisecond) {
			switch {
			case a.exited() && b.exited():
				t.Fatalf("trial %d: both servers exited:\n%s\n---\n%s", trial, a.out, b.out)
			case a.exited():
				loser = a
				if b.listeningAddr() != "" {
					winner = b
				}
			case b.exited():
				loser = b
				if a.listeningAddr() != "" {
					winner = a
				}
			case a.listeningAddr() != "" && b.listeningAddr() != "":
				t.Fatalf("trial %d: both servers listen on one data directory", trial)
			}
			if time.Now().After(deadline) {
				t.Fatalf("trial %d: no winner and loser within 2m:\n%s\n---\n%s", trial, a.out, b.out)
			}
		}
		wantRefusedInUse(t, loser)
		client := cachev1connect.NewCacheServiceClient(http1Client, "http://"+winner.listeningAddr(), connect.WithProtoJSON())
		req := &cachev1.PutRequest{Scope: scope(), Key: "k", Output: uriOf("kept")}
		if _, err := client.Put(t.Context(), connect.NewRequest(req)); err != nil {
			t.Fatalf("trial %d: the winner cannot write: %v\n%s", trial, err, winner.out)
		}

		before := listDir(t, dir)
		began := time.Now()
		third := startRaw(t, "--data-dir", dir)
		select {
		case <-third.done:
		case <-time.After(15 * time.Second):
			t.Fatalf("trial %d: a server on a running directory was not refused within 15s", trial)
		}
		t.Logf("trial %d: third server refused after %v", trial, time.Since(began))
		wantRefusedInUse(t, third)
		if after := listDir(t, dir); after != before {
			t.Errorf("trial %d: the refused start changed the directory:\nbefore: %s\nafter:  %s", trial, before, after)
		}
		if _, err := os.Stat(filepath.Join(dir, "pgdata.init")); !os.IsNotExist(err) {
			t.Errorf("trial %d: a scratch initdb directory is left: %v", trial, err)
		}
		if _, err := client.Get(t.Context(), connect.NewRequest(&cachev1.GetRequest{Scope: scope(), Key: "k"})); err != nil {
			t.Errorf("trial %d: the winner lost its data or stopped serving: %v", trial, err)
		}
		_ = winner.cmd.Process.Signal(syscall.SIGTERM)
		<-winner.done
	}
}

// listDir lists dir's entries and those of its pgdata, names only: what a
// start could add. Files the running cluster rewrites keep their names.
func listDir(t *testing.T, dir string) string {
	t.Helper()
	var names []string
	for _, d := range []string{dir, filepath.Join(dir, "pgdata")} {
		entries, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			names = append(names, filepath.Join(filepath.Base(d), e.Name()))
		}
	}
	return strings.Join(names, " ")
}
