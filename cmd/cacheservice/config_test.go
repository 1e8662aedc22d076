package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cacheservice/cacheservice/auth"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/store"
)

// env returns a lookupEnv over vars.
func env(vars map[string]string) lookupEnv {
	return func(key string) (string, bool) {
		v, ok := vars[key]
		return v, ok
	}
}

func TestParseConfigDefaults(t *testing.T) {
	t.Parallel()
	got, err := parseConfig(nil, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Addr:             "127.0.0.1:8094",
		DataDir:          ".cacheservice",
		DBConnectTimeout: time.Minute,
		Store:            store.Config{MaxConns: 10, Timeout: 5 * time.Second, LockTimeout: 2 * time.Second},
		Manager:          manager.Config{MaxHeartbeat: 10 * time.Second, MinHeartbeat: 100 * time.Millisecond, GraceMultiplier: 3, MaxInlineBytes: 1 << 20},
		MaxRequestBytes:  4 << 20,
		HTTP:             HTTPConfig{WriteTimeout: 10 * time.Second, ResponseBudget: 64 << 20, MaxStreams: 100, GRPCTransport: "grpc-go"},
		GCHeadroom:       32 << 20,
		ShutdownTimeout:  15 * time.Second,
		LogLevel:         slog.LevelInfo,
		LogFormat:        "text",
		// MaxBatches has no flag: it keeps the sweeper's default.
		Sweep: manager.SweepConfig{Interval: time.Minute, ReservationRetention: time.Hour, BatchSize: 1000, MaxBatches: 100},
		Auth:  auth.Config{OIDCClaim: "sub"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults = %+v, want %+v", got, want)
	}
	if !got.embedded() {
		t.Error("no database URL should mean the embedded PostgreSQL")
	}
}

func TestParseConfigPrecedence(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(c Config) bool
	}{
		{"flag", []string{"--addr", ":9000"}, nil,
			func(c Config) bool { return c.Addr == ":9000" }},
		{"env", nil, map[string]string{"CACHESERVICE_ADDR": ":9001"},
			func(c Config) bool { return c.Addr == ":9001" }},
		{"flag over env", []string{"-addr=:9000"}, map[string]string{"CACHESERVICE_ADDR": ":9001"},
			func(c Config) bool { return c.Addr == ":9000" }},
		{"DATABASE_URL fallback", nil, map[string]string{"DATABASE_URL": "postgres://a/b"},
			func(c Config) bool { return c.Store.URL == "postgres://a/b" && !c.embedded() }},
		{"CACHESERVICE_DATABASE_URL over DATABASE_URL", nil,
			map[string]string{"DATABASE_URL": "postgres://a/b", "CACHESERVICE_DATABASE_URL": "postgres://c/d"},
			func(c Config) bool { return c.Store.URL == "postgres://c/d" }},
		{"byte sizes with suffixes", []string{"--max-inline-bytes", "512KiB"}, map[string]string{"CACHESERVICE_MAX_REQUEST_BYTES": "2MiB"},
			func(c Config) bool { return c.Manager.MaxInlineBytes == 512<<10 && c.MaxRequestBytes == 2<<20 }},
		{"sub-second durations", []string{"--max-heartbeat", "1500ms"}, map[string]string{"CACHESERVICE_DB_TIMEOUT": "250ms"},
			func(c Config) bool {
				// The default lock timeout follows a short database timeout down.
				return c.Manager.MaxHeartbeat == 1500*time.Millisecond && c.Store.Timeout == 250*time.Millisecond && c.Store.LockTimeout == 125*time.Millisecond
			}},
		{"lock and heartbeat bounds", []string{"--lock-timeout=300ms", "--min-heartbeat=1s"}, nil,
			func(c Config) bool {
				return c.Store.LockTimeout == 300*time.Millisecond && c.Manager.MinHeartbeat == time.Second
			}},
		{"CORS origins", nil, map[string]string{"CACHESERVICE_CORS_ALLOWED_ORIGINS": "https://a.example.com, http://localhost:3000,"},
			func(c Config) bool {
				return reflect.DeepEqual(c.CORSAllowedOrigins, []string{"https://a.example.com", "http://localhost:3000"})
			}},
		{"CORS any origin", []string{"--cors-allowed-origins=*"}, nil,
			func(c Config) bool { return reflect.DeepEqual(c.CORSAllowedOrigins, []string{"*"}) }},
		{"connect timeout", nil, map[string]string{"CACHESERVICE_DB_CONNECT_TIMEOUT": "0"},
			func(c Config) bool { return c.DBConnectTimeout == 0 }},
		{"log settings", nil, map[string]string{"CACHESERVICE_LOG_LEVEL": "warn", "CACHESERVICE_LOG_FORMAT": "json"},
			func(c Config) bool { return c.LogLevel == slog.LevelWarn && c.LogFormat == "json" }},
		{"HTTP limits", []string{"--write-timeout=2s", "--response-budget=16MiB", "--http2-max-streams=10"},
			map[string]string{"CACHESERVICE_MAX_CONNECTIONS": "500", "CACHESERVICE_GRPC_TRANSPORT": "net/http"},
			func(c Config) bool {
				return c.HTTP == HTTPConfig{WriteTimeout: 2 * time.Second, ResponseBudget: 16 << 20, MaxStreams: 10, MaxConns: 500, GRPCTransport: "net/http"}
			}},
		{"gc headroom", nil, map[string]string{"CACHESERVICE_GC_HEADROOM": "128MiB"},
			func(c Config) bool { return c.GCHeadroom == 128<<20 }},
		{"gc headroom off", []string{"--gc-headroom=0"}, nil,
			func(c Config) bool { return c.GCHeadroom == 0 }},
		{"everything else", []string{"--data-dir=/var/lib/cacheservice", "--db-max-conns=32", "--grace-multiplier=2.5", "--shutdown-timeout=1m"}, nil,
			func(c Config) bool {
				return c.DataDir == "/var/lib/cacheservice" && c.Store.MaxConns == 32 && c.Manager.GraceMultiplier == 2.5 && c.ShutdownTimeout == time.Minute
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseConfig(tt.args, env(tt.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(got) {
				t.Errorf("config = %+v", got)
			}
		})
	}
}

// TestServeRejectsBadConfiguration checks that each bad value exits with
// code 2 and one line naming the culprit, before anything starts.
func TestServeRejectsBadConfiguration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantMsg string
	}{
		{"unknown flag", []string{"--no-such-flag"}, nil, "unknown flag --no-such-flag"},
		{"flag without its value", []string{"--addr"}, nil, "--addr needs a value"},
		{"stray argument", []string{"now"}, nil, `unexpected argument "now"`},
		{"unparsable duration", []string{"--db-timeout", "soon"}, nil, `--db-timeout: "soon" is not a duration: want a number with a unit, such as 5s`},
		{"unparsable env duration", nil, map[string]string{"CACHESERVICE_MAX_HEARTBEAT": "10"}, `CACHESERVICE_MAX_HEARTBEAT (--max-heartbeat): "10" needs a unit, such as 10s`},
		{"zero db timeout", []string{"--db-timeout=0s"}, nil, "--db-timeout"},
		{"negative heartbeat", nil, map[string]string{"CACHESERVICE_MAX_HEARTBEAT": "-1s"}, "--max-heartbeat (CACHESERVICE_MAX_HEARTBEAT)"},
		{"grace below one", []string{"--grace-multiplier=0.5"}, nil, "--grace-multiplier"},
		{"grace not a number", []string{"--grace-multiplier=NaN"}, nil, "--grace-multiplier"},
		{"zero connections", []string{"--db-max-conns=0"}, nil, "--db-max-conns"},
		{"bad byte size", []string{"--max-request-bytes=4MB"}, nil, `--max-request-bytes: "4MB" is not a size`},
		{"inline over request", []string{"--max-inline-bytes=8MiB"}, nil, "must not exceed"},
		{"address without port", []string{"--addr=localhost"}, nil, "--addr"},
		{"origin with a path", []string{"--cors-allowed-origins=https://a.example.com/app"}, nil, "https://a.example.com/app"},
		{"origin without scheme", nil, map[string]string{"CACHESERVICE_CORS_ALLOWED_ORIGINS": "a.example.com"}, "CACHESERVICE_CORS_ALLOWED_ORIGINS"},
		{"log level", []string{"--log-level=loud"}, nil, `--log-level: "loud" is not a log level: want debug, info, warn or error`},
		{"env log level", nil, map[string]string{"CACHESERVICE_LOG_LEVEL": "verbose"}, `CACHESERVICE_LOG_LEVEL (--log-level): "verbose" is not a log level: want debug, info, warn or error`},
		{"not a whole number", []string{"--db-max-conns=ten"}, nil, `--db-max-conns: "ten" is not a whole number`},
		{"log format", []string{"--log-format=xml"}, nil, "--log-format"},
		{"empty data dir", []string{"--data-dir="}, nil, "--data-dir"},
		{"zero shutdown timeout", []string{"--shutdown-timeout=0s"}, nil, "--shutdown-timeout"},
		{"metrics address without port", []string{"--metrics-addr=localhost"}, nil, "--metrics-addr"},
		{"negative sweep interval", nil, map[string]string{"CACHESERVICE_SWEEP_INTERVAL": "-1m"}, "--sweep-interval (CACHESERVICE_SWEEP_INTERVAL)"},
		{"negative retention", []string{"--reservation-retention=-1h"}, nil, "--reservation-retention"},
		{"negative entry ttl", []string{"--entry-ttl=-1h"}, nil, "--entry-ttl"},
		{"zero sweep batch", []string{"--sweep-batch-size=0"}, nil, "--sweep-batch-size"},
		{"write timeout too short", []string{"--write-timeout=1ms"}, nil, "--write-timeout"},
		{"write timeout too long", nil, map[string]string{"CACHESERVICE_WRITE_TIMEOUT": "100h"}, "--write-timeout (CACHESERVICE_WRITE_TIMEOUT)"},
		{"response budget too small", []string{"--response-budget=1KiB"}, nil, "--response-budget"},
		{"zero streams", []string{"--http2-max-streams=0"}, nil, "--http2-max-streams"},
		{"unknown grpc transport", []string{"--grpc-transport=netty"}, nil, `--grpc-transport (CACHESERVICE_GRPC_TRANSPORT) must be grpc-go or net/http, got "netty"`},
		{"gc headroom too small", []string{"--gc-headroom=3MiB"}, nil, "--gc-headroom (CACHESERVICE_GC_HEADROOM) must be 0 (off) or at least 4MiB"},
		{"unparsable gc headroom", nil, map[string]string{"CACHESERVICE_GC_HEADROOM": "lots"}, `CACHESERVICE_GC_HEADROOM (--gc-headroom): "lots" is not a size`},
		{"negative connections", []string{"--max-connections=-1"}, nil, "--max-connections"},
		// Values that would break mutual exclusion (issue 8, defect 4): the
		// lease arithmetic must never come near overflowing.
		{"huge grace", []string{"--grace-multiplier=1e10"}, nil, "--grace-multiplier (CACHESERVICE_GRACE_MULTIPLIER) must be between 1 and 100"},
		{"infinite grace", []string{"--grace-multiplier=+Inf"}, nil, "--grace-multiplier"},
		{"huge heartbeat", []string{"--max-heartbeat=1000000h"}, nil, "--max-heartbeat (CACHESERVICE_MAX_HEARTBEAT) must be between"},
		{"zero min heartbeat", []string{"--min-heartbeat=0s"}, nil, "--min-heartbeat"},
		{"min heartbeat over max", []string{"--min-heartbeat=20s"}, nil, "--min-heartbeat (CACHESERVICE_MIN_HEARTBEAT) must be at least 1ms and at most max-heartbeat"},
		{"huge db timeout", []string{"--db-timeout=1000000h"}, nil, "--db-timeout"},
		{"lock timeout not below db timeout", []string{"--lock-timeout=5s"}, nil, "--lock-timeout (CACHESERVICE_LOCK_TIMEOUT) must be at least 1ms and below db-timeout"},
		{"zero lock timeout", nil, map[string]string{"CACHESERVICE_LOCK_TIMEOUT": "0s"}, "--lock-timeout"},
		{"tiny sweep interval", []string{"--sweep-interval=1ns"}, nil, "--sweep-interval"},
		{"huge retention", []string{"--reservation-retention=900000h"}, nil, "--reservation-retention"},
		{"huge entry ttl", []string{"--entry-ttl=900000h"}, nil, "--entry-ttl"},
		{"huge sweep batch", []string{"--sweep-batch-size=1000000000"}, nil, "--sweep-batch-size"},
		{"unparsable pprof", nil, map[string]string{"CACHESERVICE_PPROF": "maybe"}, `CACHESERVICE_PPROF (--pprof): "maybe" is not a boolean`},
		{"negative connect timeout", []string{"--db-connect-timeout=-1s"}, nil, "--db-connect-timeout (CACHESERVICE_DB_CONNECT_TIMEOUT) must be between 0 and 1h0m0s"},
		{"huge connect timeout", nil, map[string]string{"CACHESERVICE_DB_CONNECT_TIMEOUT": "2h"}, "--db-connect-timeout"},
		{"certificate without key", []string{"--tls-cert-file=c.pem"}, nil, "--tls-cert-file (CACHESERVICE_TLS_CERT_FILE) needs --tls-key-file"},
		{"key without certificate", nil, map[string]string{"CACHESERVICE_TLS_KEY_FILE": "k.pem"}, "--tls-key-file (CACHESERVICE_TLS_KEY_FILE) needs --tls-cert-file"},
		{"client CA without TLS", []string{"--tls-client-ca-file=ca.pem", "--auth-file=a.yaml"}, nil, "--tls-client-ca-file (CACHESERVICE_TLS_CLIENT_CA_FILE) needs --tls-cert-file"},
		{"client CA without auth file", []string{"--tls-client-ca-file=ca.pem", "--tls-cert-file=c", "--tls-key-file=k"}, nil, "--tls-client-ca-file (CACHESERVICE_TLS_CLIENT_CA_FILE) needs --auth-file"},
		{"audience without issuer", []string{"--oidc-audience=cache"}, nil, "--oidc-audience (CACHESERVICE_OIDC_AUDIENCE) needs --oidc-issuer"},
		{"issuer without audience", []string{"--oidc-issuer=https://issuer.example.com", "--auth-file=a.yaml"}, nil, "--oidc-issuer (CACHESERVICE_OIDC_ISSUER) needs --oidc-audience"},
		{"issuer without auth file", []string{"--oidc-issuer=https://issuer.example.com", "--oidc-audience=cache"}, nil, "--oidc-issuer (CACHESERVICE_OIDC_ISSUER) needs --auth-file"},
		{"issuer over http", []string{"--oidc-issuer=http://issuer.example.com", "--oidc-audience=cache", "--auth-file=a.yaml"}, nil, "want an https URL"},
		{"oidc CA without issuer", []string{"--oidc-ca-file=ca.pem"}, nil, "--oidc-ca-file (CACHESERVICE_OIDC_CA_FILE) needs --oidc-issuer"},
		{"empty claim", []string{"--oidc-claim="}, nil, "--oidc-claim"},
		{"bad trusted proxy", []string{"--trusted-proxies=10.0.0.1/8", "--auth-file=a.yaml"}, nil, "host bits set"},
		{"trusted proxies without auth file", nil, map[string]string{"CACHESERVICE_TRUSTED_PROXIES": "10.0.0.0/8"}, "--trusted-proxies (CACHESERVICE_TRUSTED_PROXIES) needs --auth-file"},
		{"unparsable insecure-allow-open", nil, map[string]string{"CACHESERVICE_INSECURE_ALLOW_OPEN": "perhaps"}, `CACHESERVICE_INSECURE_ALLOW_OPEN (--insecure-allow-open): "perhaps" is not a boolean`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			code := cli(context.Background(), append([]string{"serve"}, tt.args...), env(tt.env), &stdout, &stderr)
			if code != exitUsage {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, exitUsage, &stderr)
			}
			out := stderr.String()
			if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
				t.Errorf("stderr = %q, want exactly one line", out)
			}
			if !strings.HasPrefix(out, "cacheservice: ") || !strings.Contains(out, tt.wantMsg) || !strings.Contains(out, "serve -help") {
				t.Errorf("stderr = %q, want the error naming %q and a pointer to -help", out, tt.wantMsg)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout = %q, want nothing", &stdout)
			}
		})
	}
}

