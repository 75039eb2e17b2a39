package auditlog

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
)

var testKey = []byte("0123456789abcdef0123456789abcdef-pseudonym")

type fixture struct {
	dir    string
	cfg    Config
	signer *Ed25519Signer
	pub    map[string]ed25519.PublicKey
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	dir := t.TempDir()
	keys := t.TempDir()
	s, err := WriteKeyPair(filepath.Join(keys, "signing.pem"), filepath.Join(keys, "signing.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keys, "pseudonym.key"), testKey, 0o600); err != nil {
		t.Fatal(err)
	}
	return &fixture{dir: dir, signer: s, pub: map[string]ed25519.PublicKey{s.KeyID(): s.Public()},
		cfg: Config{Dir: dir, SigningKeyFile: filepath.Join(keys, "signing.pem"), PseudonymKeyFile: filepath.Join(keys, "pseudonym.key"),
			CheckpointEvery: 10, CheckpointInterval: time.Hour}}
}

func (f *fixture) open(t testing.TB) *Log {
	t.Helper()
	l, err := Open(f.cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (f *fixture) verify(t testing.TB) *VerifyReport {
	t.Helper()
	rep, err := Verify(f.dir, VerifyOptions{PublicKeys: f.pub})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

var (
	inputOnce sync.Once
	inputRaw  []byte
)

// loadInput returns a fresh copy of testdata/input.json (t may be nil in child processes).
func loadInput(t testing.TB) *input.Input {
	inputOnce.Do(func() {
		var err error
		if inputRaw, err = os.ReadFile("testdata/input.json"); err != nil {
			panic(err)
		}
	})
	var in input.Input
	if err := json.Unmarshal(inputRaw, &in); err != nil {
		panic(err)
	}
	return &in
}

// entry returns a realistic entry; i varies the ids.
func entry(t testing.TB, i int) *audit.Entry {
	in := loadInput(t)
	in.Request.Headers["authorization"] = []string{"Bearer secret-token"}
	in.Request.Headers["cookie"] = []string{"session=abc"}
	return &audit.Entry{
		DecisionID: fmt.Sprintf("dec-%06d", i),
		Timestamp:  time.Date(2026, 11, 22, 9, 0, 0, i, time.UTC),
		Path:       "consentry/decision",
		Input:      in,
		Decision: &decision.Decision{Allow: true, Status: 200, Reasons: []decision.Reason{},
			Fields: map[string]decision.Field{
				"contact.email":       {Outcome: "allow", Category: "user.contact.email", KeyScope: "contact"},
				"payment.card_number": {Outcome: "mask", Mask: "last4", Category: "user.financial.credit_card", KeyScope: "financial"},
				"health.notes":        {Outcome: "deny", Category: "user.health_and_medical", KeyScope: "health"},
			}, KeyScopes: []string{"contact"}},
		Revision: "rev-1",
		Bundles:  map[string]string{"consentry": "rev-1"},
		Enforcement: audit.Enforcement{Status: 200, FieldsReleased: []string{"contact.email", "name"}, FieldsMasked: []string{"payment.card_number"},
			FieldsDropped: []string{"health.notes"}, KeyScopes: []string{"contact", "financial"}},
		Labels:  map[string]string{"id": "sidecar-1", "version": "test"},
		TraceID: "trace-1",
		Metrics: map[string]int64{"timer_rego_query_eval_ns": 12345},
	}
}

func appendN(t testing.TB, l *Log, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := l.Append(context.Background(), entry(t, i)); err != nil {
			t.Fatal(err)
		}
	}
}

// loggedDecisions returns the decision ids in the log in dir.
func loggedDecisions(t testing.TB, dir string) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	if err := ScanEvents(dir, func(ev *Event, _ []byte) error {
		if ev.Type == TypeDecision {
			ids[ev.DecisionID] = true
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ids
}
