package auditlog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// rotate closes the active segment and opens a new one named after the next seq, then plans
// retention: the removal is first recorded in the chain (a "retention" record, written with the
// current batch), and the files are deleted only after that record is durable. A segment the
// upload sink has not fully delivered is never removed.
func (l *Log) rotate(now time.Time) error {
	if l.segName == segmentName(l.seq) {
		return nil // nothing written since the segment was opened
	}
	if err := l.closeSeg(); err != nil {
		return fmt.Errorf("before rotation: %w", err)
	}
	if err := l.openSegment(now); err != nil {
		return err
	}
	removed, err := l.planRetention(now)
	if err != nil {
		return err
	}
	if len(removed) == 0 {
		return nil
	}
	rv := make([]any, len(removed))
	for i, r := range removed {
		m := map[string]any{"segment": r.Segment, "first_seq": r.FirstSeq, "last_seq": r.LastSeq, "last_hash": r.LastHash}
		if !r.LastTimestamp.IsZero() {
			m["last_timestamp"] = r.LastTimestamp.UTC().Format(time.RFC3339Nano)
		}
		rv[i] = m
	}
	b, err := appendCanonical(nil, rv)
	if err != nil {
		return err
	}
	l.buf = l.seal(l.buf[:0], []kv{{"removed", b}, {"timestamp", appendString(nil, now.UTC().Format(time.RFC3339Nano))}, {"type", appendString(nil, TypeRetention)}})
	if l.retentionFault != nil {
		err = l.retentionFault()
	} else {
		err = l.writeSeg(l.buf)
	}
	if err == nil {
		err = syncData(l.seg)
	}
	if err != nil {
		l.fail(fmt.Errorf("write retention record: %w", err))
		return err
	}
	l.committed.Store(int64(l.seq) - 1)
	last := removed[len(removed)-1]
	l.retained = &last
	for _, r := range removed {
		// Both forms: a segment an operator compressed with gzip -k is there twice.
		if err := removeSegment(l.dir, segInfo{name: r.Segment, first: r.FirstSeq}); err != nil {
			l.log.Warn("decision log: retention could not remove segment", "segment", r.Segment, "err", err)
		}
	}
	return syncDir(l.dir)
}

// SetRetentionHold registers a function returning the lowest seq a reader still needs; segments
// at or after it are kept. The upload sink registers itself.
func (l *Log) SetRetentionHold(fn func() (uint64, bool)) { l.holdFn.Store(&fn) }

// errGap marks a segment retention cannot vouch for: its records do not continue the chain.
var errGap = errors.New("records missing")

// planRetention picks the closed segments to remove: a prefix of the log, each past
// retain_segments or with a last record older than retain_age. The retention record vouches
// in the chain for what it removes, so it states only what retention has read: each
// segment's own first and last record (seq, hash, timestamp), the last linked to the first
// record of the segment after it, and the first of the oldest linked to seq 0 or to an
// earlier retention record. Where that fails (a segment deleted or cut in between, a record
// altered at a boundary), that segment and every later one are kept and the gap is alarmed,
// so that `audit verify` keeps reporting it: a retention record taking the last seq and hash
// from the next segment on disk would cover a deleted segment. Age is judged by the last
// record's timestamp, which the chain protects, not by the file's mtime, which anyone who can
// write the directory can set.
func (l *Log) planRetention(now time.Time) ([]RemovedSegment, error) {
	if l.cfg.RetainSegments == 0 && l.cfg.RetainAge == 0 {
		return nil, nil
	}
	// Compressed segments (gzip in place) are segments like the plain files: counted, judged
	// by their records and removed.
	segs, err := listScanSegments(l.dir)
	if err != nil {
		return nil, err
	}
	// The closed segments precede the active one (named after l.seq); a file named after a
	// later seq is not the writer's, and stops retention at the boundary check below.
	var closed []segInfo
	for _, s := range segs {
		if s.first < l.seq {
			closed = append(closed, s)
		}
	}
	var hold uint64
	holding := false
	if fn := l.holdFn.Load(); fn != nil {
		hold, holding = (*fn)()
	}
	var out []RemovedSegment
	var first lineHeader // the first record of closed[i], read with the segment before it
	for i, s := range closed {
		byCount := l.cfg.RetainSegments > 0 && len(closed)-i > l.cfg.RetainSegments
		if !byCount && l.cfg.RetainAge == 0 {
			break // only a prefix is removed: no holes in the chain
		}
		path := filepath.Join(l.dir, s.name)
		if i == 0 {
			if first, err = firstRecord(path); err != nil {
				l.retentionStopped(s.name, err)
				break
			}
		}
		last, err := lastRecord(path)
		if err != nil {
			l.retentionStopped(s.name, err)
			break
		}
		byAge := false
		if l.cfg.RetainAge > 0 {
			if at, err := time.Parse(time.RFC3339Nano, last.timestamp); err == nil && now.Sub(at) > l.cfg.RetainAge {
				byAge = true
			}
		}
		if !byCount && !byAge {
			break
		}
		if holding && last.seq >= hold {
			break
		}
		if first.seq != s.first || last.seq < first.seq {
			l.retentionStopped(s.name, fmt.Errorf("%w: the segment holds records %d..%d", errGap, first.seq, last.seq))
			break
		}
		if i == 0 {
			if err := l.headAccounted(closed, first); err != nil {
				l.retentionStopped(s.name, err)
				break
			}
		}
		// The record after this segment's last: the next closed segment's first, or the first
		// record the writer will chain into the new, still empty active segment.
		nextSeq, nextPrev, nextName := l.seq, l.head, l.segName
		if i+1 < len(closed) {
			nextName = closed[i+1].name
			if first, err = firstRecord(filepath.Join(l.dir, nextName)); err != nil {
				l.retentionStopped(s.name, err)
				break
			}
			nextSeq, nextPrev = first.seq, first.prevHash
		}
		if last.seq+1 != nextSeq || last.hash != nextPrev {
			l.retentionStopped(s.name, fmt.Errorf("%w: its last record %d does not link to record %d, the first of %s", errGap, last.seq, nextSeq, nextName))
			break
		}
		rs := RemovedSegment{Segment: s.name, FirstSeq: s.first, LastSeq: last.seq, LastHash: last.hash}
		if at, err := time.Parse(time.RFC3339Nano, last.timestamp); err == nil {
			rs.LastTimestamp = at
		}
		out = append(out, rs)
	}
	return out, nil
}