func TestServeHelpListsEveryFlagWithItsVariable(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if code := cli(context.Background(), []string{"serve", "-help"}, noEnv, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit code %d, want 0; stderr: %s", code, &stderr)
	}
	for _, flag := range []string{"addr", "database-url", "data-dir", "db-connect-timeout", "db-max-conns", "db-timeout", "lock-timeout", "max-heartbeat", "min-heartbeat",
		"grace-multiplier", "max-inline-bytes", "max-request-bytes", "cors-allowed-origins", "shutdown-timeout",
		"log-level", "log-format", "metrics-addr", "otlp-endpoint", "pprof", "sweep-interval",
		"reservation-retention", "entry-ttl", "sweep-batch-size",
		"write-timeout", "response-budget", "http2-max-streams", "grpc-transport", "max-connections", "gc-headroom"} {
		listed := strings.Contains(stdout.String(), "-"+flag+" ") || strings.Contains(stdout.String(), "-"+flag+"\n") // a bool flag has no value
		if !listed || !strings.Contains(stdout.String(), envName(flag)) {
			t.Errorf("help does not list -%s with %s:\n%s", flag, envName(flag), &stdout)
		}
	}
}

func TestCLIRejectsUnknownCommand(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if code := cli(context.Background(), []string{"serv"}, noEnv, &stdout, &stderr); code != exitUsage {
		t.Fatalf("exit code %d, want %d", code, exitUsage)
	}
	if !strings.Contains(stderr.String(), `unknown command "serv"`) {
		t.Errorf("stderr = %q", &stderr)
	}
}

