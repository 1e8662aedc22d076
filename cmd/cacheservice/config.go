package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cacheservice/cacheservice/auth"
	"github.com/cacheservice/cacheservice/internal/setting"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/service"
	"github.com/cacheservice/cacheservice/store"
	"github.com/cacheservice/cacheservice/tlsconfig"
)

// envPrefix namespaces the environment variable of every flag:
// --db-timeout is CACHESERVICE_DB_TIMEOUT.
const envPrefix = "CACHESERVICE_"

// Config is everything `cacheservice serve` can be told, filled from flags
// with environment fallbacks and passed down as a value. The parts that
// belong to a package are that package's own Config types, so their
// defaults are stated once, in its Default...() function, and a new field
// needs only its flag in parseConfig (and a check in validate).
type Config struct {
	// Addr is the host:port to listen on; port 0 picks a free one.
	Addr string
	// Store says how to reach PostgreSQL: --database-url (empty runs an
	// embedded one in DataDir), --db-max-conns and --db-timeout.
	Store store.Config
	// DBConnectTimeout bounds the wait at start for an external database to
	// become reachable; 0 tries once.
	DBConnectTimeout time.Duration
	// DataDir holds the embedded PostgreSQL cluster.
	DataDir string
	// Manager holds the cache's limits: --max-heartbeat,
	// --grace-multiplier and --max-inline-bytes.
	Manager manager.Config
	// Sweep configures the sweeper: --sweep-interval (0 disables it),
	// --reservation-retention, --entry-ttl and --sweep-batch-size.
	Sweep manager.SweepConfig
	// MaxRequestBytes bounds a request body.
	MaxRequestBytes int
	// HTTP bounds what clients can hold of the HTTP server: --write-timeout,
	// --response-budget, --http2-max-streams and --max-connections.
	HTTP HTTPConfig
	// CORSAllowedOrigins lists the browser origins allowed to call; "*" is
	// any, none disables CORS.
	CORSAllowedOrigins []string
	// GCHeadroom is the bytes the heap may grow above what is live before
	// the garbage collector runs again (gcheadroom); 0 leaves the collector
	// to GOGC. A GOGC in the environment wins over it.
	GCHeadroom int
	// ShutdownTimeout bounds the wait for in-flight requests on shutdown,
	// and then for the embedded PostgreSQL to stop.
	ShutdownTimeout time.Duration
	// LogLevel is the least severe level logged.
	LogLevel slog.Level
	// LogLevelFile, when set, holds the log level, overriding LogLevel; it
	// is read at start and again on SIGHUP.
	LogLevelFile string
	// LogFormat is "text" or "json".
	LogFormat string
	// MetricsAddr, when set, serves /metrics (and pprof) on a listener of
	// its own instead of the main port.
	MetricsAddr string
	// OTLPEndpoint is the OTLP/HTTP base URL spans are exported to; empty
	// leaves it to the standard OTEL_ variables, and tracing off without them.
	OTLPEndpoint string
	// PProf mounts net/http/pprof at /debug/pprof/.
	PProf bool
	// Auth turns on authentication and authorization when Auth.File is set:
	// --auth-file, --oidc-issuer, --oidc-audience, --oidc-claim,
	// --oidc-ca-file and --trusted-proxies. cmd adds the logger.
	Auth auth.Config
	// TLS serves the main port over TLS when TLS.CertFile is set:
	// --tls-cert-file, --tls-key-file and --tls-client-ca-file (mTLS).
	TLS tlsconfig.Config
	// InsecureAllowOpen lets a server without authentication listen on a
	// non-loopback address.
	InsecureAllowOpen bool
}

// authOn reports whether calls are authenticated and authorized.
func (c Config) authOn() bool { return c.Auth.File != "" }

// tlsOn reports whether the main port speaks TLS.
func (c Config) tlsOn() bool { return c.TLS.CertFile != "" }

