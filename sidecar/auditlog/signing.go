package auditlog

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Checkpoint signing off the writer's path.
//
// A checkpoint's signature covers the hash of the record before it, and every record after the
// checkpoint links to the checkpoint's own hash: a signature written into the checkpoint record
// holds every later record until the signer answers. That is fine for a key in memory, but a
// remote signer (Vault transit) that hangs would hold every strict append for the signing
// timeout, which equals the default pipeline.audit_timeout: decisions that need no key would
// be denied as audit.unavailable. So with a remote signer the writer writes the checkpoint at once,
// marked deferred, and this goroutine signs the same message (CheckpointMessage of the
// checkpoint's seq, prev_hash, timestamp and body); the next checkpoint carries the signature
// (CheckpointBody.Signatures). Open and close checkpoints are still signed in place: no append
// waits on them.

// signTimeout bounds one signing call.
const signTimeout = 2 * time.Second

// signQueue bounds the deferred checkpoints awaiting a signature: a signer slower than the
// checkpoints leaves the ones beyond it out (alarmed) instead of queueing without end.
const signQueue = 8

// isLocalSigner reports whether s signs from memory, so that it never makes the writer wait:
// only Ed25519Signer is known to. Any other signer may do I/O and is called off the writer's
// path.
func isLocalSigner(s Signer) bool {
	_, ok := s.(*Ed25519Signer)
	return ok
}

type signJob struct {
	seq    uint64
	msg    []byte
	queued time.Time
}

type signResult struct {
	sig CheckpointSignature
	err error
	// cancelled: the job was not signed because the log was closing (stop cancelled it, in
	// flight or queued), not because the signer failed; stopSigner signs it in place.
	cancelled bool
	job       signJob
}

// asyncSigner is the goroutine that signs deferred checkpoints, in the order they were written.
type asyncSigner struct {
	s       Signer
	log     *slog.Logger
	m       *metrics
	jobs    chan signJob
	results chan signResult
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	// failedAt is when the last signing call failed (goroutine-owned): jobs queued before it
	// fail without a call, since the signer that just failed would most likely fail them too,
	// at a timeout each.
	failedAt time.Time
	lastErr  error
}

func newAsyncSigner(s Signer, log *slog.Logger, m *metrics) *asyncSigner {
	ctx, cancel := context.WithCancel(context.Background())
	// results holds as many as jobs: the writer hands out a job only while fewer than
	// signQueue are uncollected (Log.signInflight), so the goroutine never blocks on it.
	return &asyncSigner{s: s, log: log, m: m, jobs: make(chan signJob, signQueue), results: make(chan signResult, signQueue),
		ctx: ctx, cancel: cancel, done: make(chan struct{})}
}

func (a *asyncSigner) run() {
	defer close(a.done)
	for j := range a.jobs {
		a.results <- a.sign(j)
	}
}

func (a *asyncSigner) sign(j signJob) signResult {
	var err error
	var raw []byte
	var alg, keyID string
	switch {
	case a.ctx.Err() != nil:
		return a.cancelled(j, errClosedFirst)
	case j.queued.Before(a.failedAt):
		err = fmt.Errorf("not attempted: the signer failed meanwhile: %w", a.lastErr)
	default:
		// Key id before signing, in this goroutine: a signer that pins its key at KeyID
		// (the Vault signer resolving its key) signs with the key it named.
		alg, keyID = a.s.Algorithm(), a.s.KeyID()
		ctx, cancel := context.WithTimeout(a.ctx, signTimeout)
		raw, err = a.s.Sign(ctx, j.msg)
		cancel()
		if err != nil && a.ctx.Err() != nil {
			return a.cancelled(j, err)
		}
		if err != nil {
			a.failedAt, a.lastErr = time.Now(), err
		}
	}
	if err != nil {
		// The checkpoint is in the log, unsigned; the next one records the failure, which the
		// verifier reports (checkpoint_missing).
		a.m.errors.Inc()
		a.log.Error("decision log: checkpoint signing failed; the checkpoint stays unsigned", "seq", j.seq, "err", err,
			"alarm", "decision_log_checkpoint")
		return signResult{sig: CheckpointSignature{Seq: j.seq, Error: err.Error()}, err: err}
	}
	return signResult{sig: CheckpointSignature{Seq: j.seq, Algorithm: alg, KeyID: keyID, Signature: base64.StdEncoding.EncodeToString(raw)}}
}

