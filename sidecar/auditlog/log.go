// Package auditlog is consentry's decision log, the audit trail security reviewers read. It
// implements audit.Sink: every decision becomes an event with OPA decision-log fields plus
// consentry's (purpose, case, subject, customer pseudonym, fields, key scopes, reasons), with
// credentials removed, mask rules applied and customer ids replaced by keyed pseudonyms.
//
// Events are appended to rotating JSON-lines segments as a SHA-256 hash chain over canonical
// JSON, with signed checkpoints every N records or T seconds. In strict mode (default) Append
// returns only after a group commit has fsynced the event, so no response is released without a
// durable record; a write failure is an error the front door turns into 503 audit.unavailable.
// Verify checks a log directory; Query, Report and the replay subpackage read it back. See
// docs/decision-log.md.
package auditlog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentry/consentry/sidecar/audit"
)

// ReasonUnavailable is the reason code a front door answers with (503) when Append fails.
const ReasonUnavailable = "audit.unavailable"

var (
	// ErrUnavailable wraps every Append failure: the caller must not release its response.
	ErrUnavailable = errors.New("decision log unavailable")
	// ErrClosed is returned by Append after Close. It wraps ErrUnavailable, like every
	// Append failure.
	ErrClosed = fmt.Errorf("%w: closed", ErrUnavailable)
)

// Options are the non-config dependencies of a Log.
type Options struct {
	Logger *slog.Logger
	// Registerer receives the log's metrics (nil: not registered).
	Registerer prometheus.Registerer
	// Signer overrides Config.SigningKeyFile (e.g. a Vault transit signer).
	Signer Signer
	// PseudonymKey overrides Config.PseudonymKeyFile (e.g. a key read from Vault).
	PseudonymKey []byte
	// MaskSource adds per-decision mask rules (e.g. from data.consentry.log.mask).
	MaskSource MaskSource
	// Stdout is where the stdout sink writes (default os.Stdout).
	Stdout io.Writer
	// Now is the clock (tests).
	Now func() time.Time
	// KeyLedger, when set, is the shredded-keys ledger (vaultkeys.Ledger): its head is
	// recorded in every checkpoint, and Open refuses to start when the ledger no longer
	// holds the head the last checkpoint recorded (CheckpointBody.KeyLedger).
	KeyLedger KeyLedger
}

// KeyLedger is what the log needs of the shredded-keys ledger.
type KeyLedger interface {
	// Head returns the seq (0: empty) and hash of the last record.
	Head() (int64, string)
	// CheckAnchor fails when the ledger does not hold record seq with this hash.
	CheckAnchor(seq int64, hash string) error
}

