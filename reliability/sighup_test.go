package reliability

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/internal/pgtest"
)

// TestSIGHUPReloadsLogLevelAndNeverStops sends SIGHUP to the server binary
// several times: it keeps serving, logs one line per signal saying what it
// reloaded, and takes the log level from --log-level-file each time (a bad
// file keeps the old level). Without --log-level-file it says that nothing
// could be reloaded, and still keeps serving.
func TestSIGHUPReloadsLogLevelAndNeverStops(t *testing.T) {
	t.Parallel()
	levelFile := filepath.Join(t.TempDir(), "level")
	writeLevel := func(s string) {
		if err := os.WriteFile(levelFile, []byte(s+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeLevel("debug")
	srv := startServer(t, "sighup", "--database-url", pgtest.NewDatabase(t), "--log-level-file", levelFile)
	plain := startServer(t, "sighup-no-file", "--database-url", pgtest.NewDatabase(t))
	client := srv.connectClient()

	// A miss logs one debug line: it shows whether debug is on.
	missLines := func() int {
		n := 0
		for _, rec := range srv.logsAt("DEBUG") {
			if rec["msg"] == "request failed" && rec["code"] == "not_found" {
				n++
			}
		}
		return n
	}
	miss := func() {
		t.Helper()
		_, err := client.Get(t.Context(), connect.NewRequest(&cachev1.GetRequest{Scope: scope(), Key: "absent"}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("Get of an absent key: %v, want not_found", err)
		}
	}
	// hup sends SIGHUP and waits for its one reload line.
	hup := func(p *serverProc, wantMsg string, want ...string) {
		t.Helper()
		before := len(reloadLines(p))
		if err := syscall.Kill(p.pid, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for len(reloadLines(p)) == before {
			if !p.alive() {
				t.Fatalf("%s exited on SIGHUP: %v\n%s", p.name, p.exitErr, p.output())
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s logged no reload line within 10s of SIGHUP:\n%s", p.name, p.output())
			}
			time.Sleep(10 * time.Millisecond)
		}
		lines := reloadLines(p)
		if len(lines) != before+1 {
			t.Fatalf("one SIGHUP gave %d reload lines", len(lines)-before)
		}
		line := lines[len(lines)-1]
		got, _ := line["reloaded"].(string)
		if line["msg"] != wantMsg {
			t.Errorf("reload line %v, want msg %q", line, wantMsg)
		}
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("reload line says %q, want it to contain %q", got, w)
			}
		}
		if !p.alive() {
			t.Fatalf("%s exited after SIGHUP", p.name)
		}
	}

	// The log is read from a pipe: wait (bounded) for a line to arrive.
	waitMissLines := func(want int, when string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); missLines() != want; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: a miss logged %d debug lines in all, want %d", when, missLines(), want)
			}
		}
	}

	miss()
	waitMissLines(1, "at debug level")
	hup(srv, "SIGHUP: reloaded", "log level DEBUG (was DEBUG) from "+levelFile)

	writeLevel("error")
	hup(srv, "SIGHUP: reloaded", "log level ERROR (was DEBUG)")
	miss()
	writeLevel("loud")
	// The failed reload's line comes after the miss's would have, in order.
	hup(srv, "SIGHUP: reload failed, keeping the old values")
	if missLines() != 1 {
		t.Errorf("after reloading level error, a miss still logged a debug line")
	}
	writeLevel("debug")
	hup(srv, "SIGHUP: reloaded", "log level DEBUG (was ERROR)")
	miss()
	waitMissLines(2, "after reloading level debug")

	hup(plain, "SIGHUP: reloaded", "log level unchanged", "--log-level-file")
	hup(plain, "SIGHUP: reloaded", "log level unchanged")
	for _, p := range []*serverProc{srv, plain} {
		if _, err := p.connectClient().Get(context.Background(), connect.NewRequest(&cachev1.GetRequest{Scope: scope(), Key: "absent"})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("%s after SIGHUPs: %v, want not_found", p.name, err)
		}
		if !p.stop(20 * time.Second) {
			t.Errorf("%s did not stop gracefully after SIGHUPs", p.name)
		}
	}
}

// reloadLines returns p's log lines that answer a SIGHUP.
func reloadLines(p *serverProc) []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []map[string]any
	for _, rec := range p.logs {
		if msg, _ := rec["msg"].(string); strings.HasPrefix(msg, "SIGHUP") {
			out = append(out, rec)
		}
	}
	return out
}
