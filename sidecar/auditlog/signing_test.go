package auditlog

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// remoteSigner stands for a Vault transit signer: not an *Ed25519Signer, so the log calls it
// off the writer's path. It signs with key after delay, hangs until its context ends while
// hang is set, and fails while fail is set.
type remoteSigner struct {
	key        *Ed25519Signer
	delay      time.Duration
	hang, fail atomic.Bool
	calls      atomic.Int64
}

func (s *remoteSigner) KeyID() string     { return s.key.KeyID() }
func (s *remoteSigner) Algorithm() string { return "ed25519" }
func (s *remoteSigner) Sign(ctx context.Context, msg []byte) ([]byte, error) {
	s.calls.Add(1)
	if s.hang.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if s.fail.Load() {
		return nil, errors.New("vault transit sign: permission denied")
	}
	return s.key.Sign(ctx, msg)
}

func (f *fixture) openSigned(t testing.TB, s Signer) *Log {
	t.Helper()
	l, err := Open(f.cfg, Options{Signer: s, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestRemoteSignerNeverHoldsAppends: docs/operations.md says decisions are logged while a
// checkpoint cannot be signed. A remote signer that hangs (Vault stopped, a partition) or
// answers slowly was called in the writer goroutine, holding every strict append for up to the
// 2 s signing timeout - the default pipeline.audit_timeout, so decisions that need no key were
// denied 503 audit.unavailable. Appends must never wait on the signer.
func TestRemoteSignerNeverHoldsAppends(t *testing.T) {
	cases := []struct {
		name  string
		setup func(s *remoteSigner)
	}{
		{"hung", func(s *remoteSigner) { s.hang.Store(true) }},
		{"slow", func(s *remoteSigner) { s.delay = time.Second }},
		{"failing", func(s *remoteSigner) { s.fail.Store(true) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.cfg.CheckpointEvery, f.cfg.CheckpointInterval = 5, 50*time.Millisecond
			s := &remoteSigner{key: f.signer}
			tc.setup(s)
			l := f.openSigned(t, s)
			worst := time.Duration(0)
			for i := 0; i < 30; i++ {
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second) // pipeline.audit_timeout
				err := l.Append(ctx, entry(t, i))
				cancel()
				worst = max(worst, time.Since(t0))
				if err != nil {
					t.Fatalf("append %d refused after %s: %v", i, time.Since(t0).Round(time.Millisecond), err)
				}
				time.Sleep(10 * time.Millisecond) // time checkpoints fall between appends too
			}
			l.Close()
			if worst > 500*time.Millisecond {
				t.Errorf("an append waited %s for a checkpoint signature", worst.Round(time.Millisecond))
			}
			if rep := f.verify(t); rep.Decisions != 30 || strings.Contains(kindsOf(rep), ProblemCheckpointForged) {
				t.Errorf("%d decisions logged, problems %s", rep.Decisions, kindsOf(rep))
			}
		})
	}
}

// deferredLog writes a stopped log signed by a remote signer: checkpoints every 3 decisions
// are written deferred and their signatures carried by later checkpoints.
func deferredLog(t *testing.T) (*fixture, string, [][]byte) {
	t.Helper()
	f := newFixture(t)
	f.cfg.CheckpointEvery = 3
	l := f.openSigned(t, &remoteSigner{key: f.signer})
	appendN(t, l, 0, 14)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := listSegments(f.dir)
	path := filepath.Join(f.dir, segs[0].name)
	b, _ := os.ReadFile(path)
	return f, path, bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
}

// checkpointBodies returns the checkpoint bodies of lines by line index.
func checkpointBodies(t *testing.T, lines [][]byte) map[int]CheckpointBody {
	t.Helper()
	out := map[int]CheckpointBody{}
	for i, line := range lines {
		h, err := parseHeader(line)
		if err != nil {
			t.Fatal(err)
		}
		if h.typ == TypeCheckpoint {
			var b CheckpointBody
			if err := json.Unmarshal(h.checkpoint, &b); err != nil {
				t.Fatal(err)
			}
			out[i] = b
		}
	}
	return out
}

// editCheckpoint rewrites the checkpoint member of line i, then reseals the log and rewrites
// the checkpoint copies to match, as an attacker without the signing key would.
func editCheckpoint(t *testing.T, f *fixture, path string, lines [][]byte, i int, edit func(cb map[string]any)) {
	t.Helper()
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(lines[i]))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		t.Fatal(err)
	}
	edit(m["checkpoint"].(map[string]any))
	delete(m, "hash")
	body, err := appendCanonical(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	lines[i] = append(body[:len(body)-1], []byte(`,"hash":"`+sealBody(body)+`"}`)...)
	lines = reseal(t, lines)
	writeLines(t, path, lines)
	var copies [][]byte
	for _, l := range lines {
		if bytes.Contains(l, []byte(`"type":"checkpoint"`)) {
			copies = append(copies, l)
		}
	}
	writeLines(t, filepath.Join(f.dir, checkpointsFile), copies)
}

// TestDeferredCheckpointSignatures: with a remote signer a checkpoint is written at once,
// marked deferred, and a later checkpoint carries its signature over the same message. The
// stopped log verifies sealed; a carried signature that is wrong, misplaced or removed is
// found.
func TestDeferredCheckpointSignatures(t *testing.T) {
	carrier := func(t *testing.T, lines [][]byte, last bool) int {
		at := -1
		for i, b := range checkpointBodies(t, lines) {
			if len(b.Signatures) > 0 && (at < 0 || (i > at) == last) {
				at = i
			}
		}
		if at < 0 {
			t.Fatal("no checkpoint carries a signature")
		}
		return at
	}
	firstCarrier := func(t *testing.T, lines [][]byte) int { return carrier(t, lines, false) }
	cases := []struct {
		name      string
		tamper    func(t *testing.T, f *fixture, path string, lines [][]byte)
		want, not string // want "": verifies sealed
	}{
		{"untouched", func(*testing.T, *fixture, string, [][]byte) {}, "", ""},
		{"carried signature by another key", func(t *testing.T, f *fixture, path string, lines [][]byte) {
			_, other, _ := ed25519.GenerateKey(nil)
			editCheckpoint(t, f, path, lines, firstCarrier(t, lines), func(cb map[string]any) {
				sig := cb["signatures"].([]any)[0].(map[string]any)
				sig["signature"] = base64.StdEncoding.EncodeToString(ed25519.Sign(other, []byte("anything")))
			})
		}, ProblemCheckpointForged, ""},
		{"signature moved to a checkpoint signed in place", func(t *testing.T, f *fixture, path string, lines [][]byte) {
			editCheckpoint(t, f, path, lines, firstCarrier(t, lines), func(cb map[string]any) {
				cb["signatures"].([]any)[0].(map[string]any)["seq"] = json.Number("0") // the open checkpoint
			})
		}, ProblemCheckpointForged, ""},
		// The last carrier, the close checkpoint: its own signature does not cover what it
		// carries, so only the checkpoints it carried for are affected. (Editing an earlier
		// one changes the hashes the later signatures sign.)
		{"carried signatures removed", func(t *testing.T, f *fixture, path string, lines [][]byte) {
			editCheckpoint(t, f, path, lines, carrier(t, lines, true), func(cb map[string]any) { delete(cb, "signatures") })
		}, ProblemCheckpointMiss, ProblemCheckpointForged},
		{"deferred mark removed", func(t *testing.T, f *fixture, path string, lines [][]byte) {
			for i, b := range checkpointBodies(t, lines) {
				if b.Deferred {
					editCheckpoint(t, f, path, lines, i, func(cb map[string]any) { delete(cb, "deferred") })
					return
				}
			}
		}, ProblemUnsigned, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, path, lines := deferredLog(t)
			deferred, carried := 0, 0
			for _, b := range checkpointBodies(t, lines) {
				if b.Deferred {
					deferred++
				}
				carried += len(b.Signatures)
			}
			if deferred < 4 || carried != deferred {
				t.Fatalf("%d deferred checkpoints, %d signatures carried", deferred, carried)
			}
			tc.tamper(t, f, path, lines)
			rep, err := Verify(f.dir, VerifyOptions{PublicKeys: f.pub, RequireSealed: true})
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.want == "" && !rep.OK():
				t.Fatalf("untouched log: %+v", rep.Problems)
			case tc.want != "" && !strings.Contains(kindsOf(rep), tc.want):
				t.Fatalf("want a %s problem, got %+v", tc.want, rep.Problems)
			case tc.not != "" && strings.Contains(kindsOf(rep), tc.not):
				t.Fatalf("unexpected %s problem: %+v", tc.not, rep.Problems)
			}
		})
	}
}

