//go:build !linux

package pace

import "time"

// Sleep falls back to time.Sleep where nanosleep is not wired up.
func Sleep(d time.Duration) { time.Sleep(d) }
