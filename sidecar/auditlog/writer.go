package auditlog

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"runtime"
	"strconv"
	"time"
)

// The single writer goroutine: group commit, sealing (hash chain), checkpoints.

func (l *Log) run() {
	defer close(l.done)
	tick := min(l.cfg.CheckpointInterval, l.cfg.AsyncFsyncInterval) / 4
	tick = max(tick, 5*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	batch := make([]*pending, 0, l.cfg.MaxBatch)
	for {
		select {
		case p := <-l.queue:
			batch = append(batch[:0], p)
		drain:
			for len(batch) < l.cfg.MaxBatch {
				select {
				case p := <-l.queue:
					batch = append(batch, p)
				default:
					break drain
				}
			}
			_ = l.commit(batch, "")
		case <-t.C:
			if l.now().Sub(l.lastCkpt) >= l.cfg.CheckpointInterval {
				_ = l.commit(nil, CheckpointTime)
			} else if l.dirty {
				l.fsync()
			}
		case <-l.stop:
			for {
				batch = batch[:0]
				for len(batch) < l.cfg.MaxBatch {
					select {
					case p := <-l.queue:
						batch = append(batch, p)
						continue
					default:
					}
					break
				}
				if len(batch) == 0 {
					break
				}
				_ = l.commit(batch, "")
			}
			l.stopSigner() // its signatures go into the close checkpoint
			_ = l.commit(nil, CheckpointClose)
			if l.dirty && l.broken.Load() == nil {
				l.fsync() // async mode: the tail and its pending checkpoint copies
			}
			if err := l.closeSeg(); err != nil {
				l.log.Warn("decision log: closing", "err", err)
			}
			return
		}
	}
}

func (l *Log) fsync() {
	err := syncData(l.seg)
	if err == nil {
		err = l.writeCopies(l.ckptPending)
		l.ckptPending = l.ckptPending[:0]
	}
	if err != nil {
		l.fail(err)
		return
	}
	l.dirty = false
}

func (l *Log) fail(err error) {
	l.broken.Store(&err)
	l.m.errors.Inc()
	l.log.Error("decision log: write failed; appends fail until restart", "err", err, "alarm", "decision_log_unavailable")
}

// commit writes batch (and a checkpoint with reason force, when set) as one group: one
// write, one fsync. On failure it rolls the file and chain state back, so the next batch
// continues a valid chain; if even that fails the log is marked broken.
func (l *Log) commit(batch []*pending, force string) error {
	now := l.now()
	if b := l.broken.Load(); b != nil {
		l.refuse(batch, *b)
		return *b
	}
	if len(batch) > 0 && (l.segSize >= l.cfg.SegmentMaxBytes || now.Sub(l.segCreated) >= l.cfg.SegmentMaxAge) {
		if err := l.rotate(now); err != nil {
			// A failed retention record broke the log (its seq is spent, its bytes may be
			// torn): nothing may be chained after it, so this batch fails like any later one.
			if b := l.broken.Load(); b != nil {
				l.refuse(batch, *b)
				return *b
			}
			l.log.Error("decision log: rotation failed, continuing in the current segment", "err", err)
		}
	}
	seq0, head0, since0, size0, ck0, cks0 := l.seq, l.head, l.sinceCkpt, l.segSize, l.lastCkpt, l.ckptSize
	l.buf, l.ckptBuf = l.buf[:0], l.ckptBuf[:0]
	l.carried = l.carried[:0]
	for _, p := range batch {
		l.appendRecord(p.rec)
		if l.sinceCkpt >= l.cfg.CheckpointEvery {
			l.appendCheckpoint(now, CheckpointCount)
		}
	}
	if force != "" || now.Sub(l.lastCkpt) >= l.cfg.CheckpointInterval {
		reason := force
		if reason == "" {
			reason = CheckpointTime
		}
		l.appendCheckpoint(now, reason)
	}
	releaseBatch(batch)
	// The disk's share of append_seconds (which also counts the wait in the queue and for
	// the batch before): write, and in strict mode fsync.
	start := time.Now()
	err := l.write()
	l.m.commit.Observe(time.Since(start).Seconds())
	if err != nil {
		l.m.errors.Inc()
		l.seq, l.head, l.sinceCkpt, l.lastCkpt = seq0, head0, since0, ck0
		// The checkpoints are gone and their seqs will be reused: nothing to sign, and the
		// signatures they carried go into the next checkpoint instead.
		l.signJobs = l.signJobs[:0]
		l.carry = append(append([]CheckpointSignature(nil), l.carried...), l.carry...)
		terr := l.seg.Truncate(size0)
		if terr == nil {
			terr = l.ckpt.Truncate(cks0)
		}
		// Counted after the bytes are gone and before any later commit advances Committed:
		// a reader that sees the next commit's seq also sees this rollback (upload.go, once).
		l.rollbacks.Add(1)
		if terr != nil {
			l.fail(fmt.Errorf("%v; rollback: %w", err, terr))
		}
		l.segSize, l.segCap, l.ckptSize = size0, size0, cks0
		// Logged when writes start failing or fail differently, not once per commit: a full
		// disk fails every commit until space is freed.
		if prev := l.lastWriteErr.Swap(&err); prev == nil || (*prev).Error() != err.Error() {
			l.log.Error("decision log: write failed, batch rolled back", "err", err, "events", len(batch),
				"alarm", "decision_log_unavailable")
		}
		l.refuse(batch, err)
		return err
	}
	if l.lastWriteErr.Swap(nil) != nil {
		l.log.Info("decision log: writes succeed again")
	}
	l.committed.Store(int64(l.seq) - 1)
	if len(l.signJobs) > 0 {
		l.dispatchSignJobs()
	}
	nowDone := time.Now()
	waiters := false
	for _, p := range batch {
		if p.done != nil {
			p.done <- nil
			waiters = true
		}
		l.m.latency.Observe(nowDone.Sub(p.t0).Seconds())
	}
	l.m.events.Add(float64(len(batch)))
	l.m.batch.Observe(float64(len(batch)))
	if l.cfg.Stdout {
		_, _ = l.stdout.Write(l.buf)
	}
	select {
	case l.notify <- struct{}{}:
	default:
	}
	if waiters {
		// Let the requests just acknowledged run before the next batch's fsync. They wait in
		// this goroutine's processor's run queue, and fsync is a system call that keeps the
		// processor: with the other cores busy they waited until the runtime's monitor took it
		// away, which made the strict log's p99 at the front door 4-7 ms instead of 1-2 ms
		// (BENCHMARKS.md, round 5).
		runtime.Gosched()
	}
	if len(batch) > 0 || l.reserveErr.Load() != nil {
		// Also without events: an idle log that the full disk made unready gets no traffic,
		// so the time checkpoints are what retries the preallocation (at most once a second).
		l.extendSeg()
	}
	return nil
}

// refuse fails a batch that was not written. A strict append gets the error; an async one
// has already returned nil, so its event is lost: counted in dropped_total and alarmed like
// one the full buffer dropped, which is what operators alarm on.
func (l *Log) refuse(batch []*pending, err error) {
	dropped := 0
	for _, p := range batch {
		if p.done != nil {
			p.done <- err
		} else {
			dropped++
		}
	}
	if dropped > 0 {
		l.m.dropped.Add(float64(dropped))
		l.log.Error("decision log: write failed, async events dropped", "events", dropped, "err", err, "alarm", "decision_log_drop")
	}
}

// write appends the buffers; strict mode fsyncs before returning.
//
// Checkpoint copies (checkpoints.jsonl) are written only once the segment holding their
// checkpoints is durable: a copy of a record that a crash then lost would make verify report
// the log truncated, or the copy forged once recovery reuses the record's seq. In async mode
// they wait for the next fsync (ckptPending).
func (l *Log) write() error {
	if len(l.buf) > 0 {
		if err := l.writeSeg(l.buf); err != nil {
			return err
		}
	}
	if l.cfg.Mode == ModeAsync {
		l.ckptPending = append(l.ckptPending, l.ckptBuf...)
		l.dirty = true
		return nil
	}
	if err := syncData(l.seg); err != nil {
		return fmt.Errorf("fsync segment: %w", err)
	}
	return l.writeCopies(l.ckptBuf)
}

// writeCopies appends checkpoint copies whose checkpoints are durable, and fsyncs them.
func (l *Log) writeCopies(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, err := l.ckpt.Write(b)
	l.ckptSize += int64(n)
	if err != nil {
		return fmt.Errorf("write checkpoints: %w", err)
	}
	if err := l.ckpt.Sync(); err != nil {
		return fmt.Errorf("fsync checkpoints: %w", err)
	}
	return nil
}

// seal appends one record line: the record's members with prev_hash and seq spliced in at their
// sorted positions, then the hash of that canonical text as the last member.
func (l *Log) seal(dst []byte, kvs []kv) []byte {
	start := len(dst)
	dst = append(dst, '{')
	wrotePrev, wroteSeq := false, false
	n := 0
	member := func(key string) {
		if n > 0 {
			dst = append(dst, ',')
		}
		n++
		dst = append(dst, '"')
		dst = append(dst, key...)
		dst = append(dst, '"', ':')
	}
	emitChain := func(before string) {
		if !wrotePrev && (before == "" || before > "prev_hash") {
			member("prev_hash")
			dst = append(dst, '"')
			dst = append(dst, l.head...)
			dst = append(dst, '"')
			wrotePrev = true
		}
		if !wroteSeq && (before == "" || before > "seq") {
			member("seq")
			dst = strconv.AppendUint(dst, l.seq, 10)
			wroteSeq = true
		}
	}
	for _, m := range kvs {
		emitChain(m.key)
		member(m.key)
		dst = append(dst, m.val...)
	}
	emitChain("")
	dst = append(dst, '}')
	sum := sha256.Sum256(dst[start:])
	dst = dst[:len(dst)-1]
	dst = append(dst, `,"hash":"`...)
	hx := hex.EncodeToString(sum[:])
	dst = append(dst, hx...)
	dst = append(dst, '"', '}', '\n')
	l.head = hx
	l.seq++
	return dst
}

func (l *Log) appendRecord(r *record) {
	l.buf = l.seal(l.buf, r.kvs)
	l.sinceCkpt++
}

// releaseBatch recycles the records' arenas once they are sealed into l.buf.
func releaseBatch(batch []*pending) {
	for _, p := range batch {
		p.rec.release()
		p.rec = nil
	}
}

func (l *Log) appendCheckpoint(now time.Time, reason string) {
	ts := now.UTC().Format(time.RFC3339Nano)
	body := CheckpointBody{Reason: reason, Events: l.sinceCkpt, Every: l.cfg.CheckpointEvery, IntervalMS: l.cfg.CheckpointInterval.Milliseconds()}
	if l.keyLedger != nil {
		seq, hash := l.keyLedger.Head()
		body.KeyLedger = &LedgerHead{Seq: seq, Hash: hash}
	}
	if l.signer != nil && !l.sign(now, ts, reason, &body) {
		// Left out: the events stay durable; the verifier reports the missing checkpoint.
		return
	}
	cb := map[string]any{"reason": body.Reason, "events": body.Events, "every": body.Every, "interval_ms": body.IntervalMS}
	if body.Signature != "" {
		cb["alg"], cb["key_id"], cb["signature"] = body.Algorithm, body.KeyID, body.Signature
	}
	if body.Deferred {
		cb["deferred"] = true
	}
	if len(body.Signatures) > 0 {
		sigs := make([]any, len(body.Signatures))
		for i, s := range body.Signatures {
			e := map[string]any{"seq": s.Seq}
			if s.Signature != "" {
				e["alg"], e["key_id"], e["signature"] = s.Algorithm, s.KeyID, s.Signature
			} else {
				e["error"] = s.Error
			}
			sigs[i] = e
		}
		cb["signatures"] = sigs
	}
	if body.KeyLedger != nil {
		cb["key_ledger"] = map[string]any{"seq": body.KeyLedger.Seq, "hash": body.KeyLedger.Hash}
	}
	// Which pseudonym key the records up to here were written with (a fingerprint, never the
	// key): query and report refuse a key that is not the log's instead of finding nothing.
	// Not in the signed message: the chain, which the next signature covers, protects it.
	cb["pseudonym_key"] = l.build.pseudo.Fingerprint()
	cv, _ := appendCanonical(nil, cb)
	start := len(l.buf)
	l.buf = l.seal(l.buf, []kv{{"checkpoint", cv}, {"timestamp", appendString(nil, ts)}, {"type", appendString(nil, TypeCheckpoint)}})
	l.ckptBuf = append(l.ckptBuf, l.buf[start:]...)
	l.sinceCkpt = 0
	l.lastCkpt = now
	l.m.checkpoints.Inc()
}
