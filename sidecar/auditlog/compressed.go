package auditlog

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Compressed segments. An operator may gzip closed segments in place (segment-*.jsonl.gz, the
// docs allow it): such a file is the segment it was, for every reader, for retention (which
// judges and removes it like the plain file) and for the writer's recovery. Where both forms
// exist (gzip -k, or gzip still running) they are one segment, read from the plain file. The
// writer only ever writes plain files.

// isCompressed reports whether a segment file name is the gzip form.
func isCompressed(name string) bool { return strings.HasSuffix(name, gzSuffix) }

// segmentForms returns both file names a segment may have in dir: plain and gzip.
func segmentForms(dir string, s segInfo) [2]string {
	plain := strings.TrimSuffix(s.name, gzSuffix)
	return [2]string{filepath.Join(dir, plain), filepath.Join(dir, plain+gzSuffix)}
}

// removeSegment removes a segment in both forms; a form that is not there is no error.
func removeSegment(dir string, s segInfo) error {
	var errs []error
	for _, p := range segmentForms(dir, s) {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// openRecords opens a segment file for reading its records: through gzip for a compressed
// one. Closing the returned closer closes the file.
func openRecords(path string) (io.Reader, io.Closer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	if !isCompressed(path) {
		return f, f, nil
	}
	zr, err := gzip.NewReader(bufio.NewReaderSize(f, 256<<10))
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return zr, f, nil
}

// lastCompressedRecord is lastRecord for a compressed segment: gzip cannot be read backwards,
// so the segment is read to its end (retention reads one or two segments per rotation).
func lastCompressedRecord(path string) (lineHeader, error) {
	var last []byte
	err := scanFile(path, func(line []byte) error {
		last = append(last[:0], line...)
		return nil
	})
	if errors.Is(err, errSegmentGone) {
		return lineHeader{}, fmt.Errorf("%s: %w", filepath.Base(path), os.ErrNotExist)
	}
	if err != nil {
		return lineHeader{}, fmt.Errorf("read last record of %s: %w", filepath.Base(path), err)
	}
	if last == nil {
		return lineHeader{}, fmt.Errorf("%w: %s holds no complete record", errLine, filepath.Base(path))
	}
	h, err := parseHeader(last)
	if err != nil {
		return h, fmt.Errorf("last record of %s: %w", filepath.Base(path), err)
	}
	return h, nil
}

// recoverCompressed is recoverSegment for a compressed segment, the last of the log (an
// operator compressed every segment of a stopped log): it finds the chain's tail without
// changing the file. It is a closed segment, so nothing is cut: a partial last line (a crash
// before compression) is passed over as readers do, the next record continuing the last
// complete one; an invalid record is refused with ErrCorrupt, for the operator to decompress
// it (recovery then cuts a torn tail) or to investigate with audit verify.
func recoverCompressed(path string, firstSeq uint64, st *tailState) error {
	first := true
	err := scanFile(path, func(line []byte) error {
		h, err := parseHeader(line)
		if err == nil && first && h.seq != firstSeq {
			err = fmt.Errorf("%w: first seq %d, segment name says %d", errLine, h.seq, firstSeq)
		}
		if err == nil && !first && (h.prevHash != st.head || h.seq != st.nextSeq) {
			err = fmt.Errorf("%w: seq %d does not continue the chain at %d", errLine, h.seq, st.nextSeq)
		}
		if err != nil {
			return fmt.Errorf("%w: %s (compressed): %v; decompress it for recovery to cut a torn tail, or run consentry audit verify",
				ErrCorrupt, filepath.Base(path), err)
		}
		first = false
		st.head, st.nextSeq, st.lastTime = h.hash, h.seq+1, h.timestamp
		if h.typ == TypeCheckpoint && bytes.Contains(h.checkpoint, []byte(`"key_ledger"`)) {
			st.lastAnchor, st.anchorSeq = append(st.lastAnchor[:0], h.checkpoint...), h.seq
		}
		return nil
	})
	if errors.Is(err, errSegmentGone) {
		return nil
	}
	return err
}
