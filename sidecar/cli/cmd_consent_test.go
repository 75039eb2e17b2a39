package cli

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/admin"
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
		"--notice-version", "v1", "--notice-hash", hash}, adm...)...)
	if code != ExitFailure || !strings.Contains(out, "0 accepted") || !strings.Contains(out, "captured_at_missing") {
		t.Fatalf("undated rows without --captured-now: exit %d\n%s", code, out)
	}
	code, out, _ = consentCLI(t, "", append([]string{"consent", "import", "--file", csvFile, "--dry-run", "--map", "Kunde=customer_id",
		"--notice-version", "v1", "--notice-hash", hash, "--captured-now", "--rejects", rejects}, adm...)...)
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
