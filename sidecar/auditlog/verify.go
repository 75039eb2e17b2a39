package auditlog

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"
)

// Problem kinds reported by Verify.
const (
	ProblemMalformed        = "malformed"          // not a record line
	ProblemModified         = "modified"           // hash does not match the content
	ProblemChain            = "chain"              // prev_hash does not link (inserted, reordered or replaced record)
	ProblemDeleted          = "deleted"            // sequence numbers missing
	ProblemReordered        = "reordered"          // sequence numbers go backwards or repeat
	ProblemSegment          = "segment"            // segment name and first record disagree
	ProblemHeadDeleted      = "head_deleted"       // the log starts after seq 0 without a retention record
	ProblemTruncated        = "truncated"          // checkpoints.jsonl references records that are gone
	ProblemCheckpointMiss   = "checkpoint_missing" // more records or time between checkpoints than configured
	ProblemCheckpointForged = "checkpoint_forged"  // bad or unverifiable signature, or copy/chain mismatch
	ProblemUnsigned         = "checkpoint_unsigned"
	ProblemUnsealed         = "unsealed_tail" // records after the last checkpoint (only with RequireSealed)
)

// VerifyOptions tune Verify.
type VerifyOptions struct {
	// PublicKeys maps key id to the Ed25519 public key that signs checkpoints.
	PublicKeys map[string]ed25519.PublicKey
	// AllowUnsigned accepts checkpoints without signature (development logs).
	AllowUnsigned bool
	// RequireSealed fails when records follow the last sealed checkpoint: the last one signed
	// (or, in an unsigned log, the last one). A stopped log always ends with its "close" or a
	// later checkpoint; a live one may have a short unsealed tail, which with a remote signer
	// includes the last checkpoint until the next one carries its signature.
	RequireSealed bool
	// MaxProblems bounds the problems listed (all are counted). Default 100.
	MaxProblems int
	// Context, when set, stops the verification between segments once it is done (the CLI's:
	// Ctrl-C); Verify then returns its error.
	Context context.Context
}

// Problem is one verification failure.
type Problem struct {
	Kind    string `json:"kind"`
	Segment string `json:"segment,omitempty"`
	Seq     uint64 `json:"seq"`
	Message string `json:"message"`
}

// VerifyReport is the outcome of Verify.
type VerifyReport struct {
	Segments     int       `json:"segments"`
	Records      int       `json:"records"`
	Decisions    int       `json:"decisions"`
	Intents      int       `json:"intents"`
	Erasures     int       `json:"erasures"`
	Checkpoints  int       `json:"checkpoints"`
	FirstSeq     uint64    `json:"first_seq"`
	LastSeq      uint64    `json:"last_seq"`
	Head         string    `json:"head"`
	UnsealedTail int       `json:"unsealed_tail"`
	ProblemCount int       `json:"problem_count"`
	Problems     []Problem `json:"problems"`
	// UnresolvedIntents are the intent records no decision record of the same decision_id
	// follows, in log order: state-changing requests forwarded to the CRM whose outcome was
	// never recorded. Not a problem (the chain is intact, OK is unaffected), but a reviewer
	// must see them: the CRM may have made the change.
	UnresolvedIntents []UnresolvedIntent `json:"unresolved_intents"`
}

// OK reports whether the log verified.
func (r *VerifyReport) OK() bool { return r.ProblemCount == 0 }

type verifier struct {
	opts       VerifyOptions
	rep        *VerifyReport
	started    bool
	nextSeq    uint64
	head       string
	firstPrev  string
	sinceCkpt  int
	sawCkpt    bool
	lastCkptAt time.Time
	ckpts      map[uint64]string // in-chain checkpoint seq -> hash
	removed    []RemovedSegment
	// deferred are the checkpoints whose signature a later checkpoint is to carry, by seq.
	deferred map[uint64]deferredCkpt
	// sealedSeq is the last checkpoint that is signed (in place or carried) or plainly
	// unsigned; the records after it are the unsealed tail.
	sealed    bool
	sealedSeq uint64
	// intents are the intent records seen and not yet resolved by their decision record.
	intents openIntents
}

