package cli

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/admin"
	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/consent"
	"github.com/prometheus/client_golang/prometheus"
)

// consentAdmin runs a real admin server with an SQLite state store on a loopback port.
func consentAdmin(t *testing.T) (url, tokenFile string) {
	t.Helper()
	st, err := consent.Open(context.Background(), consent.Config{DataDir: t.TempDir(), PurposesFile: policies + "/data/consentry/catalog/data.json"},
		consent.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), NoBackground: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := admin.New(admin.Config{Token: "tok-123"}, prometheus.NewRegistry())
	st.Mount(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.ServeListener(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done; _ = st.Close() })
	tokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("tok-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return "http://" + ln.Addr().String(), tokenFile
}

func consentCLI(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, &Env{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb})
	return code, out.String(), errb.String()
}

func TestConsentCommands(t *testing.T) {
	url, tok := consentAdmin(t)
	adm := []string{"--admin", url, "--token-file", tok}
	const hash = "3f79bb7b435b05321651daefd374cdc681dc06faa65e374e38337b88ca046dea"
	const pastRetention = "id,purpose,status,consent_date,retention_until\nC-9,marketing.communications.email,no,2026-01-02,2025-01-01\n"
	steps := []struct {
		name  string
		stdin string
		args  []string
		code  int
		out   string
	}{
		{"grant", "", append([]string{"consent", "grant", "--customer", "C-1", "--purpose", "marketing.communications.email",
			"--notice-version", "2026-01", "--notice-hash", hash, "--channel", "web", "--event-id", "cli-1"}, adm...), ExitOK, `"status": "granted"`},
		{"duplicate grant", "", append([]string{"consent", "grant", "--customer", "C-1", "--purpose", "marketing.communications.email",
			"--notice-version", "2026-01", "--notice-hash", hash, "--channel", "web", "--event-id", "cli-1"}, adm...), ExitFailure, ""},
		{"unknown purpose", "", append([]string{"consent", "grant", "--customer", "C-1", "--purpose", "nope",
			"--notice-version", "1", "--notice-hash", hash, "--channel", "web"}, adm...), ExitFailure, ""},
		{"missing flags", "", append([]string{"consent", "grant", "--purpose", "nope"}, adm...), ExitUsage, ""},
		{"bad expiry flag", "", append([]string{"consent", "grant", "--customer", "C-1", "--purpose", "nope", "--expires", "soon"}, adm...), ExitUsage, ""},
		{"withdraw", "", append([]string{"consent", "withdraw", "--customer", "C-1", "--purpose", "marketing.communications.email", "--reason", "asked"}, adm...), ExitOK, `"status": "withdrawn"`},
		{"show", "", append([]string{"consent", "show", "--customer", "C-1"}, adm...), ExitOK, "withdrawn"},
		{"history", "", append([]string{"consent", "show", "--customer", "C-1", "--history"}, adm...), ExitOK, "cli-1"},
		{"show unknown", "", append([]string{"consent", "show", "--customer", "C-404"}, adm...), ExitFailure, ""},
		{"wrong token", "", []string{"consent", "show", "--customer", "C-1", "--admin", url}, ExitFailure, ""},
		{"import ok", "id,purpose,status,notice_version,notice_hash,consent_date\nC-2,analytics.reporting,yes,v1," + hash + ",2026-01-02\n",
			append([]string{"consent", "import", "--file", "-"}, adm...), ExitOK, "1 accepted"},
		// A retention deadline already past is rejected unless confirmed, as PUT /v1/customers/{id}.
		{"import past retention", pastRetention, append([]string{"consent", "import", "--file", "-"}, adm...), ExitFailure, "import.retention_in_past"},
		{"import past retention, misspelt confirmation", pastRetention,
			append([]string{"consent", "import", "--file", "-", "--retention-in-past", "yes"}, adm...), ExitUsage, ""},
		{"import past retention, confirmed", pastRetention,
			append([]string{"consent", "import", "--file", "-", "--retention-in-past", "confirm"}, adm...), ExitOK, "1 customers' retention set"},
	}
	for _, s := range steps {
		code, out, errOut := consentCLI(t, s.stdin, s.args...)
		if code != s.code || !strings.Contains(out, s.out) {
			t.Fatalf("%s: exit %d (want %d)\nstdout: %s\nstderr: %s", s.name, code, s.code, out, errOut)
		}
	}
	// Dry run with rejected rows: exit 1, nothing written, rejects report written.
	csvFile := filepath.Join(t.TempDir(), "export.csv")
	os.WriteFile(csvFile, []byte("Kunde,purpose\nC-3,analytics.reporting\nC-4,marketing.telepathy\n"), 0o600)
	rejects := filepath.Join(t.TempDir(), "rejects.csv")
	// Undated rows are refused unless the import time may stand in for their capture date.
	code, out, _ := consentCLI(t, "", append([]string{"consent", "import", "--file", csvFile, "--dry-run", "--map", "Kunde=customer_id",
		"--notice-version", "v1", "--notice-hash", hash, "--default-status", "granted"}, adm...)...)
	if code != ExitFailure || !strings.Contains(out, "0 accepted") || !strings.Contains(out, "captured_at_missing") {
		t.Fatalf("undated rows without --captured-now: exit %d\n%s", code, out)
	}
	code, out, _ = consentCLI(t, "", append([]string{"consent", "import", "--file", csvFile, "--dry-run", "--map", "Kunde=customer_id",
		"--notice-version", "v1", "--notice-hash", hash, "--default-status", "granted", "--captured-now", "--rejects", rejects}, adm...)...)
	if code != ExitFailure || !strings.Contains(out, "dry run") || !strings.Contains(out, "1 accepted") || !strings.Contains(out, "line 3") {
		t.Fatalf("dry run: exit %d\n%s", code, out)
	}
	rep, _ := os.ReadFile(rejects)
	if !strings.Contains(string(rep), "3,C-4,consent.unknown_purpose") {
		t.Fatalf("rejects report:\n%s", rep)
	}
	if code, _, _ := consentCLI(t, "", append([]string{"consent", "show", "--customer", "C-3"}, adm...)...); code != ExitFailure {
		t.Fatal("dry run wrote C-3")
	}
}

