package pace

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Sleep waits d with the kernel's high-resolution timer. time.Sleep is only as
// precise as the Go runtime's timer wake-ups: when the process is idle it waits in epoll with
// millisecond resolution, so a generator pacing 4,000 requests/s with it sends them in bursts
// of four each millisecond and books up to a millisecond of its own lateness as the server's
// latency. nanosleep blocks the calling thread; the runtime runs other goroutines on other
// threads meanwhile. (Locking the sender to its own thread made it later, not earlier: a
// locked goroutine must wait for a processor to be handed to its thread.)
//
// It yields first: a goroutine that the caller has just readied (a worker it handed a request
// to) waits in the caller's processor's run queue, and nanosleep is a system call that keeps
// the processor, so when every other processor is busy the readied goroutine would wait until
// the runtime's monitor takes the processor away - up to 10 ms later. That delay showed up as
// 20 ms of decision latency while a bundle compiled on the other core.
func Sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	start := time.Now()
	runtime.Gosched()
	if d = time.Until(start.Add(d)); d <= 0 {
		return
	}
	ts := unix.NsecToTimespec(d.Nanoseconds())
	for unix.Nanosleep(&ts, &ts) == unix.EINTR {
	}
}
