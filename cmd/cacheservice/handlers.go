//go:build !cachebench_floor

package main

import (
	"log/slog"

	"github.com/cacheservice/cacheservice/service"
)

// apiHandlers are the API's implementations: none substituted, so every
// call goes through the manager. (cachebench's transport floor is a build of
// this command with the cachebench_floor tag; see floor.go.)
func apiHandlers(*slog.Logger) service.Handlers { return service.Handlers{} }