// Log is the decision log writer. It is safe for concurrent use.
type Log struct {
	cfg    Config
	dir    string
	log    *slog.Logger
	now    func() time.Time
	signer Signer
	build  builder
	m      *metrics
	stdout io.Writer

	queue chan *pending
	stop  chan struct{}
	done  chan struct{}

	mu     sync.RWMutex // guards closed against sends on queue
	closed bool
	broken atomic.Pointer[error]
	// lastWriteErr is the error of the last group commit when it failed (nil after a success):
	// a log that rolled back a failed write is not broken, but it is not healthy either until
	// a write succeeds again (disk full, I/O errors).
	lastWriteErr atomic.Pointer[error]
	// reserveErr is the failure to preallocate segment space (segio.go: extendSeg), nil once
	// it succeeds again: appends still succeed, into the space left, but the disk is full.
	reserveErr atomic.Pointer[error]

	committed atomic.Int64 // last durable seq, -1 when none
	// rollbacks counts failed commits whose bytes were truncated away: readers following the
	// files (the upload sink) must re-read, since those seqs will be reused.
	rollbacks atomic.Int64
	notify    chan struct{}
	holdFn    atomic.Pointer[func() (uint64, bool)]
	uploader  *Uploader

	lock *os.File

	// Writer state, owned by the writer goroutine after Open.
	seq     uint64
	head    string
	seg     *os.File
	segName string
	segSize int64 // end of the records in seg
	segCap  int64 // size of seg: segSize plus the zero-filled space after it
	zeros   []byte
	// extendRetryAt holds the next preallocation attempt back after a failure.
	extendRetryAt time.Time
	segCreated    time.Time
	ckpt          *os.File
	ckptSize      int64
	sinceCkpt     int
	lastCkpt      time.Time
	dirty         bool
	// signRetryAt holds signing attempts back after a failure, so an unreachable signer (Vault
	// down) is tried once per interval instead of once per checkpoint.
	signRetryAt time.Time
	// async signs the checkpoints of a signer that may do I/O (signing.go), nil for a local
	// one. signJobs are the deferred checkpoints of the commit being written, handed to it once
	// the commit is; signInflight counts those handed and not collected. carry holds the
	// signatures collected for the next checkpoint, carried those the commit being written
	// took (back into carry if it rolls back). signerHung: it did not stop in time: the close
	// checkpoint is not signed. cancelledJobs: those stop cancelled, signed after the close.
	async         *asyncSigner
	signJobs      []signJob
	signInflight  int
	carry         []CheckpointSignature
	carried       []CheckpointSignature
	signerHung    bool
	cancelledJobs []signJob
	buf           []byte
	ckptBuf       []byte
	// ckptPending holds async mode's checkpoint copies until the next fsync makes their
	// checkpoints durable (writer.go, write).
	ckptPending []byte
	// retentionFault, set by tests only, fails the retention record's write: a disk that
	// fails exactly there cannot be arranged for real.
	retentionFault func() error
	// retained is the last record the latest retention removed (retention.go): the oldest
	// segment continuing it needs no search for the retention record. nil: not known yet.
	retained *RemovedSegment
	// keyLedger reads the key ledger's head for checkpoints; anchor is the head the last
	// checkpoint before this Open recorded (nil: none recorded).
	keyLedger KeyLedger
	anchor    *LedgerHead
}

type pending struct {
	rec  *record
	done chan error
	t0   time.Time
}

var _ audit.Sink = (*Log)(nil)

// Open recovers the log in cfg.Dir (truncating a torn last record), writes an "open"
// checkpoint and starts the writer. cfg is passed through WithDefaults and Validate.
func Open(cfg Config, opts Options) (*Log, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l := &Log{cfg: cfg, dir: cfg.Dir, log: opts.Logger, now: opts.Now, signer: opts.Signer, stdout: opts.Stdout, keyLedger: opts.KeyLedger,
		queue: make(chan *pending, cfg.QueueSize), stop: make(chan struct{}), done: make(chan struct{}), notify: make(chan struct{}, 1)}
	if l.log == nil {
		l.log = slog.Default()
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.stdout == nil {
		l.stdout = os.Stdout
	}
	key := opts.PseudonymKey
	if key == nil {
		if cfg.PseudonymKeyFile == "" {
			return nil, fmt.Errorf("decision_log.pseudonym_key_file: required")
		}
		k, err := ReadKeyFile(cfg.PseudonymKeyFile)
		if err != nil {
			return nil, fmt.Errorf("decision_log.pseudonym_key_file: %w", err)
		}
		key = k
	}
	ps, err := NewPseudonymizer(key)
	if err != nil {
		return nil, fmt.Errorf("decision_log.pseudonym_key_file: %w", err)
	}
	l.build = builder{masker: newMasker(cfg), pseudo: ps, source: opts.MaskSource}
	if l.signer == nil && cfg.SigningVaultKey != "" {
		return nil, fmt.Errorf("decision_log.signing_vault_key: needs a Vault transit signer in Options.Signer (vaultsign.New)")
	}
	if l.signer == nil && cfg.SigningKeyFile != "" {
		s, err := LoadSigner(cfg.SigningKeyFile)
		if err != nil {
			return nil, fmt.Errorf("decision_log.signing_key_file: %w", err)
		}
		l.signer = s
	}
	l.m = newMetrics(opts.Registerer, func() int { return len(l.queue) })
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("decision_log.dir: %w", err)
	}
	if err := l.acquireLock(); err != nil {
		return nil, err
	}
	if err := l.recover(); err != nil {
		l.lock.Close()
		return nil, err
	}
	if l.anchor != nil && l.keyLedger != nil {
		// Before the open checkpoint records the ledger's head as it is now: a refused start
		// must not turn the truncated ledger into the next start's anchor.
		if err := l.keyLedger.CheckAnchor(l.anchor.Seq, l.anchor.Hash); err != nil {
			l.closeFiles()
			return nil, fmt.Errorf("decision log: key ledger anchor: %w", err)
		}
	}
	if err := l.openSegment(l.now()); err != nil {
		l.lock.Close()
		return nil, err
	}
	if err := l.commit(nil, CheckpointOpen); err != nil {
		l.closeFiles()
		return nil, fmt.Errorf("decision log: write open checkpoint: %w", err)
	}
	if cfg.Upload != nil {
		u, err := newUploader(l, *cfg.Upload)
		if err != nil {
			l.closeFiles()
			return nil, err
		}
		l.uploader = u
	}
	if l.signer != nil && !isLocalSigner(l.signer) {
		l.async = newAsyncSigner(l.signer, l.log, l.m)
		go l.async.run()
	}
	go l.run()
	if l.uploader != nil {
		go l.uploader.run()
	}
	return l, nil
}

