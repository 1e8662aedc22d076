#!/bin/sh
# Regenerates cmd/cacheservice/default.pgo, the CPU profile `go build` uses
# for profile-guided optimization of the server. It builds the server without
# PGO, runs it under cachebench (get-hit, put and claim over gRPC, Connect over
# HTTP/2 and Connect over HTTP/1.1, at 16 clients) with --pprof on a separate
# listener, and takes a CPU profile of the server over the middle of the run.
# About two minutes on 2 cores. Keep the new profile only if `cachebench
# compare` of a build with it against one without (-pgo=off) shows a gain.
set -eu
cd "$(dirname "$0")/.."
bin=$(mktemp -d)
trap 'kill "$bench" 2>/dev/null || true; rm -rf "$bin"' EXIT
go build -o "$bin/cachebench" ./cmd/cachebench
go build -pgo=off -o "$bin/cacheservice" ./cmd/cacheservice
admin=127.0.0.1:${PGO_ADMIN_PORT:-39981}
"$bin/cachebench" run --server-bin "$bin/cacheservice" \
	--server-args "--log-level warn --pprof --metrics-addr $admin" \
	--workload get-hit,put,claim --protocol grpc,connect-h2,connect-proto \
	--concurrency 16 --duration 8s --warmup 1s --keyspace 2000 >"$bin/run.txt" 2>&1 &
bench=$!
# Wait for the server's admin listener, then for its preload to end.
for _ in $(seq 1 120); do
	curl -fso /dev/null "http://$admin/metrics" && break
	sleep 1
done
sleep 5
curl -fso "$bin/cpu.pprof" "http://$admin/debug/pprof/profile?seconds=60"
wait "$bench" || { cat "$bin/run.txt" >&2; exit 1; }
cp "$bin/cpu.pprof" cmd/cacheservice/default.pgo
echo "wrote cmd/cacheservice/default.pgo"