// defaultConfig is the configuration without flags or environment: the
// packages' defaults and cmd's own.
func defaultConfig() Config {
	return Config{
		Addr:             "127.0.0.1:8094",
		Store:            store.DefaultConfig(),
		DataDir:          ".cacheservice",
		DBConnectTimeout: time.Minute,
		Manager:          manager.DefaultConfig(),
		Sweep:            manager.DefaultSweepConfig(),
		MaxRequestBytes:  service.DefaultMaxRequestBytes,
		HTTP:             defaultHTTPConfig(),
		GCHeadroom:       32 << 20,
		ShutdownTimeout:  15 * time.Second,
		LogLevel:         slog.LevelInfo,
		LogFormat:        "text",
		Auth:             auth.Config{OIDCClaim: "sub"},
	}
}

// embedded reports whether the server runs its own PostgreSQL.
func (c Config) embedded() bool { return c.Store.URL == "" }

// lookupEnv is os.LookupEnv, injected so tests do not depend on the
// environment they run in.
type lookupEnv func(key string) (string, bool)

// parseConfig reads the serve command's flags; a flag not given on the
// command line falls back to its environment variable, then to its default.
// -help prints the usage to output and returns flag.ErrHelp; errors are
// returned, not printed.
func parseConfig(args []string, env lookupEnv, output io.Writer) (Config, error) {
	// Each flag's default is the field's value in defaultConfig.
	cfg := defaultConfig()
	fs := flag.NewFlagSet("cacheservice serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are the caller's to print, in one line
	fs.Usage = func() {}
	maxConns := int(cfg.Store.MaxConns)
	maxInline, maxRequest := byteSize(cfg.Manager.MaxInlineBytes), byteSize(cfg.MaxRequestBytes)
	responseBudget, gcHeadroom := byteSize(cfg.HTTP.ResponseBudget), byteSize(cfg.GCHeadroom)
	var origins originList
	var proxies prefixList

	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "`host:port` to listen on (port 0 picks a free port)")
	fs.StringVar(&cfg.Store.URL, "database-url", cfg.Store.URL, "PostgreSQL connection `URL` (else env DATABASE_URL); empty runs an embedded PostgreSQL in --data-dir")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "`directory` of the embedded PostgreSQL, created on first start; relative to the working directory")
	fs.IntVar(&maxConns, "db-max-conns", maxConns, "maximum open database connections")
	fs.DurationVar(&cfg.Store.Timeout, "db-timeout", cfg.Store.Timeout, "deadline of every database call")
	fs.DurationVar(&cfg.DBConnectTimeout, "db-connect-timeout", cfg.DBConnectTimeout, "how long a start waits for an unreachable database, retrying with backoff; 0 tries once (a refused login or a bad URL fails at once)")
	fs.DurationVar(&cfg.Store.LockTimeout, "lock-timeout", cfg.Store.LockTimeout, "longest wait of a claim for a reservation's row lock before it answers unavailable; below --db-timeout (default at most half of it)")
	fs.DurationVar(&cfg.Manager.MaxHeartbeat, "max-heartbeat", cfg.Manager.MaxHeartbeat, "longest reservation heartbeat interval granted, and the one given when a request sets none (at most 24h)")
	fs.DurationVar(&cfg.Manager.MinHeartbeat, "min-heartbeat", cfg.Manager.MinHeartbeat, "shortest reservation heartbeat interval a request may set; shorter is invalid_argument")
	fs.Float64Var(&cfg.Manager.GraceMultiplier, "grace-multiplier", cfg.Manager.GraceMultiplier, "heartbeat intervals a reservation lives without being extended (1 to 100)")
	fs.Var(&maxInline, "max-inline-bytes", "largest inline output in `bytes` (suffixes KiB, MiB, GiB allowed)")
	fs.Var(&maxRequest, "max-request-bytes", "largest request body in `bytes` (suffixes KiB, MiB, GiB allowed)")
	fs.DurationVar(&cfg.HTTP.WriteTimeout, "write-timeout", cfg.HTTP.WriteTimeout, "longest each 64 KiB of a response waits for the client to read it; then the HTTP/2 stream is reset or the HTTP/1.1 connection closed")
	fs.Var(&responseBudget, "response-budget", "`bytes` of responses held while being written (suffixes KiB, MiB, GiB allowed); a response beyond it is answered resource_exhausted")
	fs.IntVar(&cfg.HTTP.MaxStreams, "http2-max-streams", cfg.HTTP.MaxStreams, "concurrent HTTP/2 streams per connection")
	fs.StringVar(&cfg.HTTP.GRPCTransport, "grpc-transport", cfg.HTTP.GRPCTransport, "what serves gRPC without TLS: grpc-go (half the CPU per call) or net/http (Go's HTTP/2 server, as every other protocol and all of TLS)")
	fs.IntVar(&cfg.HTTP.MaxConns, "max-connections", cfg.HTTP.MaxConns, "open connections on --addr; more are closed on arrival; 0 is no limit")
	fs.Var(&origins, "cors-allowed-origins", "comma-separated browser `origins` allowed to call, * for any; none disables CORS")
	fs.Var(&gcHeadroom, "gc-headroom", "`bytes` the heap may grow above what is live before the garbage collector runs again, or by GOGC=100 if that is more (suffixes KiB, MiB, GiB allowed); 0 leaves the collector to Go's default; ignored when GOGC is set")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "how long shutdown waits for in-flight requests, then for the embedded PostgreSQL")
	fs.TextVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "least severe `level` logged: debug, info, warn or error")
	fs.StringVar(&cfg.LogLevelFile, "log-level-file", "", "`file` holding the log level (debug, info, warn or error), read at start and on SIGHUP; overrides --log-level")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "log `format`: text or json")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", cfg.MetricsAddr, "`host:port` of a separate listener for /metrics (and pprof); empty serves them on --addr")
	fs.StringVar(&cfg.OTLPEndpoint, "otlp-endpoint", cfg.OTLPEndpoint, "OTLP/HTTP base `URL` spans are exported to, such as http://collector:4318; empty leaves it to OTEL_EXPORTER_OTLP_ENDPOINT, tracing off without it")
	fs.BoolVar(&cfg.PProf, "pprof", cfg.PProf, "serve net/http/pprof at /debug/pprof/")
	fs.DurationVar(&cfg.Sweep.Interval, "sweep-interval", cfg.Sweep.Interval, "time between sweeper passes; 0 disables the sweeper")
	fs.DurationVar(&cfg.Sweep.ReservationRetention, "reservation-retention", cfg.Sweep.ReservationRetention, "how long after expiry a reservation is deleted")
	fs.DurationVar(&cfg.Sweep.EntryTTL, "entry-ttl", cfg.Sweep.EntryTTL, "delete entries not updated for this long; 0 keeps them until deleted")
	fs.IntVar(&cfg.Sweep.BatchSize, "sweep-batch-size", cfg.Sweep.BatchSize, "most rows one sweeper statement deletes")
	fs.StringVar(&cfg.Auth.File, "auth-file", cfg.Auth.File, "YAML `file` of principals and their grants; turns on authentication and authorization (re-read on SIGHUP and on change)")
	fs.StringVar(&cfg.Auth.OIDCIssuer, "oidc-issuer", cfg.Auth.OIDCIssuer, "https `URL` of an OIDC issuer whose JWTs are accepted as bearer tokens (needs --auth-file and --oidc-audience)")
	fs.StringVar(&cfg.Auth.OIDCAudience, "oidc-audience", cfg.Auth.OIDCAudience, "`audience` a JWT must be minted for")
	fs.StringVar(&cfg.Auth.OIDCClaim, "oidc-claim", cfg.Auth.OIDCClaim, "JWT `claim` whose value names the principal (oidc_identities in the auth file)")
	fs.StringVar(&cfg.Auth.OIDCCAFile, "oidc-ca-file", cfg.Auth.OIDCCAFile, "PEM `file` of CAs trusted for the OIDC issuer's TLS instead of the system's")
	fs.Var(&proxies, "trusted-proxies", "comma-separated `CIDRs` or addresses whose X-Forwarded-For is believed when matching networks; default none")
	fs.StringVar(&cfg.TLS.CertFile, "tls-cert-file", cfg.TLS.CertFile, "PEM certificate chain `file`; serves TLS (HTTP/1.1 and HTTP/2) on --addr, re-read on change")
	fs.StringVar(&cfg.TLS.KeyFile, "tls-key-file", cfg.TLS.KeyFile, "PEM private key `file` of --tls-cert-file")
	fs.StringVar(&cfg.TLS.ClientCAFile, "tls-client-ca-file", cfg.TLS.ClientCAFile, "PEM `file` of CAs that client certificates must chain to (mTLS; a certificate names a principal)")
	fs.BoolVar(&cfg.InsecureAllowOpen, "insecure-allow-open", cfg.InsecureAllowOpen, "without --auth-file, listen on a non-loopback --addr anyway: anyone who reaches it may read, write and delete everything")
	fs.VisitAll(func(f *flag.Flag) { f.Usage += fmt.Sprintf(" (env %s)", envName(f.Name)) })

	bad, unwrap := checkValues(fs)
	defer unwrap()
	if err := fs.Parse(args); err != nil {
		unwrap()
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(output, "Usage: cacheservice serve [flags]\n\n"+
				"Serves the cache API. Every flag can also be set by the environment variable\n"+
				"named in its description; a flag on the command line wins.\n\nFlags:\n")
			fs.SetOutput(output)
			fs.PrintDefaults()
			return Config{}, err
		}
		return Config{}, parseError(err, bad)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q: serve takes flags only", fs.Arg(0))
	}
	if err := applyEnv(fs, env); err != nil {
		return Config{}, err
	}
	if !isSet(fs, "lock-timeout") {
		// The default must stay below a short --db-timeout, or setting that
		// alone would be refused.
		cfg.Store.LockTimeout = min(cfg.Store.LockTimeout, cfg.Store.Timeout/2)
	}
	if maxConns < 1 || maxConns > math.MaxInt32 {
		return Config{}, fmt.Errorf("%s must be at least 1, got %d", opt("db-max-conns"), maxConns)
	}
	cfg.Store.MaxConns = int32(maxConns)
	cfg.Manager.MaxInlineBytes, cfg.MaxRequestBytes = int(maxInline), int(maxRequest)
	cfg.HTTP.ResponseBudget, cfg.GCHeadroom = int(responseBudget), int(gcHeadroom)
	cfg.CORSAllowedOrigins = origins
	cfg.Auth.TrustedProxies = proxies
	if err := cfg.validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// applyEnv sets every flag left off the command line from its environment
