package auditlog

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Uploader ships decision records to an OPA-compatible decision-log service: POST of a
// gzip-compressed JSON array of events, any 2xx acknowledges the whole batch. The segment files
// are the spool: the uploader keeps a cursor (last acknowledged seq) in
// upload-<name>.cursor, retries with exponential backoff and jitter, and holds retention back
// until records are delivered. Delivery is at least once; events carry decision_id, so the
// service deduplicates (a batch re-sent after a crash between ack and cursor write repeats ids).
// Only decision records are uploaded; checkpoints stay local.
//
// A batch ends at max_events or before its compressed body would exceed
// upload_size_limit_bytes; an event that alone exceeds the limit goes alone. Answers:
//   - 2xx: delivered, the cursor moves on;
//   - 413 to a batch of several events: the batch is halved and sent again at once (the smaller
//     size is kept, and doubled back after batchGrowAfter accepted batches);
//   - 408, 429, 5xx and transport errors: retried with backoff, or after Retry-After (at most
//     max_backoff);
//   - any other 4xx (and 413 to a single event): the service will answer the same again, but
//     this is an audit trail, so the batch is never dropped: retried with backoff, and logged
//     at error level with alarm=true, the status and the start of the answer's body;
//   - any 3xx: redirects are never followed (a 301/302/303 would turn the POST into a GET
//     without the body, and a login page's 200 to that GET would count as delivered): a failure,
//     retried and alarmed like a 4xx, with the Location in the log line.
//
// The last failure is in UploadStatus and every failed attempt counts in
// consentry_decision_log_upload_failures_total.
type Uploader struct {
	l      *Log
	cfg    UploadConfig
	client *http.Client
	token  string
	cursor atomic.Int64 // last acknowledged seq, -1 for none
	path   string
	stop   chan struct{}
	done   chan struct{}
	fails  int // consecutive failures, for backoff (uploader goroutine only)
	// maxEvents is the current batch size bound: cfg.MaxEvents, less after a 413; okStreak
	// counts accepted batches since it last changed (uploader goroutine only).
	maxEvents int
	okStreak  int
	// rollbacks is the log's rollback count the reader position is valid for.
	rollbacks int64

	mu sync.Mutex
	st UploadStatus // guarded by mu
}

