package auditlog

import (
	"os"
	"syscall"
)

// syncData flushes f's data and the metadata needed to read it back (fdatasync): in an
// overwritten preallocated segment that is the data alone, without a journal commit.
func syncData(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}