// variable, so that both sources share one parser and one validation.
func applyEnv(fs *flag.FlagSet, env lookupEnv) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		name := envName(f.Name)
		v, ok := env(name)
		if !ok && f.Name == "database-url" {
			name = "DATABASE_URL"
			v, ok = env(name)
		}
		if !ok {
			return
		}
		if setErr := fs.Set(f.Name, v); setErr != nil {
			err = fmt.Errorf("%s (--%s): %w", name, f.Name, setErr)
		}
	})
	return err
}

// isSet reports whether a flag was given, on the command line or by its
// environment variable.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// validate checks what a flag's type cannot. Messages name the flag and
// its variable, since the value may have come from either.
func (c Config) validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	_, _, err := net.SplitHostPort(c.Addr)
	check(err == nil, "%s %q: want host:port, such as 127.0.0.1:8094", opt("addr"), c.Addr)
	check(!c.embedded() || c.DataDir != "", "%s must not be empty when no database URL is given", opt("data-dir"))
	// The bounds of the store's, manager's and sweeper's settings are
	// theirs; here they only learn the flag's full name.
	errs = append(errs, flagErrors(c.Store.Validate(), storeFlags)...)
	errs = append(errs, flagErrors(c.Manager.Validate(), managerFlags)...)
	errs = append(errs, flagErrors(c.Sweep.Validate(), sweepFlags)...)
	check(c.MaxRequestBytes > 0, "%s must be positive, got %d", opt("max-request-bytes"), c.MaxRequestBytes)
	check(c.Manager.MaxInlineBytes <= c.MaxRequestBytes, "%s (%d) must not exceed %s (%d): such outputs could never arrive",
		opt("max-inline-bytes"), c.Manager.MaxInlineBytes, opt("max-request-bytes"), c.MaxRequestBytes)
	check(c.DBConnectTimeout >= 0 && c.DBConnectTimeout <= maxConnectTimeout, "%s must be between 0 and %v, got %v", opt("db-connect-timeout"), maxConnectTimeout, c.DBConnectTimeout)
	check(c.HTTP.WriteTimeout >= 10*time.Millisecond && c.HTTP.WriteTimeout <= time.Hour,
		"%s must be between 10ms and 1h, got %v", opt("write-timeout"), c.HTTP.WriteTimeout)
	check(c.HTTP.ResponseBudget >= 1<<20, "%s must be at least 1MiB, got %d", opt("response-budget"), c.HTTP.ResponseBudget)
	check(c.HTTP.GRPCTransport == grpcTransportGRPCGo || c.HTTP.GRPCTransport == grpcTransportNetHTTP,
		"%s must be %s or %s, got %q", opt("grpc-transport"), grpcTransportGRPCGo, grpcTransportNetHTTP, c.HTTP.GRPCTransport)
	check(c.HTTP.MaxStreams >= 1 && c.HTTP.MaxStreams <= 10000,
		"%s must be between 1 and 10000, got %d", opt("http2-max-streams"), c.HTTP.MaxStreams)
	check(c.HTTP.MaxConns >= 0 && c.HTTP.MaxConns <= 1_000_000,
		"%s must be between 0 (no limit) and 1000000, got %d", opt("max-connections"), c.HTTP.MaxConns)
	// Below the runtime's least heap goal (4 MiB) headroom changes nothing.
	check(c.GCHeadroom == 0 || c.GCHeadroom >= 4<<20, "%s must be 0 (off) or at least 4MiB, got %d", opt("gc-headroom"), c.GCHeadroom)
	check(c.ShutdownTimeout > 0, "%s must be positive, got %v", opt("shutdown-timeout"), c.ShutdownTimeout)
	if c.MetricsAddr != "" {
		_, _, err := net.SplitHostPort(c.MetricsAddr)
		check(err == nil, "%s %q: want host:port, such as 127.0.0.1:9090", opt("metrics-addr"), c.MetricsAddr)
	}
	check(c.LogFormat == "text" || c.LogFormat == "json", "%s must be text or json, got %q", opt("log-format"), c.LogFormat)
	errs = append(errs, c.validateSecurity()...)
	return errors.Join(errs...)
}