type deferredCkpt struct {
	seg string
	msg []byte // what its signature must sign
	// followers counts the checkpoints after it that did not carry its outcome: the writer
	// has at most signQueue deferred checkpoints awaiting a signature, so more than that
	// means its signature is not coming - or the deferred mark was put there to hide that
	// the checkpoint's signature no longer verifies.
	followers int
}

func (v *verifier) problem(kind, seg string, seq uint64, format string, args ...any) {
	v.rep.ProblemCount++
	if len(v.rep.Problems) < v.opts.MaxProblems {
		v.rep.Problems = append(v.rep.Problems, Problem{Kind: kind, Segment: seg, Seq: seq, Message: fmt.Sprintf(format, args...)})
	}
}

// Verify checks the log in dir: every record's hash, the chain across segments, sequence
// numbers, checkpoint signatures and spacing, checkpoints.jsonl against the chain (truncation),
// and the log's start against retention records. The error is for I/O only; findings are in
// the report.
func Verify(dir string, opts VerifyOptions) (*VerifyReport, error) {
	if opts.MaxProblems == 0 {
		opts.MaxProblems = 100
	}
	v := &verifier{opts: opts, rep: &VerifyReport{UnresolvedIntents: []UnresolvedIntent{}}, ckpts: map[uint64]string{}, deferred: map[uint64]deferredCkpt{}}
	// Segments an operator compressed in place are verified through gzip.
	segs, err := listScanSegments(dir)
	if err != nil {
		return nil, err
	}
	if len(segs) == 0 {
		// Every segment gone while checkpoint copies remain is the log deleted, the most
		// complete truncation: a finding, not a usage error.
		if st, err := os.Stat(filepath.Join(dir, checkpointsFile)); err == nil && st.Size() > 0 {
			v.problem(ProblemTruncated, "", 0, "no segments in %s, but %s holds checkpoints: the log was deleted", dir, checkpointsFile)
			return v.rep, nil
		}
		return nil, fmt.Errorf("verify: no segments in %s", dir)
	}
	v.rep.Segments = len(segs)
	// The checkpoint copies are read only as far as they reached before the segments: a live
	// writer copies a checkpoint after writing its record, so every copy counted is of a record
	// the segments hold, and copies added meanwhile are not mistaken for a truncated log.
	ckptLimit := int64(math.MaxInt64)
	if st, err := os.Stat(filepath.Join(dir, checkpointsFile)); err == nil {
		ckptLimit = st.Size()
	}
	if err := v.scan(dir, segs); err != nil {
		return nil, err
	}
	v.finish(dir, ckptLimit)
	return v.rep, nil
}

// vbatch is a run of lines from one segment; workers hash and parse them in parallel, the
// verifier then checks the chain over the batches in order.
type vbatch struct {
	seg   segInfo
	first bool // the batch starts its segment
	lines [][]byte
	hdrs  []lineHeader
	errs  []error
	done  chan struct{}
	// overwritten, when set, is a finding about the segment at this point (records after NULs).
	overwritten string
	// unreadable, when set, is why the rest of a compressed segment cannot be read (a
	// truncated or corrupt .gz): a finding, the records in it being missing from the chain.
	unreadable string
}

func (v *verifier) scan(dir string, segs []segInfo) error {
	workers := runtime.GOMAXPROCS(0)
	jobs := make(chan *vbatch, 2*workers)
	ordered := make(chan *vbatch, 4*workers)
	for w := 0; w < workers; w++ {
		go func() {
			for b := range jobs {
				for i, l := range b.lines {
					b.hdrs[i], b.errs[i] = parseHeader(l)
				}
				close(b.done)
			}
		}()
	}
	var readErr error
	go func() {
		defer close(ordered)
		defer close(jobs)
		for _, s := range segs {
			if ctx := v.opts.Context; ctx != nil && ctx.Err() != nil {
				readErr = ctx.Err()
				return
			}
			if readErr = readBatches(filepath.Join(dir, s.name), s, func(b *vbatch) {
				ordered <- b
				jobs <- b
			}); readErr != nil {
				return
			}
		}
	}()
	for b := range ordered {
		<-b.done
		for i := range b.lines {
			v.record(b.seg, b.lines[i], b.hdrs[i], b.errs[i], b.first && i == 0)
		}
		if b.overwritten != "" {
			v.problem(ProblemModified, b.seg.name, v.nextSeq, "%s", b.overwritten)
		}
		if b.unreadable != "" {
			v.problem(ProblemMalformed, b.seg.name, v.nextSeq, "%s", b.unreadable)
		}
	}
	return readErr
}