// TestDeferredSignatureFailureReportedMissing: a deferred checkpoint the signer could not sign
// stays unsigned in the log, and the next checkpoint records why; verify reports it, like a
// checkpoint left out, as checkpoint_missing. Also when the signer still fails at close and
// the log is reopened: the close checkpoint is then written unsigned to keep that record
// (an outage must not vanish at the next start). Every decision is logged, nothing is
// reported forged.
func TestDeferredSignatureFailureReportedMissing(t *testing.T) {
	cases := []struct {
		name        string
		failAtClose bool
	}{
		{"signer back before close", false},
		{"signer failing at close, log reopened", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.cfg.CheckpointEvery = 2
			s := &remoteSigner{key: f.signer}
			l := f.openSigned(t, s)
			s.fail.Store(true)
			for i := 0; i < 10; i++ {
				appendN(t, l, i, 1)
				time.Sleep(5 * time.Millisecond) // let the failure reach the writer: signing is held back
			}
			if n := s.calls.Load(); n > 3 {
				t.Errorf("signer called %d times during the outage, want open and about one retry", n)
			}
			s.fail.Store(tc.failAtClose)
			l.Close() // the close checkpoint is signed regardless of the hold
			decisions := 10
			if tc.failAtClose {
				s.fail.Store(false)
				l = f.openSigned(t, s)
				appendN(t, l, 10, 1)
				l.Close()
				decisions++
			}
			rep := f.verify(t)
			if rep.OK() || !strings.Contains(kindsOf(rep), ProblemCheckpointMiss) || strings.Contains(kindsOf(rep), ProblemCheckpointForged) || rep.Decisions != decisions {
				t.Fatalf("failed signature not reported as a missing checkpoint, or decisions lost: %+v", rep)
			}
			if !strings.Contains(rep.Problems[0].Message, "never signed: vault transit sign: permission denied") {
				t.Errorf("first problem does not name the unsigned checkpoint and why: %+v", rep.Problems)
			}
		})
	}
}

