package auditlog

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ScanLines calls fn with every complete record line of the log in dir, in order, and the
// segment it is in. A trailing partial line (a live writer mid-write) is ignored, and so is a
// listed segment that retention removed before the scan reached it (a scan of a live log
// takes minutes). Segments an operator compressed (segment-*.jsonl.gz) are read through gzip;
// where both forms of a segment exist (gzip still running), the plain one. The line slice is
// only valid during the call.
func ScanLines(dir string, fn func(segment string, line []byte) error) error {
	segs, err := listScanSegments(dir)
	if err != nil {
		return err
	}
	return scanSegments(dir, segs, fn)
}

func scanSegments(dir string, segs []segInfo, fn func(segment string, line []byte) error) error {
	for _, s := range segs {
		err := scanFile(filepath.Join(dir, s.name), func(line []byte) error { return fn(s.name, line) })
		if errors.Is(err, errSegmentGone) {
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// gzSuffix names a segment an operator compressed in place (gzip segment-*.jsonl).
const gzSuffix = ".gz"

// listScanSegments is listSegments plus the compressed segments (compressed.go): what the
// readers, verify, retention and the writer's recovery see. The writer writes, and the upload
// sink follows, plain files only.
func listScanSegments(dir string) ([]segInfo, error) {
	segs, err := listSegments(dir)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var have map[uint64]bool
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() || !strings.HasPrefix(n, segmentPrefix) || !strings.HasSuffix(n, segmentSuffix+gzSuffix) {
			continue
		}
		first, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(n, segmentPrefix), segmentSuffix+gzSuffix), 10, 64)
		if err != nil {
			continue
		}
		if have == nil {
			have = make(map[uint64]bool, len(segs))
			for _, s := range segs {
				have[s.first] = true
			}
		}
		if !have[first] {
			have[first] = true
			segs = append(segs, segInfo{name: n, first: first})
		}
	}
	slices.SortFunc(segs, func(a, b segInfo) int { return cmp.Compare(a.first, b.first) })
	return segs, nil
}

// errSegmentGone: the segment was listed, then removed before it was opened.
var errSegmentGone = errors.New("segment removed by retention")

func scanFile(path string, fn func(line []byte) error) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return errSegmentGone
	}
	if err != nil {
		return err
	}
	if !strings.HasSuffix(path, gzSuffix) {
		return scanOpen(f, f, fn)
	}
	zr, err := gzip.NewReader(bufio.NewReaderSize(f, 256<<10))
	if err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	if err := scanOpen(f, zr, fn); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return nil
}

// scanOpen reads the records of r (f, or f decompressed) and closes f.
func scanOpen(f *os.File, r io.Reader, fn func(line []byte) error) error {
	defer f.Close()
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		line, err := readLine(br)
		if err != nil {
			if endOfRecords(err) {
				return nil // a partial line or the zero-filled space of a live segment
			}
			return err
		}
		if ferr := fn(line[:len(line)-1]); ferr != nil {
			return ferr
		}
	}
}

// ScanEvents decodes every record of the log; fn receives the event and its raw line.
func ScanEvents(dir string, fn func(ev *Event, line []byte) error) error {
	return ScanLines(dir, func(seg string, line []byte) error {
		var ev Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("%s: seq after parse error: %w", seg, err)
		}
		return fn(&ev, line)
	})
}

// tail follows the log from a seq for the upload sink: it returns committed records only and
// resumes where it stopped, moving to the next segment once one exists (the writer rotates
// only after a record is durable, so a segment with a successor is complete).
type tail struct {
	dir string
	seg segInfo
	f   *os.File
	r   *bufio.Reader
	// off is where the next record starts in f: a partial record or the writer's zero-filled
	// space is read again from there once the writer has written over it.
	off int64
	// complete is set once a later segment exists: this one gets no more records.
	complete bool
	held     []byte
	heldH    lineHeader
}

// seek positions t at the first record with seq >= from.
func (t *tail) seek(from uint64) error {
	t.close()
	segs, err := listSegments(t.dir)
	if err != nil || len(segs) == 0 {
		return err
	}
	i := 0
	for j, s := range segs {
		if s.first <= from {
			i = j
		}
	}
	if err := t.open(segs[i]); err != nil {
		return err
	}
	for {
		line, h, ok, err := t.next(^uint64(0))
		if err != nil || !ok {
			return err
		}
		if h.seq >= from {
			t.held, t.heldH = line, h
			return nil
		}
	}
}

func (t *tail) open(s segInfo) error {
	f, err := os.Open(filepath.Join(t.dir, s.name))
	if err != nil {
		return err
	}
	t.f, t.seg, t.off, t.complete = f, s, 0, false
	t.r = bufio.NewReaderSize(f, 256<<10)
	return nil
}

func (t *tail) close() {
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
	t.held = nil
}

// next returns the next record with seq <= limit; ok is false when there is none yet.
func (t *tail) next(limit uint64) ([]byte, lineHeader, bool, error) {
	if t.held != nil {
		if t.heldH.seq > limit {
			return nil, lineHeader{}, false, nil
		}
		line, h := t.held, t.heldH
		t.held = nil
		return line, h, true, nil
	}
	for t.f != nil {
		b, err := readLine(t.r)
		if err == nil {
			t.off += int64(len(b))
			line := bytes.Clone(b[:len(b)-1])
			h, perr := parseHeader(line)
			if perr != nil {
				return nil, h, false, fmt.Errorf("%s: %w", t.seg.name, perr)
			}
			if h.seq > limit {
				t.held, t.heldH = line, h
				return nil, lineHeader{}, false, nil
			}
			return line, h, true, nil
		}
		if !endOfRecords(err) {
			return nil, lineHeader{}, false, err
		}
		if len(b) > 0 || errors.Is(err, errNUL) {
			// Read past the last complete record: go back to it.
			if _, err := t.f.Seek(t.off, io.SeekStart); err != nil {
				return nil, lineHeader{}, false, err
			}
			t.r.Reset(t.f)
		}
		if len(b) > 0 {
			return nil, lineHeader{}, false, nil // the writer is mid-write
		}
		segs, lerr := listSegments(t.dir)
		if lerr != nil {
			return nil, lineHeader{}, false, lerr
		}
		i := slices.IndexFunc(segs, func(s segInfo) bool { return s.first > t.seg.first })
		if i < 0 {
			return nil, lineHeader{}, false, nil
		}
		if !t.complete {
			// The writer completes a segment before it creates the next one, but it may have
			// written its last records after this reader reached the end: read to the end
			// once more before moving on.
			t.complete = true
			continue
		}
		t.f.Close()
		if err := t.open(segs[i]); err != nil {
			return nil, lineHeader{}, false, err
		}
	}
	return nil, lineHeader{}, false, nil
}