// validateSecurity checks the TLS and authentication flags together: each
// message names the flag that is missing its partner.
func (c Config) validateSecurity() []error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.TLS.CertFile == "" || c.TLS.KeyFile != "", "%s needs %s", opt("tls-cert-file"), opt("tls-key-file"))
	check(c.TLS.KeyFile == "" || c.TLS.CertFile != "", "%s needs %s", opt("tls-key-file"), opt("tls-cert-file"))
	check(c.TLS.ClientCAFile == "" || c.tlsOn(), "%s needs %s: client certificates are verified in the TLS handshake", opt("tls-client-ca-file"), opt("tls-cert-file"))
	check(c.TLS.ClientCAFile == "" || c.authOn(), "%s needs %s: a certificate's identity gets its grants from it", opt("tls-client-ca-file"), opt("auth-file"))
	oidc := c.Auth.OIDCIssuer != ""
	check(c.Auth.OIDCAudience == "" || oidc, "%s needs %s", opt("oidc-audience"), opt("oidc-issuer"))
	check(c.Auth.OIDCCAFile == "" || oidc, "%s needs %s", opt("oidc-ca-file"), opt("oidc-issuer"))
	check(c.Auth.OIDCClaim != "", "%s must not be empty", opt("oidc-claim"))
	if oidc {
		u, err := url.Parse(c.Auth.OIDCIssuer)
		check(err == nil && u.Scheme == "https" && u.Host != "", "%s %q: want an https URL such as https://issuer.example.com", opt("oidc-issuer"), c.Auth.OIDCIssuer)
		check(c.Auth.OIDCAudience != "", "%s needs %s: without it a token minted for any other service would be accepted", opt("oidc-issuer"), opt("oidc-audience"))
		check(c.authOn(), "%s needs %s: a token's identity gets its grants from it", opt("oidc-issuer"), opt("auth-file"))
	}
	check(len(c.Auth.TrustedProxies) == 0 || c.authOn(), "%s needs %s: forwarded addresses matter only to network principals", opt("trusted-proxies"), opt("auth-file"))
	return errs
}

