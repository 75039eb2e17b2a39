package auditlog

import (
	"bufio"
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
		rv[i] = map[string]any{"segment": r.Segment, "first_seq": r.FirstSeq, "last_seq": r.LastSeq, "last_hash": r.LastHash}
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
	for _, r := range removed {
		if err := os.Remove(filepath.Join(l.dir, r.Segment)); err != nil {
			l.log.Warn("decision log: retention could not remove segment", "segment", r.Segment, "err", err)
		}
	}
	return syncDir(l.dir)
}

// SetRetentionHold registers a function returning the lowest seq a reader still needs; segments
// at or after it are kept. The upload sink registers itself.
func (l *Log) SetRetentionHold(fn func() (uint64, bool)) { l.holdFn.Store(&fn) }

func (l *Log) planRetention(now time.Time) ([]RemovedSegment, error) {
	if l.cfg.RetainSegments == 0 && l.cfg.RetainAge == 0 {
		return nil, nil
	}
	segs, err := listSegments(l.dir)
	if err != nil {
		return nil, err
	}
	if len(segs) < 2 {
		return nil, nil
	}
	closed := segs[:len(segs)-1] // the last one is the new active segment
	var hold uint64
	holding := false
	if fn := l.holdFn.Load(); fn != nil {
		hold, holding = (*fn)()
	}
	var out []RemovedSegment
	for i, s := range closed {
		byCount := l.cfg.RetainSegments > 0 && len(closed)-i > l.cfg.RetainSegments
		byAge := false
		if l.cfg.RetainAge > 0 {
			if st, err := os.Stat(filepath.Join(l.dir, s.name)); err == nil && now.Sub(st.ModTime()) > l.cfg.RetainAge {
				byAge = true
			}
		}
		if !byCount && !byAge {
			break // only a prefix is removed: no holes in the chain
		}
		next := segs[i+1]
		last := next.first - 1
		if holding && last >= hold {
			break
		}
		h := l.head // the next segment is the new, still empty active one
		if i+1 < len(segs)-1 {
			if h, err = firstPrevHash(filepath.Join(l.dir, next.name)); err != nil {
				return nil, err
			}
		}
		out = append(out, RemovedSegment{Segment: s.name, FirstSeq: s.first, LastSeq: last, LastHash: h})
	}
	return out, nil
}

// firstPrevHash returns the prev_hash of the first record of a segment.
func firstPrevHash(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	line, err := readLine(bufio.NewReader(f))
	if err != nil {
		return "", fmt.Errorf("read first record of %s: %w", filepath.Base(path), err)
	}
	h, err := parseHeader(line[:len(line)-1])
	if err != nil {
		return "", err
	}
	return h.prevHash, nil
}
