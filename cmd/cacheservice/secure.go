package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cacheservice/cacheservice/auth"
	"github.com/cacheservice/cacheservice/tlsconfig"
)

// security is the main port's access control: the authenticator (nil
// without --auth-file) and the TLS certificate (nil without
// --tls-cert-file), both re-read when their files change and on SIGHUP.
type security struct {
	auth  *auth.Authenticator
	tls   *tlsconfig.Reloader
	stops []func()
}

// newSecurity loads the auth file and the certificate and starts watching
// them until ctx ends or stop is called; with reloads (nil in tests that
// send no signal) SIGHUP re-reads them too. It runs before the database is
// opened, so a bad file fails the start at once.
func newSecurity(ctx context.Context, cfg Config, logger *slog.Logger, reloads *reloader) (_ *security, err error) {
	sec := &security{}
	defer func() {
		if err != nil {
			sec.stop()
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	sec.stops = append(sec.stops, cancel)
	if cfg.authOn() {
		ac := cfg.Auth
		ac.Logger = logger.With(slog.String("component", "auth"))
		if sec.auth, err = auth.New(ac); err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
		stopWatch, err := sec.auth.Watch(ctx)
		if err != nil {
			return nil, err
		}
		sec.stops = append(sec.stops, stopWatch)
	}
	if cfg.tlsOn() {
		tc := cfg.TLS
		tc.Logger = logger
		if sec.tls, err = tlsconfig.New(tc); err != nil {
			return nil, err
		}
		done, err := sec.tls.Watch(ctx)
		if err != nil {
			return nil, err
		}
		sec.stops = append(sec.stops, func() { cancel(); <-done })
	}
	if reloads != nil {
		sec.addReloads(reloads)
	}
	return sec, nil
}

// stop ends the watches, last started first, and waits for them.
func (sec *security) stop() {
	for i := len(sec.stops) - 1; i >= 0; i-- {
		sec.stops[i]()
	}
	sec.stops = nil
}

// collectors are the metrics of the authenticator and the certificate, for
// the metrics registry.
func (sec *security) collectors() []prometheus.Collector {
	var out []prometheus.Collector
	if sec.auth != nil {
		out = append(out, sec.auth.Collector())
	}
	if r := sec.tls; r != nil {
		out = append(out,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "cacheservice_tls_certificate_expiry_timestamp_seconds",
				Help: "When the certificate served on the main port expires (Unix time).",
			}, func() float64 { return float64(r.State().NotAfter.Unix()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "cacheservice_tls_reloads_total",
				Help: "Loads of the TLS certificate files that changed what is served, the first included.",
			}, func() float64 { return float64(r.State().Reloads) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "cacheservice_tls_reload_failures_total",
				Help: "Reloads of the TLS files that failed; the previous certificate stayed in force.",
			}, func() float64 { return float64(r.State().Failures) }),
		)
	}
	return out
}

// serveTLS makes srv speak TLS with the current certificate, HTTP/2 and
// HTTP/1.1 negotiated by ALPN so that gRPC works over it.
func (sec *security) serveTLS(srv *http.Server) {
	if sec.tls == nil {
		return
	}
	srv.TLSConfig = sec.tls.TLSConfig()
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	srv.Protocols = &protocols
}

// addReloads lets SIGHUP re-read the auth file and the certificate; a file
// that fails keeps the previous one (the packages log and count it).
func (sec *security) addReloads(reloads *reloader) {
	if sec.auth != nil {
		reloads.add("auth file", func() (string, error) {
			if err := sec.auth.Reload(); err != nil {
				return "", err
			}
			return "auth file", nil
		})
	}
	if sec.tls != nil {
		reloads.add("tls certificate", func() (string, error) {
			if err := sec.tls.Reload(); err != nil {
				return "", err
			}
			return "tls certificate", nil
		})
	}
}