// exposed says why the configuration may not start: a server without
// authentication on an address others can reach, unless the operator said
// so with --insecure-allow-open. Empty when it may start.
func (c Config) exposed() string {
	if c.authOn() || c.InsecureAllowOpen || loopback(c.Addr) {
		return ""
	}
	return fmt.Sprintf("refusing to listen on %s without authentication: anyone who reaches it could read, write and delete every entry; set %s, or %s behind a firewall or NetworkPolicy, or listen on 127.0.0.1",
		c.Addr, opt("auth-file"), opt("insecure-allow-open"))
}

// loopback reports whether addr's host reaches only this machine: localhost,
// 127.0.0.0/8 or ::1. An empty host or 0.0.0.0 listens on every interface.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// The flags of the embedded configs' fields, by Go field name, to name a
// field their Validate functions report.
var (
	storeFlags   = map[string]string{"Timeout": "db-timeout", "LockTimeout": "lock-timeout"}
	managerFlags = map[string]string{"MaxHeartbeat": "max-heartbeat", "MinHeartbeat": "min-heartbeat", "GraceMultiplier": "grace-multiplier", "MaxInlineBytes": "max-inline-bytes"}
	sweepFlags   = map[string]string{"Interval": "sweep-interval", "ReservationRetention": "reservation-retention", "EntryTTL": "entry-ttl", "BatchSize": "sweep-batch-size"}
)

