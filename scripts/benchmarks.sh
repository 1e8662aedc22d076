#!/bin/sh
# Regenerates the published benchmark: the generated part of docs/BENCHMARKS.md,
# docs/benchmarks.svg and docs/benchmarks.json. It builds the real server and runs it
# as a separate process over an embedded PostgreSQL that cachebench starts, then runs
# every workload over every protocol and the raw-pgx ceiling at 1, 16 and 64 clients.
# About five minutes on 2 cores. Extra arguments go to `cachebench report`.
set -eu
cd "$(dirname "$0")/.."
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/cachebench" ./cmd/cachebench
go build -o "$bin/cacheservice" ./cmd/cacheservice
"$bin/cachebench" report --db-max-conns 8 --server-bin "$bin/cacheservice" --server-args "--log-level warn" "$@"
