package auditlog

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	// rollbacks is the log's rollback count the reader position is valid for.
	rollbacks int64
}

func newUploader(l *Log, cfg UploadConfig) (*Uploader, error) {
	u := &Uploader{l: l, cfg: cfg, client: &http.Client{Timeout: cfg.Timeout}, stop: make(chan struct{}), done: make(chan struct{}),
		path: filepath.Join(l.dir, "upload-"+cfg.Name+".cursor")}
	if cfg.BearerTokenFile != "" {
		b, err := os.ReadFile(cfg.BearerTokenFile)
		if err != nil {
			return nil, fmt.Errorf("decision_log.upload.bearer_token_file: %w", err)
		}
		u.token = strings.TrimSpace(string(b))
	}
	u.cursor.Store(-1)
	if b, err := os.ReadFile(u.path); err == nil {
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n < -1 {
			// A cursor a crash left empty or garbled: delivery is at least once, idempotent by
			// decision id, so start over rather than refuse to start.
			l.log.Warn("decision log upload: unreadable cursor; uploading the spool again from its start", "cursor", u.path, "err", err)
			n = -1
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

// backoff state per failure streak.
func (u *Uploader) sleep(err error) bool {
	u.l.m.uploadFails.Inc()
	d := u.cfg.MinBackoff
	for i := 0; i < u.fails && d < u.cfg.MaxBackoff; i++ {
		d *= 2
	}
	u.fails++
	d = min(d, u.cfg.MaxBackoff)
	d = d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
	u.l.log.Warn("decision log upload failed, retrying", "err", err, "in", d)
	select {
	case <-u.stop:
		return false
	case <-time.After(d):
		return true
	}
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
	var body bytes.Buffer
	zw := gzip.NewWriter(&body)
	_, _ = zw.Write([]byte{'['})
	n := 0
	last := int64(-1)
	for n < u.cfg.MaxEvents {
		line, h, ok, err := t.next(uint64(limit))
		if err != nil {
			return false, err
		}
		if !ok {
			break
		}
		last = int64(h.seq)
		if h.typ != TypeDecision {
			continue
		}
		if n > 0 {
			_, _ = zw.Write([]byte{','})
		}
		_, _ = zw.Write(line)
		n++
	}
	_, _ = zw.Write([]byte{']'})
	if err := zw.Close(); err != nil {
		return false, err
	}
	if last < 0 {
		return false, nil
	}
	if n > 0 {
		if err := u.post(body.Bytes()); err != nil {
			return false, err
		}
		u.l.m.uploaded.Add(float64(n))
	}
	u.fails = 0
	if err := u.saveCursor(last); err != nil {
		return false, err
	}
	u.l.m.uploadLag.Set(float64(limit - last))
	return true, nil
}

func (u *Uploader) post(body []byte) error {
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
		return fmt.Errorf("upload: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("upload: %s answered %d", u.cfg.URL, resp.StatusCode)
	}
	return nil
}

// saveCursor replaces the cursor file atomically and durably: written and fsynced under a
// temporary name, renamed, and the directory fsynced, so a power loss leaves the old cursor
// or the new one, never an empty file.
func (u *Uploader) saveCursor(seq int64) error {
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
	if err := syncDir(filepath.Dir(u.path)); err != nil {
		return err
	}
	u.cursor.Store(seq)
	return nil
}
