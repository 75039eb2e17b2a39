package auditlog

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// On-disk layout of Config.Dir:
//
//	segment-<first seq, 20 digits>.jsonl   records, one canonical JSON object per line
//	checkpoints.jsonl                      a copy of every checkpoint record (truncation evidence)
//	upload-<name>.cursor                   last uploaded seq of an upload sink
//	LOCK                                   flock held by the one writer
const (
	segmentPrefix   = "segment-"
	segmentSuffix   = ".jsonl"
	checkpointsFile = "checkpoints.jsonl"
	lockFile        = "LOCK"
)

// ZeroHash is the prev_hash of the first record of a log.
var ZeroHash = strings.Repeat("0", 64)

// hashSuffixLen is len(`,"hash":"` + 64 hex + `"}`).
const hashSuffixLen = 9 + 64 + 2

var (
	// ErrCorrupt means a record in the middle of the log is invalid: the log was altered or the
	// disk is failing. The writer refuses to open such a log (run `consentry audit verify`).
	ErrCorrupt = errors.New("decision log corrupt")
	errLine    = errors.New("invalid record")
)

func segmentName(first uint64) string {
	return fmt.Sprintf("%s%020d%s", segmentPrefix, first, segmentSuffix)
}

type segInfo struct {
	name  string
	first uint64
}

// listSegments returns the segments of dir in seq order.
func listSegments(dir string) ([]segInfo, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []segInfo
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() || !strings.HasPrefix(n, segmentPrefix) || !strings.HasSuffix(n, segmentSuffix) {
			continue
		}
		first, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(n, segmentPrefix), segmentSuffix), 10, 64)
		if err != nil {
			continue
		}
		out = append(out, segInfo{name: n, first: first})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].first < out[j].first })
	return out, nil
}

// lineHeader is what the chain needs from a record line.
type lineHeader struct {
	typ        string
	seq        uint64
	prevHash   string
	hash       string
	timestamp  string
	decisionID string
	checkpoint []byte
	removed    []byte
}

// hashLine computes the record hash of a stored line (without the trailing newline) and
// checks it against the stored one.
func hashLine(line []byte) (string, error) {
	if len(line) < hashSuffixLen+2 || line[len(line)-1] != '}' || !bytes.HasPrefix(line[len(line)-hashSuffixLen:], []byte(`,"hash":"`)) {
		return "", fmt.Errorf("%w: no trailing hash member", errLine)
	}
	stored := line[len(line)-hashSuffixLen+9 : len(line)-2]
	h := sha256.New()
	h.Write(line[:len(line)-hashSuffixLen])
	h.Write([]byte{'}'})
	var sum [32]byte
	got := hex.EncodeToString(h.Sum(sum[:0]))
	if got != string(stored) {
		return string(stored), fmt.Errorf("%w: hash mismatch (stored %.12s..., computed %.12s...)", errLine, stored, got)
	}
	return got, nil
}

// parseHeader checks a line's hash and extracts its chain members.
func parseHeader(line []byte) (lineHeader, error) {
	var h lineHeader
	hash, herr := hashLine(line)
	h.hash = hash
	if hash == "" {
		return h, herr
	}
	var perr error
	err := topLevel(line, func(k, raw []byte) bool {
		switch string(k) {
		case "type":
			h.typ = unquote(raw)
		case "seq":
			h.seq, perr = strconv.ParseUint(string(raw), 10, 64)
		case "prev_hash":
			h.prevHash = unquote(raw)
		case "timestamp":
			h.timestamp = unquote(raw)
		case "decision_id":
			h.decisionID = unquote(raw)
		case "checkpoint":
			h.checkpoint = raw
		case "removed":
			h.removed = raw
		}
		return perr == nil
	})
	if err == nil {
		err = perr
	}
	if err != nil {
		return h, fmt.Errorf("%w: %v", errLine, err)
	}
	if h.typ == "" || len(h.prevHash) != 64 || h.timestamp == "" {
		return h, fmt.Errorf("%w: missing type, prev_hash or timestamp", errLine)
	}
	// On a hash mismatch the members are still returned (with the stored hash), so the verifier
	// can report the one modified record and keep following the chain.
	return h, herr
}

// unquote returns the content of a JSON string without escapes (ids, hashes, timestamps never
// contain any); a string with escapes is returned raw, which fails later comparisons safely.
func unquote(raw []byte) string {
	if len(raw) >= 2 && raw[0] == '"' && raw[len(raw)-1] == '"' {
		return string(raw[1 : len(raw)-1])
	}
	return string(raw)
}

// tailState is the chain state after recovery.
type tailState struct {
	nextSeq  uint64
	head     string
	lastTime string
	// lastAnchor is the body of the segment's last checkpoint that records the key ledger's
	// head (a copy; nil: none), anchorSeq its seq.
	lastAnchor []byte
	anchorSeq  uint64
	// intents are the segment's intent records no decision record of theirs follows.
	intents openIntents
	// opened: the segment holds an open checkpoint (a run of the sidecar started in it).
	opened bool
}

