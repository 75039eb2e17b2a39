package bundle

import "time"

// SetClock replaces the manager's clock (tests of what happens after a delay). Call it
// before the manager runs.
func SetClock(m *Manager, now func() time.Time) { m.now = now }