var errClosedFirst = errors.New("not attempted: the log closed first")

// cancelled is the result of a job that stop cancelled; not logged or counted as a failure
// here, since stopSigner still signs it in place.
func (a *asyncSigner) cancelled(j signJob, err error) signResult {
	return signResult{sig: CheckpointSignature{Seq: j.seq, Error: err.Error()}, err: err, cancelled: true, job: j}
}

// stop lets the queued jobs finish for up to grace, then cancels the rest (and a call in
// flight). It reports whether the goroutine ended: a signer that is merely slow returns once
// its call is cancelled, and only one that ignores its context is hanging - one more call to
// it would only add its timeout to the shutdown.
func (a *asyncSigner) stop(grace time.Duration) bool {
	close(a.jobs)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-a.done:
		return true
	case <-t.C:
	}
	a.cancel()
	// A signer that ignores its context is not waited for: its goroutine is left behind,
	// its result in a buffered channel nobody reads.
	t.Reset(grace)
	select {
	case <-a.done:
		return true
	case <-t.C:
		return false
	}
}

// sign fills in the signature of the checkpoint about to be written at l.seq, or marks it
// deferred and queues its message for the signing goroutine; it also hands the checkpoint the
// signatures (and signing failures) of earlier deferred ones. false: leave the checkpoint out.
func (l *Log) sign(now time.Time, ts, reason string, body *CheckpointBody) bool {
	l.collectSignatures(now)
	always := reason == CheckpointOpen || reason == CheckpointClose
	if now.Before(l.signRetryAt) && !always {
		return false
	}
	if l.async == nil {
		// A signer that answers from memory, and the open and close checkpoints of any
		// signer (the signing goroutine is not running then): signed in place. No append
		// waits on open or close, and a local signer does not block.
		err := errors.New("the signer did not answer at close")
		if !l.signerHung {
			body.Algorithm, body.KeyID = l.signer.Algorithm(), l.signer.KeyID()
			ctx, cancel := context.WithTimeout(context.Background(), signTimeout)
			var sig []byte
			sig, err = l.signer.Sign(ctx, CheckpointMessage(l.seq, l.head, ts, *body))
			cancel()
			if err == nil {
				body.Signature = base64.StdEncoding.EncodeToString(sig)
			}
		}
		if reason == CheckpointClose {
			// After the close's own signature, which pins every earlier record: the time left
			// for the cancelled checkpoints can then never cost the close its signature.
			l.signCancelled(err)
		}
		if err != nil {
			l.signRetryAt = now.Add(min(l.cfg.CheckpointInterval, 10*time.Second))
			l.m.errors.Inc()
			l.log.Error("decision log: checkpoint signing failed", "reason", reason, "err", err, "alarm", "decision_log_checkpoint")
			if reason != CheckpointClose || len(l.carry) == 0 {
				return false
			}
			// The last checkpoint, and it holds signatures or signing failures that would
			// be lost with it: written unsigned, marked deferred, though nothing will carry
			// its signature. The log verifies unsealed, as without a close checkpoint.
			body.Algorithm, body.KeyID, body.Deferred = "", "", true
		}
	} else {
		if l.signInflight+len(l.signJobs) >= signQueue {
			l.m.errors.Inc()
			l.log.Error("decision log: checkpoint left out, the signer is behind", "awaiting", l.signInflight, "alarm", "decision_log_checkpoint")
			return false
		}
		body.Deferred = true
		l.signJobs = append(l.signJobs, signJob{seq: l.seq, msg: CheckpointMessage(l.seq, l.head, ts, *body)})
	}
	l.carried = append(l.carried, l.carry...)
	body.Signatures, l.carry = l.carry, nil
	return true
}

// collectSignatures takes the signatures that are ready (writer goroutine): they go into the
// next checkpoint, and so does a failure - the log records which checkpoint will never be
// signed, and why - which also holds signing back like an inline one.
func (l *Log) collectSignatures(now time.Time) {
	if l.async == nil {
		return
	}
	for {
		select {
		case r := <-l.async.results:
			l.signInflight--
			if r.err != nil {
				l.signRetryAt = now.Add(min(l.cfg.CheckpointInterval, 10*time.Second))
			}
			l.carry = append(l.carry, r.sig)
		default:
			return
		}
	}
}

