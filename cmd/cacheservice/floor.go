//go:build cachebench_floor

package main

import (
	"log/slog"

	"github.com/cacheservice/cacheservice/cmd/cachebench/floor"
	"github.com/cacheservice/cacheservice/service"
)

// apiHandlers makes this build cachebench's transport floor: the same
// server, edge and interceptors over canned answers (package floor), so the
// benchmark can tell the transport's cost from the service's. Only a build
// with -tags cachebench_floor has it.
func apiHandlers(logger *slog.Logger) service.Handlers {
	logger.Warn("transport floor: the API answers canned responses, nothing is stored (a cachebench build)")
	return floor.Handlers()
}