// recoverSegment validates one segment file and cuts what follows its last valid record: a
// torn last record (a last line without a newline, or an invalid last line) and the
// zero-filled space a writer keeps ahead of its records (Config.PreallocateBytes). An invalid
// line followed by valid ones is corruption, not a torn write (the writer only appends), and is
// refused with ErrCorrupt. The first record must carry the segment's first seq; its prev_hash
// links to the previous segment, which the verifier checks (recovery only needs the tail).
// st.nextSeq == 0 and st.head == "" after the call mean the segment holds no valid record.
// torn is the number of bytes cut that were not zero-fill.
func recoverSegment(path string, firstSeq uint64, st *tailState) (torn int64, err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var off, goodEnd int64
	var badAt int64 = -1
	first := true
	var rerr error // how the records end: io.EOF or errNUL
	for {
		var line []byte
		line, rerr = readLine(r)
		if rerr != nil && !endOfRecords(rerr) {
			return 0, rerr
		}
		if len(line) > 0 {
			var h lineHeader
			var perr error
			if rerr == nil {
				h, perr = parseHeader(line[:len(line)-1])
				if perr == nil && first {
					if h.seq != firstSeq {
						perr = fmt.Errorf("%w: first seq %d, segment name says %d", errLine, h.seq, firstSeq)
					}
					st.head, st.nextSeq = h.prevHash, h.seq
				}
				if perr == nil && (h.prevHash != st.head || h.seq != st.nextSeq) {
					perr = fmt.Errorf("%w: seq %d does not continue the chain at %d", errLine, h.seq, st.nextSeq)
				}
			} else {
				perr = errors.New("torn record")
			}
			if perr != nil {
				if badAt >= 0 {
					return 0, fmt.Errorf("%w: %s at offset %d: %v", ErrCorrupt, filepath.Base(path), badAt, perr)
				}
				badAt = off
			} else {
				if badAt >= 0 {
					return 0, fmt.Errorf("%w: %s: invalid record at offset %d followed by valid ones", ErrCorrupt, filepath.Base(path), badAt)
				}
				st.head, st.nextSeq, st.lastTime = h.hash, h.seq+1, h.timestamp
				switch {
				case h.typ == TypeCheckpoint && bytes.Contains(h.checkpoint, []byte(`"key_ledger"`)):
					st.lastAnchor, st.anchorSeq = append(st.lastAnchor[:0], h.checkpoint...), h.seq
				case h.typ == TypeCheckpoint && bytes.Contains(h.checkpoint, []byte(`"reason":"`+CheckpointOpen+`"`)):
					st.opened = true
				case h.typ == TypeIntent:
					st.intents.open(filepath.Base(path), h)
				case h.typ == TypeDecision:
					st.intents.resolve(h.decisionID)
				}
				goodEnd = off + int64(len(line))
			}
			first = false
			off += int64(len(line))
		}
		if errors.Is(rerr, errNUL) {
			at, nonZero, err := afterNUL(f, off) // off: the NUL, past the line before it
			if err != nil {
				return 0, err
			}
			// Cut below: the lines from goodEnd to the NUL (no NUL in them), and what is not
			// zero after it.
			torn = off - goodEnd + nonZero
			if at >= 0 {
				return 0, fmt.Errorf("%w: %s: NUL bytes at offset %d are followed by a record at offset %d: the segment was overwritten "+
					"(or a power loss persisted an unacknowledged write out of order); run consentry audit verify, and truncate the file at %d to accept losing what follows",
					ErrCorrupt, filepath.Base(path), off, at, goodEnd)
			}
		}
		if rerr != nil {
			break
		}
	}
	if goodEnd == 0 {
		st.head, st.nextSeq = "", 0
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	if size == goodEnd {
		return 0, nil
	}
	if !errors.Is(rerr, errNUL) {
		torn = size - goodEnd // a torn or invalid last line, without NULs
	}
	if err := f.Truncate(goodEnd); err != nil {
		return 0, fmt.Errorf("truncate the tail of %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	return torn, nil
}

// truncateTornLines cuts a trailing partial line of a JSON-lines file (checkpoints.jsonl).
func truncateTornLines(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	end := len(b)
	if end > 0 && b[end-1] != '\n' {
		end = bytes.LastIndexByte(b, '\n') + 1
	}
	// A complete last line with NUL bytes in it is a copy whose data a power loss did not
	// persist while the file's new size was (an appended file's blocks are zero until written).
	// Copies are written only after their checkpoint is durable in a segment, so it is a
	// duplicate; cutting it keeps verify from reporting a forged copy.
	if start := bytes.LastIndexByte(b[:max(end-1, 0)], '\n') + 1; end > 0 && bytes.IndexByte(b[start:end], 0) >= 0 {
		end = start
	}
	if end == len(b) {
		return nil
	}
	return os.Truncate(path, int64(end))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// sealBody returns the hex SHA-256 of a canonical record body (without the hash member).
func sealBody(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}