// flagErrors rewrites the bound errors of a package's Validate
// (*setting.Errors, joined) to name the flag and its variable; a field
// mentioned in the problem is named by its flag alone.
func flagErrors(validated error, flags map[string]string) []error {
	if validated == nil {
		return nil
	}
	list := []error{validated}
	if joined, ok := validated.(interface{ Unwrap() []error }); ok {
		list = joined.Unwrap()
	}
	flag := func(field string) string {
		if f, ok := flags[field]; ok {
			return f
		}
		return field
	}
	var out []error
	for _, e := range list {
		if se, ok := errors.AsType[*setting.Error](e); ok {
			e = errors.New(se.Describe(func(field string) string { return opt(flag(field)) }, flag))
		}
		out = append(out, e)
	}
	return out
}

// opt names a flag and its environment variable for a message.
func opt(flagName string) string {
	return fmt.Sprintf("--%s (%s)", flagName, envName(flagName))
}

// byteSize is a flag holding a number of bytes, optionally with a binary
// suffix: 4194304, 4096KiB and 4MiB are the same.
type byteSize int

// String shows the size in the largest binary unit that divides it, as the
// README and -help's defaults write it: 1MiB, not 1048576.
func (b *byteSize) String() string {
	if b == nil {
		return "0"
	}
	n := int(*b)
	for _, u := range []struct {
		suffix string
		size   int
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.size == 0 {
			return strconv.Itoa(n/u.size) + u.suffix
		}
	}
	return strconv.Itoa(n)
}

func (b *byteSize) Set(s string) error {
	num, unit := s, 1
	for _, u := range []struct {
		suffix string
		size   int
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, unit = strings.TrimSpace(n), u.size
			break
		}
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 || n > math.MaxInt32/unit {
		return fmt.Errorf("%q is not a size: want a number of bytes, or one with a KiB, MiB or GiB suffix, such as 1MiB", s)
	}
	*b = byteSize(n * unit)
	return nil
}

// prefixList is --trusted-proxies: CIDRs or single addresses.
type prefixList []netip.Prefix

func (p *prefixList) String() string {
	parts := make([]string, len(*p))
	for i, x := range *p {
		parts[i] = x.String()
	}
	return strings.Join(parts, ",")
}

func (p *prefixList) Set(s string) error {
	list, err := auth.ParsePrefixes(s)
	if err != nil {
		return err
	}
	*p = list
	return nil
}

// originList is a comma-separated list of CORS origins: "*", or
// scheme://host[:port] where the host may start with a "*." wildcard.
type originList []string

func (o *originList) String() string { return strings.Join(*o, ",") }

func (o *originList) Set(s string) error {
	var list []string
	for origin := range strings.SplitSeq(s, ",") {
		origin = strings.TrimSpace(origin)
		if origin == "" {
			continue
		}
		if origin != "*" {
			u, err := url.Parse(origin)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
				u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
				return fmt.Errorf("origin %q: want * or scheme://host[:port], such as https://app.example.com", origin)
			}
		}
		list = append(list, origin)
	}
	*o = list
	return nil
}