func (l *Log) acquireLock() error {
	f, err := os.OpenFile(filepath.Join(l.dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("decision log lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("decision log %s is in use by another process: %w", l.dir, err)
	}
	l.lock = f
	return nil
}

// recover finds the chain head, truncating a torn tail of the last segment. The last segment
// may be compressed (an operator gzipped every segment of a stopped log): the chain continues
// after it, in a new plain segment, rather than starting over at seq 0 beside it.
func (l *Log) recover() error {
	segs, err := listScanSegments(l.dir)
	if err != nil {
		return fmt.Errorf("decision log: %w", err)
	}
	l.seq, l.head = 0, ZeroHash
	var anchorSeq uint64 // the seq of the checkpoint l.anchor comes from
	for i := len(segs) - 1; i >= 0; i-- {
		var st tailState
		path := filepath.Join(l.dir, segs[i].name)
		if isCompressed(segs[i].name) {
			if err := recoverCompressed(path, segs[i].first, &st); err != nil {
				return fmt.Errorf("decision log recovery: %w", err)
			}
			if st.head == "" {
				continue // not the writer's to remove
			}
			l.seq, l.head = st.nextSeq, st.head
			if st.lastAnchor != nil {
				l.anchor, anchorSeq = anchorOf(st.lastAnchor), st.anchorSeq
			}
			break
		}
		cut, err := recoverSegment(path, segs[i].first, &st)
		if err != nil {
			return fmt.Errorf("decision log recovery: %w", err)
		}
		if cut > 0 {
			l.log.Warn("decision log: truncated torn tail", "segment", segs[i].name, "bytes", cut)
			l.m.recovered.Add(float64(cut))
		}
		if st.head == "" {
			// Nothing valid in it (crash right after rotation): remove and look further back.
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("decision log recovery: %w", err)
			}
			continue
		}
		l.seq, l.head = st.nextSeq, st.head
		if st.lastAnchor != nil {
			l.anchor, anchorSeq = anchorOf(st.lastAnchor), st.anchorSeq
		}
		if !st.opened && i > 0 && !isCompressed(segs[i-1].name) {
			// The last run rotated: a write forwarded just before its rotation has its intent in
			// the segment before (a run's intents are resolved within its upstream timeout, so
			// one segment back is enough).
			l.earlierIntents(segs[i-1].name, segs[i].name, &st.intents)
		}
		l.reportUnresolved(segs[i].name, st.intents.unresolved())
		break
	}
	l.committed.Store(int64(l.seq) - 1)
	if err := truncateTornLines(filepath.Join(l.dir, checkpointsFile)); err != nil {
		return fmt.Errorf("decision log recovery: %w", err)
	}
	ck, err := os.OpenFile(filepath.Join(l.dir, checkpointsFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("decision log: %w", err)
	}
	st, err := ck.Stat()
	if err != nil {
		ck.Close()
		return err
	}
	l.ckpt, l.ckptSize = ck, st.Size()
	if l.keyLedger != nil {
		// The newest anchor wins: the last segment may hold none (a stop right after a
		// rotation, or runs without a vault section since), and its tail may have been cut
		// while checkpoints.jsonl still holds a newer copy.
		if seq, an, err := lastAnchorCopy(filepath.Join(l.dir, checkpointsFile), st.Size()); err == nil && an != nil && (l.anchor == nil || seq > anchorSeq) {
			l.anchor = an
		}
	}
	return nil
}

// reportUnresolved raises the alarm on the intents of the last run (its last segment, and the
// one before when it rotated: earlierIntents) that no decision record follows: the sidecar stopped (a crash: a clean stop waits for its requests) after
// forwarding those state-changing requests to the CRM and before recording what the CRM
// answered. The CRM may have executed them. The operator hears it at start, without waiting
// for someone to run audit verify (which also finds those in older segments).
func (l *Log) reportUnresolved(segment string, intents []UnresolvedIntent) {
	if len(intents) == 0 {
		return
	}
	l.m.unresolved.Set(float64(len(intents)))
	const shown = 10
	ids := make([]string, 0, min(len(intents), shown))
	for _, u := range intents[:min(len(intents), shown)] {
		ids = append(ids, u.DecisionID)
	}
	l.log.Warn("decision log: state-changing requests were forwarded to the CRM before the last stop and their outcome was never recorded; check them in the CRM (consentry audit verify lists them)",
		"alarm", "decision_log_unresolved_intents", "segment", segment, "unresolved_intents", len(intents), "decision_ids", ids, "more", len(intents)-len(ids))
}

// earlierIntents adds to intents (the last segment's unresolved ones) those of the segment
// prev that no decision record in prev or last resolves. Read only; a segment that cannot be
// read adds nothing (the alarm is a convenience: audit verify is the complete check).
func (l *Log) earlierIntents(prev, last string, intents *openIntents) {
	var open openIntents
	scan := func(name string) {
		_ = scanFile(filepath.Join(l.dir, name), func(line []byte) error {
			h, err := parseHeader(line)
			switch {
			case err != nil:
			case h.typ == TypeIntent && name == prev:
				open.open(prev, h)
			case h.typ == TypeDecision:
				open.resolve(h.decisionID)
			}
			return nil
		})
	}
	scan(prev)
	if len(open.byID) > 0 {
		scan(last)
	}
	for _, u := range open.byID {
		intents.add(u)
	}
}

// anchorOf returns the key ledger head a checkpoint body records, nil when none.
func anchorOf(raw []byte) *LedgerHead {
	var b CheckpointBody
	if json.Unmarshal(raw, &b) != nil {
		return nil
	}
	return b.KeyLedger
}

// lastAnchorCopy reads the checkpoint copies (size bytes) backwards, 64 KiB at a time, to
// the last one that records the key ledger's head, and returns its seq and that head (nil:
// none). Normally that is the last line.
func lastAnchorCopy(path string, size int64) (uint64, *LedgerHead, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	var tail []byte // the start of a line cut by the chunk boundary
	for end := size; end > 0; {
		start := max(0, end-64<<10)
		chunk := make([]byte, end-start, int(end-start)+len(tail))
		if _, err := f.ReadAt(chunk, start); err != nil {
			return 0, nil, err
		}
		chunk = append(chunk, tail...)
		lines := bytes.Split(bytes.TrimRight(chunk, "\n"), []byte("\n"))
		first := 0
		if start > 0 {
			first = 1 // may be cut: read with the next chunk
			tail = lines[0]
		}
		for i := len(lines) - 1; i >= first; i-- {
			if !bytes.Contains(lines[i], []byte(`"key_ledger"`)) {
				continue
			}
			if h, err := parseHeader(lines[i]); err == nil && h.typ == TypeCheckpoint {
				if an := anchorOf(h.checkpoint); an != nil {
					return h.seq, an, nil
				}
			}
		}
		end = start
	}
	return 0, nil, nil
}

func (l *Log) openSegment(now time.Time) error {
	name := segmentName(l.seq)
	// Not O_APPEND: the writer writes at its own offset, over preallocated zeros (segio.go).
	path := filepath.Join(l.dir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("decision log segment: %w", err)
	}
	// On failure the writer stays in its current segment: an empty file left behind would be
	// a later segment to readers (the upload sink would move on to it) and would stop retention.
	abandon := func(err error) error {
		f.Close()
		if st, serr := os.Stat(path); serr == nil && st.Size() == 0 {
			_ = os.Remove(path)
		}
		return fmt.Errorf("decision log segment: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		return abandon(err)
	}
	if err := syncDir(l.dir); err != nil {
		return abandon(err)
	}
	if l.seg != nil {
		l.seg.Close()
	}
	l.seg, l.segName, l.segSize, l.segCap, l.segCreated = f, name, st.Size(), st.Size(), now
	l.m.segments.Inc()
	return nil
}

// Append implements audit.Sink. Strict mode: returns nil only once the event is fsynced.
func (l *Log) Append(ctx context.Context, e *audit.Entry) error {
	if b := l.broken.Load(); b != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, *b)
	}
	rec, err := l.build.build(ctx, e)
	if err != nil {
		l.m.errors.Inc()
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return l.enqueue(ctx, rec)
}

// enqueue hands a built record to the writer; in strict mode it waits until it is durable.
func (l *Log) enqueue(ctx context.Context, rec *record) error {
	p := &pending{rec: rec, t0: time.Now()}
	if l.cfg.Mode == ModeAsync {
		l.mu.RLock()
		defer l.mu.RUnlock()
		if l.closed {
			return ErrClosed
		}
		select {
		case l.queue <- p:
		default:
			l.m.dropped.Inc()
			l.log.Error("decision log: async buffer full, event dropped", "decision_id", rec.decisionID, "alarm", "decision_log_drop")
		}
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	p.done = make(chan error, 1)
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return ErrClosed
	}
	select {
	case l.queue <- p:
		l.mu.RUnlock()
	case <-ctx.Done():
		l.mu.RUnlock()
		return fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	}
	select {
	case err := <-p.done:
		if err != nil {
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		return nil
	case <-ctx.Done():
		// The event may still be written; what matters is that the caller does not release.
		return fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	}
}

// Healthy returns nil while appends can succeed, and the write failure that broke the log
// otherwise; wire it into readiness (admin.AddReadiness) so a broken log takes the sidecar out
// of rotation instead of answering 503 to every request. It also fails, while appends still
// succeed, once the log could not preallocate segment space (a full disk): the space left runs
// out after at most decision_log.preallocate_bytes more of log.
func (l *Log) Healthy() error {
	if b := l.broken.Load(); b != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, *b)
	}
	if e := l.lastWriteErr.Load(); e != nil {
		return fmt.Errorf("%w: last write failed: %v", ErrUnavailable, *e)
	}
	if e := l.reserveErr.Load(); e != nil {
		return fmt.Errorf("%w: appends continue into the space left, then fail: %v", ErrUnavailable, *e)
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	return nil
}

// KeyLedgerAnchor returns the shredded-keys ledger head that the last checkpoint written
// before this Open recorded, nil when none did. Open has checked it against
// Options.KeyLedger: a ledger cut back while consentry was stopped looks like a valid
// shorter ledger otherwise.
func (l *Log) KeyLedgerAnchor() *LedgerHead { return l.anchor }

// Committed returns the last durable seq (-1 when the log is empty).
func (l *Log) Committed() int64 { return l.committed.Load() }

// Dir returns the log directory.
func (l *Log) Dir() string { return l.dir }

// Pseudonymizer returns the log's pseudonymizer (for query by customer id).
func (l *Log) Pseudonymizer() *Pseudonymizer { return l.build.pseudo }

// Close drains pending appends, writes a "close" checkpoint and stops sinks.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	if l.uploader != nil {
		l.uploader.close()
	}
	return l.closeFiles()
}

func (l *Log) closeFiles() error {
	var err error
	if l.seg != nil {
		err = errors.Join(err, l.seg.Close())
	}
	if l.ckpt != nil {
		err = errors.Join(err, l.ckpt.Close())
	}
	if l.lock != nil {
		err = errors.Join(err, l.lock.Close())
	}
	return err
}
