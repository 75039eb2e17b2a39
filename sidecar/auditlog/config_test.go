package auditlog

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/config"
)

// TestConfigFromYAML decodes the documented decision_log section through the sidecar's config
// loader (strict: unknown keys fail), including both mask rule forms.
func TestConfigFromYAML(t *testing.T) {
	src := `
decision_log:
  mode: async
  dir: /var/lib/consentry/decision-log
  segment_max_bytes: 1048576
  segment_max_age: 1h
  retain_segments: 10
  checkpoint_every: 500
  checkpoint_interval: 5s
  signing_key_file: /etc/consentry/signing.pem
  pseudonym_key_file: /etc/consentry/pseudonym.key
  drop_headers: [x-session]
  mask:
    - /input/subject/claims/email
    - {op: upsert, path: /input/request/headers/x-forwarded-for, value: ["redacted"]}
  stdout: true
  upload:
    url: http://collector:8080/logs
    max_backoff: 5s
`
	cfg, err := config.Parse("consentry.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var c Config
	if ok, err := cfg.Section("decision_log", &c); !ok || err != nil {
		t.Fatal(ok, err)
	}
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Mode != ModeAsync || c.SegmentMaxAge != time.Hour || c.CheckpointInterval != 5*time.Second || c.RetainSegments != 10 ||
		len(c.Mask) != 2 || c.Mask[0].Op != MaskOpRemove || c.Mask[1].Op != MaskOpUpsert || c.Upload.MaxBackoff != 5*time.Second || c.Upload.MaxEvents != 500 {
		t.Fatalf("decoded: %+v", c)
	}
	bad, _ := config.Parse("consentry.yaml", []byte("decision_log:\n  modee: strict\n"))
	if _, err := bad.Section("decision_log", &c); err == nil || !strings.Contains(err.Error(), "modee") {
		t.Fatalf("unknown key accepted: %v", err)
	}
}

func TestStdoutSink(t *testing.T) {
	f := newFixture(t)
	f.cfg.Stdout = true
	var out bytes.Buffer
	l, err := Open(f.cfg, Options{Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if err := l.Append(context.Background(), entry(t, i)); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	rep := f.verify(t)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != rep.Records || !strings.Contains(lines[1], `"decision_id":"dec-000000"`) {
		t.Fatalf("stdout has %d lines, log %d records", len(lines), rep.Records)
	}
}
