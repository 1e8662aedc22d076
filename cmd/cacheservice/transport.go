//go:build !cachebench_grpcgo

package main

import (
	"log/slog"
	"net"
	"net/http"
)

// apiTransport serves the API: Go's HTTP server for every protocol.
// (cachebench measures grpc-go's transport in front of the same edge with a
// build of this command with the cachebench_grpcgo tag; see grpcgo.go.)
func apiTransport(Config, *slog.Logger) func(*http.Server, net.Listener) error { return serveHTTP }
