package manager

import "context"

// Ping reports whether the database answers, for readiness checks.
func (m *Manager) Ping(ctx context.Context) error {
	return m.store.Ping(ctx)
}
