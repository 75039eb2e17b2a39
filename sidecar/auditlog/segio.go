package auditlog

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"time"
)

// Segment I/O: the writer writes at its own offset (never O_APPEND) so that it can overwrite
// the zero-filled space it keeps ahead of the records (Config.PreallocateBytes), and readers
// treat the first NUL byte as the end of the written records. Records are canonical JSON, in
// which a NUL can only appear escaped, so a NUL byte is never part of a record.

// writeSeg writes b at the end of the records of the active segment.
func (l *Log) writeSeg(b []byte) error {
	n, err := l.seg.WriteAt(b, l.segSize)
	l.segSize += int64(n)
	l.segCap = max(l.segCap, l.segSize)
	if err != nil {
		return fmt.Errorf("write segment: %w", err)
	}
	return nil
}

// extendSeg writes zeros after the active segment's end once less than half of the
// preallocation is left, and flushes them, so that the next commits overwrite allocated
// blocks. If that fails (the disk is full), commits go on into the space still preallocated
// and then by appending, as without preallocation; meanwhile Healthy reports the failure, so
// that readiness takes the sidecar out of rotation before appends start to fail. It is
// retried at most once a second.
func (l *Log) extendSeg() {
	n := l.cfg.PreallocateBytes
	if !preallocationLow(l.segCap, l.segSize, n) || l.segCap >= l.cfg.SegmentMaxBytes {
		return
	}
	now := time.Now()
	if now.Before(l.extendRetryAt) {
		return
	}
	if int64(len(l.zeros)) != n {
		l.zeros = make([]byte, n)
	}
	// Not past the size at which the segment rotates: the rest would be trimmed unused.
	w, err := l.seg.WriteAt(l.zeros[:min(n, l.cfg.SegmentMaxBytes-l.segCap)], l.segCap)
	l.segCap += int64(w)
	if err == nil {
		err = syncData(l.seg)
	}
	if err != nil {
		err = fmt.Errorf("preallocate segment space: %w", err)
		l.extendRetryAt = now.Add(time.Second)
		l.m.errors.Inc()
		if l.reserveErr.Swap(&err) == nil {
			l.log.Error("decision log: cannot preallocate segment space; appending into what is left", "segment", l.segName,
				"left_bytes", l.segCap-l.segSize, "err", err, "alarm", "decision_log_space")
		}
		return
	}
	l.m.preallocated.Add(float64(w))
	if l.reserveErr.Swap(nil) != nil {
		l.log.Info("decision log: preallocating segment space again", "segment", l.segName)
	}
}

// preallocationLow reports whether a file of capacity bytes (records and the zeros after
// them) holding size bytes of records is due another step of zero-fill: less than half a
// step left. The disk test (disktest.go) applies the same rule, so that it measures the log.
func preallocationLow(capacity, size, step int64) bool { return step > 0 && capacity-size < step/2 }

// closeSeg prepares the active segment for closing: it cuts the unused zero-filled space, so
// that a closed segment holds exactly its records, and fsyncs the file.
func (l *Log) closeSeg() error {
	if l.segCap > l.segSize {
		if err := l.seg.Truncate(l.segSize); err != nil {
			return fmt.Errorf("trim segment %s: %w", l.segName, err)
		}
		l.segCap = l.segSize
	}
	if err := l.seg.Sync(); err != nil {
		return fmt.Errorf("fsync segment %s: %w", l.segName, err)
	}
	return nil
}

// errNUL is returned by readLine at the first NUL byte: the end of the written records.
var errNUL = errors.New("end of records (NUL)")

// readLine returns the next line of r including its newline. At the end of the records it
// returns what precedes the end (a partial line, possibly empty) with io.EOF, or with errNUL
// when a NUL byte marks the end; in that case r has consumed data past the NUL.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if i := bytes.IndexByte(line, 0); i >= 0 {
		return line[:i], errNUL
	}
	if !errors.Is(err, bufio.ErrBufferFull) {
		return line, err
	}
	buf := append([]byte(nil), line...)
	for errors.Is(err, bufio.ErrBufferFull) {
		line, err = r.ReadSlice('\n')
		if i := bytes.IndexByte(line, 0); i >= 0 {
			return append(buf, line[:i]...), errNUL
		}
		buf = append(buf, line...)
	}
	return buf, err
}

// endOfRecords reports whether err from readLine means the records end here.
func endOfRecords(err error) bool { return err == io.EOF || errors.Is(err, errNUL) }

// afterNUL reads f from offset from, the first NUL byte of a segment, to its end. What follows
// that NUL can only be zero-fill or a torn record: a complete record there (recordAt >= 0, its
// offset; -1 when there is none) means bytes in the middle of the segment were overwritten
// with NULs, which recovery must refuse rather than cut away. (Only an unacknowledged write
// that a power loss persisted out of page order could also leave one.) nonZero counts the
// bytes that are not NUL: torn data, for recovery's count of what it cuts.
func afterNUL(f *os.File, from int64) (recordAt, nonZero int64, err error) {
	rest, err := io.ReadAll(io.NewSectionReader(f, from, math.MaxInt64-from))
	if err != nil {
		return -1, 0, err
	}
	recordAt, nonZero = afterNULBytes(rest, from)
	return recordAt, nonZero, nil
}

// afterNULBytes is afterNUL on rest, the segment's bytes from offset from on.
func afterNULBytes(rest []byte, from int64) (recordAt, nonZero int64) {
	nonZero = int64(len(rest) - bytes.Count(rest, []byte{0}))
	off := from
	for {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return -1, nonZero
		}
		line := bytes.TrimLeft(rest[:i], "\x00")
		if len(line) > 0 && bytes.IndexByte(line, 0) < 0 {
			if _, err := parseHeader(line); err == nil {
				return off + int64(i-len(line)), nonZero
			}
		}
		off += int64(i + 1)
		rest = rest[i+1:]
	}
}