// TestConsentImportOutputIsInert: ids from a CSV export are written to --rejects and the
// terminal as data: a cell starting with = + - @ cannot become a spreadsheet formula, and
// control characters (ESC sequences) are escaped, in the import's output and in
// `consent show --history`.
func TestConsentImportOutputIsInert(t *testing.T) {
	url, tok := consentAdmin(t)
	adm := []string{"--admin", url, "--token-file", tok}
	rejects := filepath.Join(t.TempDir(), "rejects.csv")
	export := "customer_id,purpose,status,captured_at\n" +
		"=1+2*cmd,analytics.reporting,no,2026-01-05T10:00:00Z\n" +
		"@SUM(A1),analytics.reporting,no,2026-01-05T10:00:00Z\n" +
		"C\x1b[31mX,analytics.reporting,no,2026-01-05T10:00:00Z\n"
	code, out, _ := consentCLI(t, export, append([]string{"consent", "import", "--file", "-", "--rejects", rejects}, adm...)...)
	if code != ExitFailure || strings.Contains(out, "\x1b") || !strings.Contains(out, `C\x1b[31mX`) {
		t.Fatalf("exit %d, output:\n%q", code, out)
	}
	rep, _ := os.ReadFile(rejects)
	for _, want := range []string{"'=1+2*cmd", "'@SUM(A1)"} {
		if !strings.Contains(string(rep), want) {
			t.Fatalf("rejects report without %q:\n%s", want, rep)
		}
	}
	code, out, _ = consentCLI(t, "", append([]string{"consent", "grant", "--customer", "C-1", "--purpose", "analytics.reporting",
		"--notice-version", "v1", "--notice-hash", strings.Repeat("ab", 32), "--channel", "web", "--captured-by", "\x1b]0;owned\x07\u202e"}, adm...)...)
	if code != ExitOK {
		t.Fatalf("grant: exit %d %s", code, out)
	}
	code, out, _ = consentCLI(t, "", append([]string{"consent", "show", "--customer", "C-1", "--history"}, adm...)...)
	if code != ExitOK || strings.ContainsAny(out, "\x1b\x07\u202e") || !strings.Contains(out, `by=\x1b]0;owned\a\u202e`) {
		t.Fatalf("history: exit %d\n%q", code, out)
	}
}

func TestTermSafeAndCSVSafe(t *testing.T) {
	for in, want := range map[string]string{
		"C-1":           "C-1",
		"Müller":        "Müller",
		"a\x1b[2Jb":     `a\x1b[2Jb`,
		"a\rb\nc":       `a\rb\nc`,
		"\u009b31m":     `\u009b31m`,
		"abc\u202edcba": `abc\u202edcba`,
		"caf\xe9":       `caf\xe9`,
	} {
		if got := termSafe(in); got != want {
			t.Errorf("termSafe(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"=1+2": "'=1+2", "+1": "'+1", "-1": "'-1", "@A1": "'@A1", "\tx": "'\tx", "C-1": "C-1", "": ""} {
		if got := auditlog.CSVSafe(in); got != want {
			t.Errorf("CSVSafe(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestConsentImportFailedPartWay: when the server fails mid-import, the CLI still prints the
// totals so far, writes --rejects, and says which lines were written (it used to print only
// the error).
func TestConsentImportFailedPartWay(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"error": {"code": "state.error", "message": "import: connection reset by peer"},
			"report": {"dry_run": false, "rows": 3, "accepted": 1, "duplicates": 0, "rejected": 1, "customers_updated": 0,
				"rejections": [{"line": 3, "customer_id": "=cmd", "code": "invalid.customer_id", "reason": "malformed"}],
				"committed_lines": [2]}}`)
	}))
	defer srv.Close()
	rejects := filepath.Join(t.TempDir(), "rejects.csv")
	export := "customer_id,purpose,status,captured_at\nC-1,p,no,2026-01-05\n=cmd,p,no,2026-01-05\nC-3,p,no,2026-01-05\n"
	code, out, errOut := consentCLI(t, export, "consent", "import", "--file", "-", "--rejects", rejects, "--admin", srv.URL)
	for _, want := range []string{"import stopped by an error; so far: 3 rows, 1 accepted", "1 rows read but not processed", "line 3  customer==cmd", "of lines 2-4, these were written: 2; the others were not"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout without %q:\n%s", want, out)
		}
	}
	if code != ExitFailure || !strings.Contains(errOut, "connection reset by peer") {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	if rep, _ := os.ReadFile(rejects); !strings.Contains(string(rep), "3,'=cmd,invalid.customer_id") {
		t.Fatalf("rejects report:\n%s", rep)
	}
}
