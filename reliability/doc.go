// Package reliability holds no code of its own: its tests prove that the
// service survives what production will do to it. In process, over real
// HTTP on loopback and a real PostgreSQL: hostile input, fuzzed requests to
// every RPC, cancellation storms, real-time expiry. Against the built
// `cacheservice serve` binary: database outages and freezes, kill -9 under
// load (external and embedded PostgreSQL), replicas racing for one key,
// slow-loris clients and oversized bodies, and a soak that watches memory.
//
// The default `go test` runs a short version of each; CACHESERVICE_LONG=1
// runs them longer (more outages, crashes, trials and a longer soak).
package reliability
