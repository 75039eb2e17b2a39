package consent

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// syncBuf collects log output written by the store's goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// Every store log line carries "component":"state" exactly once: with the logger the sidecar
// passes (already With("component", "state")), and with the default logger.
func TestLogLinesNameTheComponentOnce(t *testing.T) {
	importOne := func(t *testing.T, opts Options) {
		s := openStore(t, testConfig(t, "sqlite"), opts)
		if _, err := s.Import(context.Background(), strings.NewReader("customer_id,purpose,status\nC-1,analytics.reporting,granted\n"),
			ImportOptions{DryRun: true}, "importer"); err != nil {
			t.Fatal(err)
		}
	}
	check := func(t *testing.T, out string) {
		t.Helper()
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) == 0 || !strings.Contains(out, `"msg":"consent import"`) {
			t.Fatalf("no import logged:\n%s", out)
		}
		for _, l := range lines {
			if n := strings.Count(l, `"component":`); n != 1 || !strings.Contains(l, `"component":"state"`) {
				t.Errorf("component %d times: %s", n, l)
			}
		}
	}
	t.Run("sidecar logger", func(t *testing.T) {
		var buf syncBuf
		importOne(t, Options{Logger: slog.New(slog.NewJSONHandler(&buf, nil)).With("component", "state")})
		check(t, buf.String())
	})
	t.Run("default logger", func(t *testing.T) {
		var buf syncBuf
		prev := slog.Default()
		slog.SetDefault(slog.New(slog.NewJSONHandler(&buf, nil)))
		defer slog.SetDefault(prev)
		s, err := Open(context.Background(), testConfig(t, "sqlite"), Options{NoBackground: true})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.Import(context.Background(), strings.NewReader("customer_id,purpose,status\nC-1,analytics.reporting,granted\n"),
			ImportOptions{DryRun: true}, "importer"); err != nil {
			t.Fatal(err)
		}
		check(t, buf.String())
	})
}
