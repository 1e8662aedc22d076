//go:build cachebench_grpcgo

package main

import (
	"log/slog"
	"net"
	"net/http"

	"github.com/cacheservice/cacheservice/cmd/cachebench/grpcbridge"
	"github.com/cacheservice/cacheservice/service"
)

// apiTransport makes this build cachebench's measure of grpc-go's
// transport: unencrypted HTTP/2 connections are served by grpc-go in front
// of the same edge (package grpcbridge), without all of the real server's
// bounds. Only a build with -tags cachebench_grpcgo has it.
func apiTransport(cfg Config, logger *slog.Logger) func(*http.Server, net.Listener) error {
	logger.Warn("grpc-go transport: unencrypted HTTP/2 is served by grpc-go without all of the server's bounds (a cachebench build)")
	maxRequestBytes := cfg.MaxRequestBytes
	if maxRequestBytes <= 0 {
		maxRequestBytes = service.DefaultMaxRequestBytes
	}
	return func(srv *http.Server, ln net.Listener) error {
		if srv.TLSConfig != nil {
			return serveHTTP(srv, ln)
		}
		return grpcbridge.Serve(srv, ln, grpcbridge.Options{
			MaxStreams: cfg.HTTP.MaxStreams, MaxRequestBytes: maxRequestBytes, WriteTimeout: cfg.HTTP.WriteTimeout})
	}
}