// dispatchSignJobs hands the deferred checkpoints of a commit that was written to the signer.
func (l *Log) dispatchSignJobs() {
	for _, j := range l.signJobs {
		j.queued = time.Now()
		l.async.jobs <- j // room: appendCheckpoint counts the uncollected jobs
		l.signInflight++
	}
	l.signJobs = l.signJobs[:0]
}

// stopSigner ends the signing goroutine before the close checkpoint, collecting what it
// signed so that the close checkpoint carries it. The checkpoints whose signing stop cancelled
// (a slow signer: still queued, or in flight, after the grace period) are kept for
// signCancelled, which signs their known messages in place once the close checkpoint is signed:
// otherwise a stopped log that nobody touched would fail verify --sealed with
// checkpoint_missing. The close checkpoint is not signed when the signer is hanging (its
// goroutine did not return even once cancelled: it may still be in a call, and calls are never
// made at once): one more call would only add its timeout to the shutdown.
func (l *Log) stopSigner() {
	if l.async == nil {
		return
	}
	a := l.async
	l.async = nil
	if !a.stop(signTimeout) {
		l.signerHung = true
		l.log.Error("decision log: the checkpoint signer did not answer; the close checkpoint is not signed",
			"alarm", "decision_log_checkpoint")
	}
	for {
		var r signResult
		select {
		case r = <-a.results:
		default:
			return
		}
		l.signInflight--
		if r.cancelled {
			l.cancelledJobs = append(l.cancelledJobs, r.job)
			continue
		}
		l.carry = append(l.carry, r.sig)
	}
}

// errSealedByClose is the error carried for a checkpoint the time to sign at close did not
// reach, the close checkpoint being signed: the verifier accepts it only from a close
// checkpoint signed in place (verify.go, carried), whose signature pins the records. A signer
// that failed is still reported.
var errSealedByClose = errors.New("not signed: the time to sign at close ran out; the close checkpoint seals it")

// signCancelled signs in place, within one signTimeout for all of them, the deferred
// checkpoints that stop cancelled (the signing goroutine has returned, so these are the only
// calls), and hands their signatures, or why they have none, to the close checkpoint. closeErr
// is why the close checkpoint could not be signed: the signer is not tried again. Running out
// of the shared time says nothing about the signer (each call may take up to signTimeout), so
// it only leaves the rest unsigned; a close that is signed pins their records anyway.
func (l *Log) signCancelled(closeErr error) {
	jobs := l.cancelledJobs
	l.cancelledJobs = nil
	if len(jobs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), signTimeout)
	defer cancel()
	skip := closeErr
	if skip != nil {
		skip = fmt.Errorf("not attempted: the close checkpoint could not be signed: %w", skip)
	}
	for _, j := range jobs {
		err := skip
		if err == nil && ctx.Err() != nil {
			err = errSealedByClose
		}
		if err == nil {
			alg, keyID := l.signer.Algorithm(), l.signer.KeyID()
			raw, serr := l.signer.Sign(ctx, j.msg)
			if serr == nil {
				l.carry = append(l.carry, CheckpointSignature{Seq: j.seq, Algorithm: alg, KeyID: keyID, Signature: base64.StdEncoding.EncodeToString(raw)})
				continue
			}
			err = fmt.Errorf("signing at close: %w", serr)
			if ctx.Err() != nil {
				err = errSealedByClose
			} else {
				// The signer itself failed: the rest would most likely fail too.
				skip = fmt.Errorf("not attempted: the signer failed at close: %w", serr)
			}
		}
		if errors.Is(err, errSealedByClose) {
			// Not the signer failing: the signed close checkpoint seals these records.
			l.log.Warn("decision log: no time left to sign a checkpoint at close; the close checkpoint seals it", "seq", j.seq)
		} else {
			l.m.errors.Inc()
			l.log.Error("decision log: checkpoint signing failed; the checkpoint stays unsigned", "seq", j.seq, "err", err,
				"alarm", "decision_log_checkpoint")
		}
		l.carry = append(l.carry, CheckpointSignature{Seq: j.seq, Error: err.Error()})
	}
}