// retentionStopped alarms a segment retention keeps although it is due: it keeps it, and every
// later one, until an operator has looked (consentry audit verify names the gap).
func (l *Log) retentionStopped(seg string, err error) {
	l.m.errors.Inc()
	l.log.Error("decision log: retention stopped: cannot vouch for the records of a segment due for removal; it and every later segment are kept (run consentry audit verify)",
		"segment", seg, "err", err, "alarm", "decision_log_gap")
}

// headAccounted checks that first, the first record of the oldest segment, starts the log or
// continues records an earlier retention record removed. Otherwise the records before it were
// deleted (verify reports head_deleted), and removing the segment would cover that.
func (l *Log) headAccounted(closed []segInfo, first lineHeader) error {
	if first.seq == 0 {
		if first.prevHash != ZeroHash {
			return fmt.Errorf("%w: record 0 does not start from the zero hash", errGap)
		}
		return nil
	}
	if r := l.retained; r != nil && r.LastSeq+1 == first.seq && r.LastHash == first.prevHash {
		return nil
	}
	// After a restart: a retention record is the first record of the segment opened by the
	// rotation that wrote it, which is still here while the oldest segment is.
	for _, s := range closed {
		h, err := firstRecord(filepath.Join(l.dir, s.name))
		if err != nil || h.typ != TypeRetention {
			continue
		}
		var rs []RemovedSegment
		if json.Unmarshal(h.removed, &rs) != nil {
			continue
		}
		for _, r := range rs {
			if r.LastSeq+1 == first.seq && r.LastHash == first.prevHash {
				l.retained = &r
				return nil
			}
		}
	}
	return fmt.Errorf("%w: the log starts at seq %d and no retention record accounts for the records before it", errGap, first.seq)
}

// firstRecord returns the header of a segment's first record, checked against its hash.
func firstRecord(path string) (lineHeader, error) {
	r, c, err := openRecords(path)
	if err != nil {
		return lineHeader{}, err
	}
	defer c.Close()
	line, err := readLine(bufio.NewReader(r))
	if err != nil {
		return lineHeader{}, fmt.Errorf("read first record of %s: %w", filepath.Base(path), err)
	}
	h, err := parseHeader(line[:len(line)-1])
	if err != nil {
		return h, fmt.Errorf("first record of %s: %w", filepath.Base(path), err)
	}
	return h, nil
}

// lastRecord returns the header of a closed segment's last record, checked against its hash,
// reading the file backwards from its end (a closed segment is trimmed to its records).
func lastRecord(path string) (lineHeader, error) {
	if isCompressed(path) {
		return lastCompressedRecord(path)
	}
	f, err := os.Open(path)
	if err != nil {
		return lineHeader{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return lineHeader{}, err
	}
	size := st.Size()
	for n := min(size, 64<<10); ; n = min(size, 2*n) {
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, size-n); err != nil {
			return lineHeader{}, fmt.Errorf("read last record of %s: %w", filepath.Base(path), err)
		}
		if n == 0 || buf[n-1] != '\n' {
			return lineHeader{}, fmt.Errorf("%w: %s does not end with a complete record", errLine, filepath.Base(path))
		}
		i := bytes.LastIndexByte(buf[:n-1], '\n')
		if i < 0 && n < size {
			continue // a record longer than what was read
		}
		h, err := parseHeader(buf[i+1 : n-1])
		if err != nil {
			return h, fmt.Errorf("last record of %s: %w", filepath.Base(path), err)
		}
		return h, nil
	}
}
