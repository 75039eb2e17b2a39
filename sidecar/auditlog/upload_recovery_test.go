package auditlog

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// TestUploadCursorAheadOfTheLog: in async mode a record can be uploaded (and the cursor,
// fsynced, moved past it) before the record itself is durable; a power loss then takes the
// record away and its seq is reused by new events. The cursor is capped at the log's end
// at start, so the new events are uploaded. Emulated with a copy of the directory taken
// after a durable close and the newer cursor put into it.
func TestUploadCursorAheadOfTheLog(t *testing.T) {
	c, srv := newTestCollector(t)
	f := newFixture(t)
	f.cfg.Mode = ModeAsync
	f.cfg.AsyncFsyncInterval = time.Hour
	f.cfg.Upload = uploadCfg(srv.URL)
	l, _ := openLogged(t, f)
	appendN(t, l, 0, 10)
	waitDelivered(t, c, l, 10)
	l.Close()
	snap := t.TempDir()
	if out, err := exec.Command("cp", "-a", f.dir+"/.", snap).CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
	l2, _ := openLogged(t, f)
	appendN(t, l2, 10, 10)
	waitDelivered(t, c, l2, 20)
	l2.Close()
	cur, err := os.ReadFile(filepath.Join(f.dir, "upload-http.cursor"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(snap, "upload-http.cursor"), cur, 0o600); err != nil {
		t.Fatal(err)
	}
	f.cfg.Dir = snap // the power loss: the events 10..19 are gone, the cursor is not
	l3, _ := openLogged(t, f)
	if l3.uploader.Cursor() > l3.Committed() {
		t.Fatalf("cursor %d left ahead of the log's end %d", l3.uploader.Cursor(), l3.Committed())
	}
	appendN(t, l3, 20, 10)
	deadline := time.Now().Add(30 * time.Second) // generous: a busy machine may be slow to upload
	for {
		got, _, _ := c.snapshot()
		missing := 0
		for i := 20; i < 30; i++ {
			if got[fmt.Sprintf("dec-%06d", i)] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events appended after the restart never uploaded (cursor %d, committed %d)", missing, l3.uploader.Cursor(), l3.Committed())
		}
		time.Sleep(20 * time.Millisecond)
	}
	l3.Close()
}

// TestUploadLagGrowsWhileFailing: upload_lag_events follows the backlog while the service
// refuses, so an alarm on it fires before retention fills the disk.
func TestUploadLagGrowsWhileFailing(t *testing.T) {
	c, srv := newTestCollector(t)
	c.setAnswer(func(int, int, int) (int, http.Header, string) { return http.StatusServiceUnavailable, nil, "down" })
	f := newFixture(t)
	f.cfg.Upload = uploadCfg(srv.URL)
	l, _ := openLogged(t, f)
	defer l.Close()
	appendN(t, l, 0, 50)
	deadline := time.Now().Add(20 * time.Second) // generous: a busy machine may be slow to retry
	for {
		var m dto.Metric
		_ = l.m.uploadLag.Write(&m)
		if m.GetGauge().GetValue() >= 50 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("upload_lag_events = %v with %d records not uploaded", m.GetGauge().GetValue(), l.Committed()-l.uploader.Cursor())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestUploadConfigRejectsNonPositiveDurations: a negative backoff used to panic the uploader.
func TestUploadConfigRejectsNonPositiveDurations(t *testing.T) {
	for _, mutate := range []func(*UploadConfig){
		func(u *UploadConfig) { u.MinBackoff = -time.Second },
		func(u *UploadConfig) { u.MaxBackoff = -time.Second },
		func(u *UploadConfig) { u.Interval = -time.Second },
		func(u *UploadConfig) { u.Timeout = -time.Second },
	} {
		cfg := Config{Dir: t.TempDir(), UnsignedCheckpoints: true, PseudonymKeyFile: "k", Upload: uploadCfg("http://127.0.0.1:1")}
		mutate(cfg.Upload)
		if err := cfg.WithDefaults().Validate(); err == nil {
			t.Errorf("accepted %+v", *cfg.Upload)
		}
	}
	// A min_backoff above the default max_backoff alone: the max follows it.
	cfg := Config{Dir: t.TempDir(), UnsignedCheckpoints: true, PseudonymKeyFile: "k", Upload: uploadCfg("http://127.0.0.1:1")}
	cfg.Upload.MinBackoff, cfg.Upload.MaxBackoff = time.Minute, 0
	if c := cfg.WithDefaults(); c.Validate() != nil || c.Upload.MaxBackoff != time.Minute {
		t.Errorf("min_backoff 1m alone: %v, max %s", c.Validate(), c.Upload.MaxBackoff)
	}
}