// TestDeferredSignatureLostInCrash: a deferred checkpoint whose signature was still to be
// written when the process died is covered by the next open checkpoint's signature; the live
// log verifies (the checkpoint counts in the unsealed tail), and so does the log reopened
// after the crash.
func TestDeferredSignatureLostInCrash(t *testing.T) {
	f := newFixture(t)
	f.cfg.CheckpointEvery = 3
	s := &remoteSigner{key: f.signer}
	l := f.openSigned(t, s)
	appendN(t, l, 0, 6) // checkpoints after 3 and 6: the second one's signature has nowhere to go yet
	// The crash image: what was acknowledged is durable, segments and checkpoint copies.
	crash := t.TempDir()
	ents, _ := os.ReadDir(f.dir)
	for _, e := range ents {
		if e.Name() == lockFile {
			continue
		}
		b, err := os.ReadFile(filepath.Join(f.dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		// A preallocated segment ends in zeros, as after a crash.
		if err := os.WriteFile(filepath.Join(crash, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	rep, err := Verify(crash, VerifyOptions{PublicKeys: f.pub})
	if err != nil || !rep.OK() || rep.UnsealedTail == 0 {
		t.Fatalf("live log with a signature outstanding: %v %+v", err, rep)
	}
	f.dir, f.cfg.Dir = crash, crash
	l = f.openSigned(t, s)
	appendN(t, l, 6, 4)
	l.Close()
	rep, err = Verify(crash, VerifyOptions{PublicKeys: f.pub, RequireSealed: true})
	if err != nil || !rep.OK() || rep.Decisions != 10 {
		t.Fatalf("reopened after a crash: %v %+v", err, rep)
	}
}
