// Command cacheservice serves the cache API: Connect, gRPC and gRPC-Web on
// one port, over PostgreSQL. It is the only place that knows every package:
// it reads the configuration, opens the store and wires the manager and the
// service into an HTTP server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"google.golang.org/grpc/grpclog"

	"github.com/cacheservice/cacheservice/internal/gcheadroom"
	"github.com/cacheservice/cacheservice/internal/version"
)

// Exit codes: 2 is a usage error, as with the flag package.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// main stops gracefully on SIGINT or SIGTERM; SIGHUP reloads what can be
// reloaded (see reloader) and never stops it.
func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, a second one kills at once.
		<-ctx.Done()
		stop()
	}()
	// grpc-go logs to stderr in its own format unless told; before any of
	// it runs, its errors go where net/http's do (see grpcLog).
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, grpcLog{}))
	os.Exit(cli(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

// grpcLogTo is where grpc-go's errors go: the errorLog of the server
// running in this process, or nowhere before it starts.
var grpcLogTo atomic.Pointer[errorLog]

// grpcLog writes grpc-go's error lines to grpcLogTo's log, which rate-
// limits them as net/http's: mostly what clients do to their own
// connections.
type grpcLog struct{}

func (grpcLog) Write(p []byte) (int, error) {
	if l := grpcLogTo.Load(); l != nil {
		return l.Write(p)
	}
	return len(p), nil
}

const usage = `cacheservice stores workflow task outputs and coordinates who computes a missing one.

Usage:
  cacheservice serve [flags]   serve the API (see cacheservice serve -help)
  cacheservice import-flyte --from URL [flags]
                               copy a Flyte cache service database into ours
                               (see cacheservice import-flyte -help)
  cacheservice version         print the version, commit and Go version of this build
  cacheservice help            show this help
`

// cli runs the command line and returns the exit code.
func cli(ctx context.Context, args []string, env lookupEnv, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "serve":
		return serveCommand(ctx, args[1:], env, stdout, stderr)
	case "import-flyte":
		return importFlyteCommand(ctx, args[1:], env, stdout, stderr)
	case "version", "-version", "--version":
		return versionCommand(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "cacheservice: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
}

// serveCommand runs `cacheservice serve` until ctx ends. Failures to start
// are one line on stderr, without the log's decoration.
func serveCommand(ctx context.Context, args []string, env lookupEnv, stdout, stderr io.Writer) int {
	cfg, err := parseConfig(args, env, stdout)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case err != nil:
		// One line, as the README promises: a log collector or a person
		// reading `kubectl logs` sees the whole reason at once.
		fmt.Fprintf(stderr, "cacheservice: %v (see cacheservice serve -help)\n", oneLine(err))
		return exitUsage
	}
	if why := cfg.exposed(); why != "" {
		fmt.Fprintf(stderr, "cacheservice: %s\n", why)
		return exitUsage
	}
	level, err := initialLogLevel(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "cacheservice: %v\n", oneLine(err))
		return exitUsage
	}
	logger := newLeveledLogger(stderr, cfg.LogFormat, level)
	defer tuneGC(cfg, env, logger)()
	reloads := &reloader{}
	reloads.add("log level", logLevelReload(cfg, level))
	defer reloads.watch(ctx, logger)()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		fmt.Fprintf(stderr, "cacheservice: %v\n", err)
		return exitFail
	}
	if err := run(ctx, cfg, logger, ln, reloads); err != nil {
		fmt.Fprintf(stderr, "cacheservice: %v\n", oneLine(err))
		return exitFail
	}
	logger.Info("stopped")
	return exitOK
}

// oneLine folds a multi-line error (errors.Join, pgconn's per-host
// attempts) into one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}

// versionCommand prints which build this is, from internal/version (the
// same values, under the same names, as the labels of the
// cacheservice_build_info metric), one per line.
func versionCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "cacheservice: unexpected argument %q: version takes none\n", args[0])
		return exitUsage
	}
	fmt.Fprintf(stdout, "version:   %s\ncommit:    %s\ngoversion: %s\n", version.String(), version.Commit(), version.GoVersion())
	return exitOK
}

// tuneGC gives the heap cfg.GCHeadroom of room between collections, unless
// the operator set GOGC, which the runtime has already applied. It returns
// the function that stops it.
func tuneGC(cfg Config, env lookupEnv, logger *slog.Logger) (stop func()) {
	if cfg.GCHeadroom == 0 {
		return func() {}
	}
	// The runtime takes GOGC only if it is "off" or a number; anything else
	// leaves it at its default, as if unset.
	if gogc, ok := env("GOGC"); ok && gogc != "" {
		if _, err := strconv.Atoi(gogc); err != nil && gogc != "off" {
			logger.Warn("GOGC is neither a number nor off: the runtime ignores it", "GOGC", gogc)
		} else {
			logger.Info("GOGC is set: --gc-headroom is not applied", "GOGC", gogc)
			return func() {}
		}
	}
	t, err := gcheadroom.Start(uint64(cfg.GCHeadroom))
	if err != nil { // another server in this process (tests) tunes it already
		logger.Debug("gc headroom not applied", "error", err)
		return func() {}
	}
	return t.Stop
}