// UploadStatus reports the upload sink's state (Log.UploadStatus).
type UploadStatus struct {
	Name string `json:"name"`
	// Cursor is the last acknowledged seq (-1 for none).
	Cursor int64 `json:"cursor"`
	// BatchEvents is the current bound on events per POST: max_events, or less after a 413.
	BatchEvents int `json:"batch_events"`
	// Failures counts consecutive failed attempts; 0 once a batch is delivered.
	Failures int `json:"failures"`
	// LastError, LastStatus (0: no HTTP answer) and LastErrorAt describe the last failed
	// attempt; they stay after a later success (Failures tells whether it still fails).
	LastError   string    `json:"last_error,omitempty"`
	LastStatus  int       `json:"last_status,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// UploadStatus returns the upload sink's state; ok is false when no upload is configured.
func (l *Log) UploadStatus() (st UploadStatus, ok bool) {
	if l.uploader == nil {
		return st, false
	}
	return l.uploader.Status(), true
}

// Status returns the uploader's state.
func (u *Uploader) Status() UploadStatus {
	u.mu.Lock()
	st := u.st
	u.mu.Unlock()
	st.Cursor = u.cursor.Load()
	return st
}

func newUploader(l *Log, cfg UploadConfig) (*Uploader, error) {
	client := &http.Client{Timeout: cfg.Timeout, CheckRedirect: func(*http.Request, []*http.Request) error {
		// Never follow: the 3xx itself is the answer, and post counts it a failure.
		return http.ErrUseLastResponse
	}}
	u := &Uploader{l: l, cfg: cfg, client: client, stop: make(chan struct{}), done: make(chan struct{}),
		path: filepath.Join(l.dir, "upload-"+cfg.Name+".cursor")}
	if cfg.BearerTokenFile != "" {
		b, err := os.ReadFile(cfg.BearerTokenFile)
		if err != nil {
			return nil, fmt.Errorf("decision_log.upload.bearer_token_file: %w", err)
		}
		u.token = strings.TrimSpace(string(b))
	}
	u.cursor.Store(-1)
	u.maxEvents = cfg.MaxEvents
	u.st = UploadStatus{Name: cfg.Name, BatchEvents: cfg.MaxEvents}
	if b, err := os.ReadFile(u.path); err == nil {
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n < -1 {
			// A cursor a crash left empty or garbled: delivery is at least once, idempotent by
			// decision id, so start over rather than refuse to start.
			l.log.Warn("decision log upload: unreadable cursor; uploading the spool again from its start", "cursor", u.path, "err", err)
			n = -1
		}
		if c := l.Committed(); n > c {
			// The cursor is ahead of the log: records it counts as delivered were lost locally
			// (async mode, a power loss; or a log restored from a backup) and their seqs are
			// now reused by new events. Resume at the log's end, or those would be skipped.
			l.log.Warn("decision log upload: cursor ahead of the log; resuming at its end", "cursor", n, "committed", c)
			n = c
			if err := u.writeCursor(n); err != nil {
				return nil, fmt.Errorf("decision_log.upload: %w", err)
			}
		}
		u.cursor.Store(n)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("decision_log.upload: %w", err)
	}
	l.SetRetentionHold(func() (uint64, bool) { return uint64(u.cursor.Load() + 1), true })
	return u, nil
}

// Cursor returns the last acknowledged seq (-1 for none).
func (u *Uploader) Cursor() int64 { return u.cursor.Load() }

func (u *Uploader) close() {
	close(u.stop)
	<-u.done
}

func (u *Uploader) run() {
	defer close(u.done)
	t := tail{dir: u.l.dir}
	defer t.close()
	positioned := false
	tick := time.NewTicker(u.cfg.Interval)
	defer tick.Stop()
	for {
		for {
			if !positioned || t.f == nil {
				if err := t.seek(uint64(u.cursor.Load() + 1)); err != nil {
					u.l.log.Error("decision log upload: cannot read spool", "err", err)
					break
				}
				positioned = t.f != nil
			}
			sent, err := u.once(&t)
			if err != nil {
				positioned = false
				var ue *uploadError
				if errors.As(err, &ue) && ue.status == http.StatusRequestEntityTooLarge && ue.events > 1 {
					// Too large for the service: halve the batch and send again at once.
					u.failed(err)
					u.maxEvents = max(1, ue.events/2)
					u.okStreak = 0
					u.setBatch(u.maxEvents)
					u.l.log.Warn("decision log upload: batch too large for the service, halving it",
						"status", ue.status, "events", ue.events, "bytes", ue.bytes, "batch_events", u.maxEvents)
					continue
				}
				if !u.sleep(err) {
					return
				}
				continue
			}
			if !sent {
				break
			}
		}
		select {
		case <-u.stop:
			return
		case <-u.l.notify:
		case <-tick.C:
		}
	}
}

// sleep waits before the next attempt after err: exponential backoff with jitter per failure
// streak, or the service's Retry-After (capped at max_backoff). False when stopping.
func (u *Uploader) sleep(err error) bool {
	u.failed(err)
	d := u.cfg.MinBackoff
	for i := 0; i < u.fails && d < u.cfg.MaxBackoff; i++ {
		d *= 2
	}
	u.fails++
	d = min(d, u.cfg.MaxBackoff)
	d = d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
	var ue *uploadError
	if errors.As(err, &ue) && ue.retryAfter > 0 {
		d = min(ue.retryAfter, u.cfg.MaxBackoff)
	}
	if ue != nil && ue.rejected() {
		// The service will most likely answer the same again: someone has to look. The batch
		// is kept (an audit trail drops nothing) and retried with backoff.
		msg := "decision log upload rejected by the service; retrying, nothing is dropped"
		if ue.redirect() {
			msg = "decision log upload redirected (redirects are not followed: check the url); retrying, nothing is dropped"
		}
		u.l.log.Error(msg, "alarm", true,
			"url", u.cfg.URL, "status", ue.status, "location", ue.location, "body", ue.body, "events", ue.events, "bytes", ue.bytes, "in", d)
	} else {
		u.l.log.Warn("decision log upload failed, retrying", "url", u.cfg.URL, "err", err, "in", d)
	}
	select {
	case <-u.stop:
		return false
	case <-time.After(d):
		return true
	}
}

// failed counts a failed attempt and records it in the status.
func (u *Uploader) failed(err error) {
	u.l.m.uploadFails.Inc()
	// The lag grows while uploads fail: the alarm operators set on it must see that.
	u.l.m.uploadLag.Set(float64(max(0, u.l.Committed()-u.cursor.Load())))
	status := 0
	var ue *uploadError
	if errors.As(err, &ue) {
		status = ue.status
	}
	u.mu.Lock()
	u.st.Failures++
	u.st.LastError, u.st.LastStatus, u.st.LastErrorAt = err.Error(), status, time.Now()
	u.mu.Unlock()
}

func (u *Uploader) setBatch(n int) {
	u.mu.Lock()
	u.st.BatchEvents = n
	u.mu.Unlock()
}

// delivered resets the failure streak and, after batchGrowAfter accepted batches at a size a
// 413 reduced, doubles the size back toward max_events.
func (u *Uploader) delivered(events int) {
	u.fails = 0
	if events > 0 && u.maxEvents < u.cfg.MaxEvents {
		if u.okStreak++; u.okStreak >= batchGrowAfter {
			u.maxEvents, u.okStreak = min(2*u.maxEvents, u.cfg.MaxEvents), 0
		}
	}
	u.mu.Lock()
	u.st.Failures, u.st.BatchEvents = 0, u.maxEvents
	u.mu.Unlock()
}

// once uploads one batch; sent is false when there was nothing to do.
func (u *Uploader) once(t *tail) (sent bool, err error) {
	limit := u.l.Committed()
	if limit < 0 {
		return false, nil
	}
	// Checked after loading limit: a failed commit truncated away may have left the reader
	// holding its line, and the next commit reuses its seq. The writer counts the rollback
	// before that commit advances Committed, so a limit that covers the reused seq comes
	// with the count.
	if rb := u.l.rollbacks.Load(); rb != u.rollbacks {
		u.rollbacks = rb
		if err := t.seek(uint64(u.cursor.Load() + 1)); err != nil {
			return false, err
		}
		if t.f == nil {
			return false, nil
		}
	}
	b := newBatch(u.cfg.UploadSizeLimitBytes)
	last := int64(-1)
	for b.n < u.maxEvents {
		line, h, ok, err := t.next(uint64(limit))
		if err != nil {
			return false, err
		}
		if !ok {
			break
		}
		if h.typ == TypeDecision && !b.add(line) {
			// Full by size: the record starts the next batch.
			t.held, t.heldH = line, h
			break
		}
		last = int64(h.seq)
	}
	body, err := b.close()
	if err != nil {
		return false, err
	}
	if last < 0 {
		return false, nil
	}
	if b.n > 0 {
		if err := u.post(body, b.n); err != nil {
			return false, err
		}
		u.l.m.uploaded.Add(float64(b.n))
	}
	u.delivered(b.n)
	if err := u.saveCursor(last); err != nil {
		return false, err
	}
	u.l.m.uploadLag.Set(float64(limit - last))
	return true, nil
}

func (u *Uploader) post(body []byte, events int) error {
	ctx, cancel := context.WithTimeout(context.Background(), u.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	if u.token != "" {
		req.Header.Set("Authorization", "Bearer "+u.token)
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return &uploadError{events: events, bytes: len(body), err: err}
	}
	// Read the answer (bounded) before closing, so the connection is reused.
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return nil
	}
	if len(answer) > answerSnippetBytes {
		answer = answer[:answerSnippetBytes]
	}
	return &uploadError{status: resp.StatusCode, events: events, bytes: len(body),
		body:       strings.TrimSpace(strings.ToValidUTF8(string(answer), "?")),
		location:   snippet(resp.Header.Get("Location")),
		retryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
}

const (
	// maxAnswerBytes bounds how much of an answer's body is read (and discarded).
	maxAnswerBytes = 64 << 10
	// answerSnippetBytes is how much of a failed answer's body the log and status keep.
	answerSnippetBytes = 512
	// batchGrowAfter accepted batches double a batch size a 413 halved.
	batchGrowAfter = 10
)

// snippet bounds a value from the answer for the log and status.
func snippet(s string) string {
	if len(s) > answerSnippetBytes {
		s = s[:answerSnippetBytes]
	}
	return strings.ToValidUTF8(s, "?")
}

// uploadError is a failed POST.
type uploadError struct {
	status     int    // HTTP status; 0 when there was no answer (err)
	body       string // start of the answer's body
	location   string // a 3xx answer's Location (not followed)
	retryAfter time.Duration
	events     int // events in the batch
	bytes      int // compressed body size
	err        error
}

func (e *uploadError) Error() string {
	if e.status == 0 {
		return fmt.Sprintf("upload: %v", e.err)
	}
	if e.redirect() {
		return fmt.Sprintf("upload: answered %d, redirect to %q not followed (a redirected POST delivers nothing)", e.status, e.location)
	}
	if e.body != "" {
		return fmt.Sprintf("upload: answered %d: %s", e.status, e.body)
	}
	return fmt.Sprintf("upload: answered %d", e.status)
}

func (e *uploadError) Unwrap() error { return e.err }

func (e *uploadError) redirect() bool { return e.status >= 300 && e.status <= 399 }

// rejected reports an answer the service will most likely give again: a 3xx (a redirect, to
// a login page or a moved collector: someone has to fix the URL), or a 4xx but 408, 429 and a
// 413 the uploader can answer by halving the batch.
func (e *uploadError) rejected() bool {
	if e.redirect() {
		return true
	}
	return e.status >= 400 && e.status <= 499 && e.status != http.StatusRequestTimeout && e.status != http.StatusTooManyRequests &&
		(e.status != http.StatusRequestEntityTooLarge || e.events <= 1)
}

// parseRetryAfter reads Retry-After: delay-seconds or an HTTP date; 0 when absent or past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, 1<<31)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// batch builds one POST body: a gzip-compressed JSON array whose compressed size stays within
// limit, except for a first event that alone exceeds it. The compressed size of what was
// written since the last flush is not known, so add bounds it by deflate's worst case and
// flushes (making the size exact) only when that bound would pass the limit.
type batch struct {
	buf     bytes.Buffer
	zw      *gzip.Writer
	limit   int64
	pending int64 // uncompressed bytes written (or to write: ',' or ']') since the last flush
	n       int
}

func newBatch(limit int64) *batch {
	b := &batch{limit: limit}
	b.zw = gzip.NewWriter(&b.buf)
	_, _ = b.zw.Write([]byte{'['})
	_ = b.zw.Flush() // the header and '[' are out: buf.Len() is exact
	return b
}

// deflateBound is an upper bound of what n uncompressed bytes add to the compressed stream,
// with the final block and the gzip trailer: stored blocks cost 5 bytes each, fixed Huffman
// codes at most 9 bits a byte.
func deflateBound(n int64) int64 { return n + n/8 + 64 }

// add appends ev unless that could take the closed body past the limit; the first event is
// always added.
func (b *batch) add(ev []byte) bool {
	need := int64(len(ev)) + 1 // and ',' or the closing ']'
	if b.n > 0 && int64(b.buf.Len())+deflateBound(b.pending+need) > b.limit {
		if b.pending > 0 {
			_ = b.zw.Flush()
			b.pending = 0
		}
		if int64(b.buf.Len())+deflateBound(need) > b.limit {
			return false
		}
	}
	if b.n > 0 {
		_, _ = b.zw.Write([]byte{','})
	}
	_, _ = b.zw.Write(ev)
	b.pending += need
	b.n++
	return true
}

func (b *batch) close() ([]byte, error) {
	_, _ = b.zw.Write([]byte{']'})
	if err := b.zw.Close(); err != nil {
		return nil, err
	}
	return b.buf.Bytes(), nil
}

// saveCursor replaces the cursor file atomically and durably: written and fsynced under a
// temporary name, renamed, and the directory fsynced, so a power loss leaves the old cursor
// or the new one, never an empty file.
func (u *Uploader) saveCursor(seq int64) error {
	if err := u.writeCursor(seq); err != nil {
		return err
	}
	u.cursor.Store(seq)
	return nil
}

// writeCursor replaces the cursor file durably (temporary file, fsync, rename, directory sync).
func (u *Uploader) writeCursor(seq int64) error {
	tmp := u.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(strconv.FormatInt(seq, 10) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, u.path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(u.path))
}
