package reliability

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cacheservice/cacheservice/internal/pgtest"
)

// TestStartupErrorsShowNoPartOfTheConnectionString starts the server binary
// with connection strings in every form pgx accepts, each broken so that the
// start fails (at parsing, dialling, or the server's refusal of a parameter),
// and checks that its output names none of the string's parts: not the
// password, nor the user, database, hosts, a bad port or sslmode, nor a
// parameter's name or value.
func TestStartupErrorsShowNoPartOfTheConnectionString(t *testing.T) {
	t.Parallel()
	const pw = "Sekr1tPw"
	// The parts every case uses; each must stay out of the output.
	parts := []string{pw, "alice_x", "db_x9", "/nonexistent_host_a", "/nonexistent_host_b", "notaport", "bogus_mode", "unknownparam_zz", "val_zz", "Sekr1t Pw2"}
	live := pgtest.NewDatabase(t) // a real server, to refuse what only a server can
	cases := map[string]string{
		"URL, unreachable host":             "postgres://alice_x:" + pw + "@%2Fnonexistent_host_a:5432/db_x9",
		"URL, bad port":                     "postgres://alice_x:" + pw + "@localhost:notaport/db_x9",
		"URL, bad escape":                   "postgres://alice_x:" + pw + "%zz@localhost/db_x9",
		"URL, bad sslmode":                  "postgres://alice_x:" + pw + "@localhost/db_x9?sslmode=bogus_mode",
		"URL, multi-host":                   "postgres://alice_x:" + pw + "@%2Fnonexistent_host_a:5432,%2Fnonexistent_host_b:5433/db_x9",
		"URL, unknown parameter":            "postgres://alice_x:" + pw + "@%2Fnonexistent_host_a/db_x9?unknownparam_zz=val_zz",
		"key=value, unreachable":            "host=/nonexistent_host_a user=alice_x password=" + pw + " dbname=db_x9",
		"key=value, spaces around =":        "host = /nonexistent_host_a user = alice_x password = " + pw + " port=notaport dbname=db_x9",
		"key=value, spaces, bad sslmode":    "host = localhost password = " + pw + " sslmode = bogus_mode user=alice_x",
		"key=value, quoted values":          "host='/nonexistent_host_a' user='alice_x' password='Sekr1t Pw2' dbname='db_x9'",
		"key=value, unterminated quote":     "host=/nonexistent_host_a user=alice_x password='" + pw + " dbname=db_x9",
		"key=value, multi-host":             "host=/nonexistent_host_a,/nonexistent_host_b port=5432,5433 user=alice_x password=" + pw + " dbname=db_x9",
		"key=value, hosts and ports differ": "host=/nonexistent_host_a,/nonexistent_host_b port=5432,5433,notaport user=alice_x password=" + pw,
		"key=value, bad keyword":            "host=/nonexistent_host_a password=" + pw + " bogus_mode",
		"unknown parameter, live server":    live + " user=postgres password=" + pw + " unknownparam_zz=val_zz application_name=alice_x",
	}
	for name, url := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			// No waiting for the unreachable ones: the output is what is tested.
			cmd := exec.CommandContext(ctx, binary(t), "serve", "--addr", "127.0.0.1:0", "--db-connect-timeout", "0", "--database-url", url)
			cmd.Env = append(os.Environ(), "CACHESERVICE_DATABASE_URL=", "DATABASE_URL=")
			out, err := cmd.CombinedOutput()
			if err == nil || cmd.ProcessState.ExitCode() != 1 {
				t.Fatalf("exit %v, want status 1; output:\n%s", err, out)
			}
			for _, p := range parts {
				if strings.Contains(string(out), p) {
					t.Errorf("output shows %q:\n%s", p, out)
				}
			}
			t.Logf("%s", strings.TrimSpace(string(out)))
		})
	}
}