// completeLines is bufio.ScanLines without the last line when it has no newline: a copy
// being written (a live log) or torn by a crash (cut at the next Open), not tampering.
func completeLines(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF {
		return len(data), nil, nil
	}
	return 0, nil, nil
}

// stillNUL reports whether the byte at off is (still) NUL. In a live log the writer may have
// written records over the zero-filled space between the chunk's read and afterNUL's: then
// the NUL that was read marked the end of the records at that moment, not an overwrite.
func stillNUL(f *os.File, off int64) bool {
	var b [1]byte
	n, _ := f.ReadAt(b[:], off)
	return n == 1 && b[0] == 0
}

// readBatches splits a segment into complete lines in batches of about 1 MiB. A trailing
// partial line (a live writer mid-write) and the zero-filled space after the records of the
// active segment are ignored.
// A compressed segment is read through gzip (offsets are then in the decompressed records); a
// gzip stream that cannot be read to its end is a finding, not an I/O error.
func readBatches(path string, s segInfo, emit func(*vbatch)) error {
	compressed := isCompressed(path)
	r, c, err := openRecords(path)
	if err != nil {
		if compressed && !errors.Is(err, os.ErrNotExist) {
			emit(&vbatch{seg: s, done: make(chan struct{}), unreadable: err.Error()})
			return nil
		}
		return err
	}
	defer c.Close()
	var carry []byte
	var pos int64 // of chunk in the file
	var overwritten, unreadable string
	first := true
	chunk := make([]byte, 1<<20)
	for {
		n, rerr := r.Read(chunk)
		if compressed && rerr != nil && rerr != io.EOF {
			// The records read so far are checked; the rest of the segment is missing.
			unreadable = fmt.Sprintf("%s: %v", s.name, rerr)
			rerr = io.EOF
		}
		if i := bytes.IndexByte(chunk[:n], 0); i >= 0 {
			// The zero-filled space after a live segment's records - unless records follow.
			if compressed {
				// A closed segment: what follows the NUL is the rest of the stream.
				rest, zerr := io.ReadAll(r)
				if zerr != nil && unreadable == "" {
					unreadable = fmt.Sprintf("%s: %v", s.name, zerr)
				}
				if at, _ := afterNULBytes(append(chunk[i:n:n], rest...), pos+int64(i)); at >= 0 {
					overwritten = fmt.Sprintf("NUL bytes at offset %d are followed by a record at offset %d: the segment was overwritten", pos+int64(i), at)
				}
			} else {
				f := c.(*os.File)
				at, _, err := afterNUL(f, pos+int64(i))
				if err != nil {
					return err
				}
				if at >= 0 && stillNUL(f, pos+int64(i)) {
					overwritten = fmt.Sprintf("NUL bytes at offset %d are followed by a record at offset %d: the segment was overwritten", pos+int64(i), at)
				}
			}
			n, rerr = i, io.EOF
		}
		pos += int64(n)
		if n > 0 {
			data := append(carry, chunk[:n]...)
			end := bytes.LastIndexByte(data, '\n')
			if end < 0 {
				carry = data
			} else {
				b := &vbatch{seg: s, first: first, done: make(chan struct{})}
				b.lines = append(b.lines, bytes.Split(data[:end], []byte{'\n'})...)
				b.hdrs, b.errs = make([]lineHeader, len(b.lines)), make([]error, len(b.lines))
				carry = append([]byte(nil), data[end+1:]...)
				first = false
				emit(b)
			}
		}
		if rerr == io.EOF {
			if overwritten != "" || unreadable != "" {
				emit(&vbatch{seg: s, done: make(chan struct{}), overwritten: overwritten, unreadable: unreadable})
			}
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

func (v *verifier) record(s segInfo, line []byte, h lineHeader, err error, firstInSeg bool) {
	v.rep.Records++
	if h.hash == "" || (err != nil && !errors.Is(err, errLine)) || h.typ == "" {
		v.problem(ProblemMalformed, s.name, v.nextSeq, "unparseable record: %v", err)
		return
	}
	if err != nil {
		v.problem(ProblemModified, s.name, h.seq, "record %d: %v", h.seq, err)
	}
	if firstInSeg && h.seq != s.first {
		v.problem(ProblemSegment, s.name, h.seq, "segment %s starts with seq %d", s.name, h.seq)
	}
	if !v.started {
		v.started = true
		v.rep.FirstSeq = h.seq
		v.firstPrev = h.prevHash
		if h.seq == 0 && h.prevHash != ZeroHash {
			v.problem(ProblemChain, s.name, 0, "first record does not start from the zero hash")
		}
	} else {
		switch {
		case h.seq > v.nextSeq:
			v.problem(ProblemDeleted, s.name, h.seq, "records %d..%d are missing", v.nextSeq, h.seq-1)
		case h.seq < v.nextSeq:
			v.problem(ProblemReordered, s.name, h.seq, "record %d appears after record %d", h.seq, v.nextSeq-1)
		case h.prevHash != v.head:
			v.problem(ProblemChain, s.name, h.seq, "record %d does not link to the previous record (inserted or replaced)", h.seq)
		}
	}
	v.nextSeq, v.head = h.seq+1, h.hash
	v.rep.LastSeq, v.rep.Head = h.seq, h.hash
	switch h.typ {
	case TypeDecision:
		v.rep.Decisions++
		v.sinceCkpt++
		v.intents.resolve(h.decisionID)
	case TypeIntent:
		// The writer appends an intent like any decision (appendRecord): it counts toward the
		// checkpoint's events.
		v.rep.Intents++
		v.sinceCkpt++
		v.intents.open(s.name, h)
	case TypeErasure:
		v.rep.Erasures++
		v.sinceCkpt++
	case TypeCheckpoint:
		v.checkpoint(s, h)
	case TypeRetention:
		var rs []RemovedSegment
		if err := json.Unmarshal(h.removed, &rs); err != nil {
			v.problem(ProblemMalformed, s.name, h.seq, "retention record: %v", err)
		}
		v.removed = append(v.removed, rs...)
	}
}

func (v *verifier) checkpoint(s segInfo, h lineHeader) {
	v.rep.Checkpoints++
	v.ckpts[h.seq] = h.hash
	var b CheckpointBody
	if err := json.Unmarshal(h.checkpoint, &b); err != nil {
		v.problem(ProblemMalformed, s.name, h.seq, "checkpoint %d: %v", h.seq, err)
		return
	}
	at, terr := time.Parse(time.RFC3339Nano, h.timestamp)
	if terr != nil {
		v.problem(ProblemMalformed, s.name, h.seq, "checkpoint %d: bad timestamp", h.seq)
	}
	// What it carries is settled before it is registered as awaiting a signature itself: its
	// signatures are not in its signed message, so a signature for itself among them would
	// seal it with nothing after it to show it was not cut there.
	v.carried(s, h.seq, b)
	switch {
	case b.Signature != "":
		v.verifySignature(s.name, h.seq, b.KeyID, b.Signature, CheckpointMessage(h.seq, h.prevHash, h.timestamp, b))
	case b.Deferred && b.Reason == CheckpointOpen:
		// The writer signs open checkpoints in place (the signing goroutine is not running
		// yet), and a non-deferred open settles the ones awaiting a signature.
		v.problem(ProblemUnsigned, s.name, h.seq, "checkpoint %d is not signed: an open checkpoint is never deferred", h.seq)
	case b.Deferred:
		v.deferred[h.seq] = deferredCkpt{seg: s.name, msg: CheckpointMessage(h.seq, h.prevHash, h.timestamp, b)}
	case !v.opts.AllowUnsigned:
		v.problem(ProblemUnsigned, s.name, h.seq, "checkpoint %d is not signed", h.seq)
	}
	if !b.Deferred {
		v.sealed, v.sealedSeq = true, h.seq
	}
	if b.Reason == CheckpointOpen || b.Reason == CheckpointClose {
		v.intents.settle(h.seq)
	}
	if v.sawCkpt || v.rep.FirstSeq == 0 {
		if b.Every > 0 && v.sinceCkpt > b.Every {
			v.problem(ProblemCheckpointMiss, s.name, h.seq, "%d decisions before checkpoint %d, configured every %d", v.sinceCkpt, h.seq, b.Every)
		}
		// After a crash the "open" checkpoint cannot know the torn-off tail; its prev_hash
		// signature still pins every earlier record.
		if b.Events != v.sinceCkpt && b.Reason != CheckpointOpen {
			v.problem(ProblemCheckpointMiss, s.name, h.seq, "checkpoint %d covers %d decisions, log has %d", h.seq, b.Events, v.sinceCkpt)
		}
	}
	if v.sawCkpt && terr == nil && b.Reason != CheckpointOpen && b.IntervalMS > 0 {
		limit := 2*time.Duration(b.IntervalMS)*time.Millisecond + time.Second
		if gap := at.Sub(v.lastCkptAt); gap > limit {
			v.problem(ProblemCheckpointMiss, s.name, h.seq, "%s without a checkpoint before %d (interval %dms)", gap.Round(time.Millisecond), h.seq, b.IntervalMS)
		}
	}
	if !v.sawCkpt && v.rep.FirstSeq == 0 && h.seq != 0 {
		v.problem(ProblemCheckpointMiss, s.name, h.seq, "the log does not start with a checkpoint")
	}
	v.sawCkpt, v.lastCkptAt, v.sinceCkpt = true, at, 0
}

func (v *verifier) verifySignature(seg string, seq uint64, keyID, signature string, msg []byte) {
	pub, ok := v.opts.PublicKeys[keyID]
	sig, err := base64.StdEncoding.DecodeString(signature)
	switch {
	case !ok:
		v.problem(ProblemCheckpointForged, seg, seq, "checkpoint %d: %v %q", seq, errNoKey, keyID)
	case err != nil || !ed25519.Verify(pub, msg, sig):
		v.problem(ProblemCheckpointForged, seg, seq, "checkpoint %d: signature does not verify", seq)
	}
}

// carried checks what checkpoint at carries for earlier deferred checkpoints - signatures, or
// why one could not be signed - and settles the deferred ones whose signature can no longer
// come. A checkpoint that could not be signed is reported as checkpoint_missing, as one the
// writer left out is: the records before it were sealed only by a later checkpoint.
//
// The writer signs deferred checkpoints in order, hands each outcome to the next checkpoint
// written, never has more than signQueue awaiting one, and waits for them before it closes.
// So one is reported missing when it is still waiting once a later one is settled, once more
// than signQueue checkpoints followed it, or at a close checkpoint. Otherwise a deferred mark
// would excuse any checkpoint that no longer verifies: edit a record, recompute the chain,
// strip the later signatures and mark those checkpoints deferred. The ones waiting when the
// process stopped without closing lost their signature with it; the next open checkpoint's
// signature seals those records (a crash leaves an unsealed tail either way), so an open
// checkpoint - one signed in place, never a deferred one - settles them without a finding.
// A close checkpoint signed in place excuses the checkpoints it carries errSealedByClose for:
// the writer signs the close before the checkpoints whose signing the shutdown cut short, and
// a slow but healthy signer may leave some of those to the close, whose signature pins every
// earlier record. (Its carried list is not signed, but changing it cannot hide an edit of a
// record.) A failure of the signer, or no entry at all - the writer carries one for every
// checkpoint still waiting at close - is still reported.
// at itself is not registered yet: a signature for at or a later seq is forged.
func (v *verifier) carried(s segInfo, at uint64, b CheckpointBody) {
	closeSigned := b.Reason == CheckpointClose && !b.Deferred && b.Signature != ""
	var upTo uint64
	for _, cs := range b.Signatures {
		d, ok := v.deferred[cs.Seq]
		if !ok {
			if cs.Seq < v.rep.FirstSeq {
				continue // its checkpoint was removed by retention
			}
			v.problem(ProblemCheckpointForged, s.name, at, "checkpoint %d carries a signature for %d, which is not an earlier checkpoint awaiting one", at, cs.Seq)
			continue
		}
		delete(v.deferred, cs.Seq)
		upTo = max(upTo, cs.Seq)
		if cs.Signature == "" {
			if closeSigned && cs.Error == errSealedByClose.Error() {
				continue
			}
			v.problem(ProblemCheckpointMiss, d.seg, cs.Seq, "checkpoint %d was never signed: %s", cs.Seq, cs.Error)
			continue
		}
		v.verifySignature(d.seg, cs.Seq, cs.KeyID, cs.Signature, d.msg)
		if !v.sealed || cs.Seq > v.sealedSeq {
			v.sealed, v.sealedSeq = true, cs.Seq
		}
	}
	if len(v.deferred) == 0 {
		return
	}
	for _, seq := range slices.Sorted(maps.Keys(v.deferred)) {
		d := v.deferred[seq]
		d.followers++
		switch {
		case b.Reason == CheckpointOpen && !b.Deferred:
			delete(v.deferred, seq)
		case seq < upTo || b.Reason == CheckpointClose:
			delete(v.deferred, seq)
			v.problem(ProblemCheckpointMiss, d.seg, seq, "checkpoint %d was never signed (its signature is not in the log): the records before it were sealed only by a later checkpoint", seq)
		case d.followers > signQueue:
			delete(v.deferred, seq)
			v.problem(ProblemCheckpointMiss, d.seg, seq, "checkpoint %d was never signed: %d checkpoints follow it without its signature, the writer carries it within %d", seq, d.followers, signQueue)
		default:
			v.deferred[seq] = d
		}
	}
}

func (v *verifier) finish(dir string, ckptLimit int64) {
	v.rep.UnresolvedIntents = v.intents.unresolved()
	if v.rep.Records == 0 {
		v.problem(ProblemTruncated, "", 0, "the log holds no records")
		return
	}
	// Records after the last checkpoint.
	switch {
	case v.sealed:
		v.rep.UnsealedTail = int(v.rep.LastSeq - v.sealedSeq)
	case v.sawCkpt:
		v.rep.UnsealedTail = v.rep.Records // checkpoints all waiting for their signature
	default:
		v.rep.UnsealedTail = v.rep.Records
		v.problem(ProblemCheckpointMiss, "", v.rep.LastSeq, "no checkpoint in the log")
	}
	if v.opts.RequireSealed && v.rep.UnsealedTail > 0 {
		v.problem(ProblemUnsealed, "", v.rep.LastSeq, "%d records after the last checkpoint", v.rep.UnsealedTail)
	}
	// The start: seq 0, or the continuation of a segment removed by retention.
	if v.rep.FirstSeq != 0 {
		ok := false
		for _, r := range v.removed {
			if r.LastSeq+1 == v.rep.FirstSeq && r.LastHash == v.firstPrev {
				ok = true
			}
		}
		if !ok {
			v.problem(ProblemHeadDeleted, "", v.rep.FirstSeq, "log starts at seq %d but no retention record accounts for the earlier records", v.rep.FirstSeq)
		}
	}
	// checkpoints.jsonl: every copy must be in the chain; copies past the end mean truncation.
	f, err := os.Open(filepath.Join(dir, checkpointsFile))
	if err != nil {
		v.problem(ProblemTruncated, checkpointsFile, 0, "cannot read %s: %v", checkpointsFile, err)
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, ckptLimit))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	sc.Split(completeLines)
	for sc.Scan() {
		h, err := parseHeader(sc.Bytes())
		if err != nil || h.typ != TypeCheckpoint {
			v.problem(ProblemCheckpointForged, checkpointsFile, h.seq, "invalid checkpoint copy: %v", err)
			continue
		}
		switch {
		case h.seq < v.rep.FirstSeq:
			// removed by retention
		case h.seq > v.rep.LastSeq:
			v.problem(ProblemTruncated, checkpointsFile, h.seq, "checkpoint %d is past the end of the log (seq %d): records were removed", h.seq, v.rep.LastSeq)
		case v.ckpts[h.seq] != h.hash:
			v.problem(ProblemCheckpointForged, checkpointsFile, h.seq, "checkpoint %d differs from the record in the chain", h.seq)
		}
	}
	if err := sc.Err(); err != nil {
		v.problem(ProblemMalformed, checkpointsFile, 0, "%v", err)
	}
}
