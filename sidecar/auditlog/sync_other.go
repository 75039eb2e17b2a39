//go:build !linux

package auditlog

import "os"

// syncData flushes f (fsync; fdatasync is Linux's).
func syncData(f *os.File) error { return f.Sync() }
