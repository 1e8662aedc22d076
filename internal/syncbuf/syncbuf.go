// Package syncbuf is a bytes.Buffer safe for concurrent use, for tests that
// collect the logs or output a server writes from its own goroutines while
// the test reads them.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer collects writes from any goroutine; the zero value is ready.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
