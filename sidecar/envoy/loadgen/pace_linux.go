package loadgen

import (
	"time"

	"golang.org/x/sys/unix"
)

// sleepPrecisely waits d with the kernel's high-resolution timer. time.Sleep is only as
// precise as the Go runtime's timer wake-ups: when the process is idle it waits in epoll with
// millisecond resolution, so a generator pacing 4,000 requests/s with it sends them in bursts
// of four each millisecond and books up to a millisecond of its own lateness as the server's
// latency. The caller locks its goroutine to its thread, so nanosleep blocks only that thread.
func sleepPrecisely(d time.Duration) {
	if d <= 0 {
		return
	}
	ts := unix.NsecToTimespec(d.Nanoseconds())
	for unix.Nanosleep(&ts, &ts) == unix.EINTR {
	}
}
