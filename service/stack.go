package service

import "net/http"

// stackBytes is how much goroutine stack an RPC handler is given up front.
// Go starts a goroutine with 2 KiB of stack and doubles it, copying the
// whole stack each time, when a call needs more; HTTP/2 serves every
// request on a new goroutine, and a call through connect, protovalidate
// (its regexps sit deep) and pgx needs tens of KiB. Growing it in one step
// at the top, where the stack is a few frames, replaced about a tenth of the
// server's CPU spent copying and rewriting deep stacks (runtime.copystack)
// under load. The frame leaves a 32 KiB stack. gRPC calls, served by
// grpc-go, mostly run on goroutines it keeps (NewGRPCServer), whose
// stacks are often grown already.
const stackBytes = 16 << 10

// withStack serves h on a stack grown to fit stackBytes more; see stackBytes.
func withStack(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		growStack(r == nil)
		h.ServeHTTP(w, r)
	})
}

// growStack has a frame of stackBytes, so calling it makes the runtime grow
// the stack at once to fit it. never is always false: the frame is reserved
// but never written, so the call costs no zeroing when the stack is already
// large enough (an HTTP/1.1 connection's goroutine serves many requests).
//
//go:noinline
func growStack(never bool) {
	if never {
		var frame [stackBytes]byte
		keep(&frame)
	}
}

// keep stops the compiler from dropping growStack's frame.
//
//go:noinline
func keep(*[stackBytes]byte) {}