// TestEveryDurationFlagNamesAMissingUnit gives each duration flag a bare
// number, on the command line and in its variable: every one answers in one
// line naming the flag and the missing unit, never the flag package's
// "parse error".
func TestEveryDurationFlagNamesAMissingUnit(t *testing.T) {
	t.Parallel()
	var durations []string
	// The flags of serve, read from its -help, so a new one is covered.
	var help bytes.Buffer
	if _, err := parseConfig([]string{"-help"}, noEnv, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-help: %v", err)
	}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z-]+) duration$`).FindAllStringSubmatch(help.String(), -1) {
		durations = append(durations, m[1])
	}
	if len(durations) < 8 {
		t.Fatalf("found %d duration flags in -help, want the eight or more serve has:\n%s", len(durations), &help)
	}
	for _, name := range durations {
		for _, src := range []struct {
			args []string
			env  map[string]string
			who  string
		}{
			{[]string{"--" + name, "5"}, nil, "--" + name + ": "},
			{nil, map[string]string{envName(name): "5"}, envName(name) + " (--" + name + "): "},
		} {
			var stdout, stderr bytes.Buffer
			code := cli(context.Background(), append([]string{"serve"}, src.args...), env(src.env), &stdout, &stderr)
			want := "cacheservice: " + src.who + `"5" needs a unit, such as 5s`
			if code != exitUsage || !strings.HasPrefix(stderr.String(), want) || strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("%s=5: exit %d, stderr %q; want exit %d and one line starting %q", name, code, &stderr, exitUsage, want)
			}
		}
	}
}

// TestHelpShowsByteSizesWithTheirUnit: -help shows the byte-size defaults
// as the README writes them (1MiB), and the sizes round-trip.
func TestHelpShowsByteSizesWithTheirUnit(t *testing.T) {
	t.Parallel()
	var help bytes.Buffer
	if _, err := parseConfig([]string{"-help"}, noEnv, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-help: %v", err)
	}
	for _, want := range []string{"(default 1MiB)", "(default 4MiB)"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("-help lacks %s:\n%s", want, &help)
		}
	}
	if strings.Contains(help.String(), "1048576") && !strings.Contains(help.String(), "such as 1048576") {
		t.Errorf("-help still shows a size in plain bytes:\n%s", &help)
	}
	for n, want := range map[byteSize]string{0: "0", 1000: "1000", 1 << 10: "1KiB", 1536: "1536", 1 << 20: "1MiB", 1 << 30: "1GiB", 1<<20 + 1<<10: "1025KiB"} {
		if got := n.String(); got != want {
			t.Errorf("byteSize(%d) = %q, want %q", int(n), got, want)
		}
		var back byteSize
		if err := back.Set(want); err != nil || back != n {
			t.Errorf("Set(%q) = %d, %v; want %d", want, int(back), err, int(n))
		}
	}
}

// TestServeRefusesToListenOpenWithoutAuthentication checks the guard of an
// unauthenticated server: off loopback it exits 2 with one line naming the
// two ways out, before it opens anything; on loopback, with --auth-file or
// with --insecure-allow-open the guard lets it through.
func TestServeRefusesToListenOpenWithoutAuthentication(t *testing.T) {
	for _, addr := range []string{":8094", "0.0.0.0:8094", "[::]:8094", "192.0.2.1:8094", "cache.example.com:8094"} {
		t.Run(addr, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := cli(context.Background(), []string{"serve", "--addr", addr}, noEnv, &stdout, &stderr)
			if code != exitUsage {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, exitUsage, &stderr)
			}
			out := strings.TrimSuffix(stderr.String(), "\n")
			if strings.Contains(out, "\n") || !strings.Contains(out, "refusing to listen on "+addr) ||
				!strings.Contains(out, "--auth-file") || !strings.Contains(out, "--insecure-allow-open") {
				t.Errorf("stderr = %q, want one line refusing %s and naming --auth-file and --insecure-allow-open", out, addr)
			}
		})
	}
	for _, tt := range []struct {
		cfg  Config
		open bool
	}{
		{Config{Addr: "127.0.0.1:8094"}, false},
		{Config{Addr: "127.1.2.3:0"}, false},
		{Config{Addr: "[::1]:8094"}, false},
		{Config{Addr: "localhost:8094"}, false},
		{Config{Addr: ":8094", InsecureAllowOpen: true}, false},
		{Config{Addr: "0.0.0.0:8094", Auth: auth.Config{File: "auth.yaml"}}, false},
		{Config{Addr: "[::ffff:10.0.0.1]:8094"}, true},
	} {
		if got := tt.cfg.exposed() != ""; got != tt.open {
			t.Errorf("exposed(%+v) refuses = %v, want %v", tt.cfg, got, tt.open)
		}
	}
}
