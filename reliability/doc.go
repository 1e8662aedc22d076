// Package reliability holds no code of its own: its tests prove that the
// service survives hostile input, cancellation storms and real-time expiry,
// in process, over real HTTP on loopback and a real PostgreSQL. The tests
// that run the built binary (outages, crashes, replicas, soak) live in
// reliability/server.
package reliability
