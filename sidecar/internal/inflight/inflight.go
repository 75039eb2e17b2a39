// Package inflight counts the handlers a front door is running, so that its shutdown can wait
// for them: a handler cancelled or cut off still writes its decision to the decision log, which
// the app closes only after the doors return.
package inflight

import (
	"sync/atomic"
	"time"
)

// poll is how often Wait looks whether the handlers have finished.
const poll = 10 * time.Millisecond

// Counter is the number of running handlers: Add(1) when one starts, Add(-1) when it ends.
type Counter struct{ atomic.Int64 }

// Wait waits until the count is zero or d has passed and returns the last count seen.
func (c *Counter) Wait(d time.Duration) int64 {
	deadline := time.Now().Add(d)
	for {
		n := c.Load()
		if n <= 0 || !time.Now().Before(deadline) {
			return n
		}
		time.Sleep(poll)
	}
}
