package auditlog

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// keyFileLog writes a stopped log signed in place with the key file: checkpoints every 3
// decisions, none deferred.
func keyFileLog(t *testing.T, decisions int) (*fixture, string, [][]byte) {
	t.Helper()
	f := newFixture(t)
	f.cfg.CheckpointEvery = 3
	l := f.open(t)
	appendN(t, l, 0, decisions)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := listSegments(f.dir)
	path := filepath.Join(f.dir, segs[0].name)
	raw, _ := os.ReadFile(path)
	return f, path, bytes.Split(bytes.TrimSuffix(raw, []byte("\n")), []byte("\n"))
}

// editDecisionMarkDeferred edits decision d (allow -> deny) and recomputes the chain, as an
// attacker without the signing key would, then hides the signatures that no longer verify:
// every later checkpoint loses its signature and is marked deferred, the close relabelled
// (to relabel, or "time"). Checkpoint n after the edit may be relabelled by relabel(n).
func editDecisionMarkDeferred(t *testing.T, f *fixture, path string, lines [][]byte, d int, relabel func(n int) string) {
	t.Helper()
	i := decisionLines(t, lines)[d]
	lines[i] = bytes.Replace(lines[i], []byte(`"outcome":"allow"`), []byte(`"outcome":"deny"`), 1)
	lines = reseal(t, lines)
	n := 0
	for j := range checkpointBodies(t, lines) {
		if j <= i {
			continue
		}
		n++
		editCheckpoint(t, f, path, lines, j, func(cb map[string]any) {
			delete(cb, "signature")
			delete(cb, "alg")
			delete(cb, "key_id")
			cb["deferred"] = true
			if r := relabel(n); r != "" {
				cb["reason"] = r
			} else if cb["reason"] == CheckpointClose {
				cb["reason"] = CheckpointTime
			}
		})
	}
}

// TestVerifyDeferredMarkDoesNotHideEdits: a deferred checkpoint awaits a signature that a later
// checkpoint carries, and verify did not fault one whose signature never came unless a later
// one was settled or the log closed. So marking checkpoints deferred hid any edit: change a
// decision, recompute the chain, strip the later signatures, mark those checkpoints deferred
// (the close relabelled) - default verify passed, "unsealed" its only sign, on a key-file log
// too. The writer never has more than signQueue checkpoints awaiting a signature and never
// defers an open checkpoint, so more followers, or a deferred open, are findings. What is left
// (documented): the last signQueue checkpoint spans can be rewritten so that only --sealed
// notices.
func TestVerifyDeferredMarkDoesNotHideEdits(t *testing.T) {
	cases := []struct {
		name      string
		decisions int
		edit      int                // the decision edited
		relabel   func(n int) string // the reason of the n-th checkpoint after the edit ("": kept, close -> time)
		sealed    bool               // verify --sealed
		want      string             // "": verifies
	}{
		{"early edit, every later checkpoint deferred", 35, 0, func(int) string { return "" }, false, ProblemCheckpointMiss},
		// An open checkpoint settled the ones awaiting a signature silently (a crash lost
		// them), so one every few checkpoints kept them from piling up.
		{"early edit, later checkpoints deferred with an open among every four", 35, 0,
			func(n int) string {
				if n%4 == 0 {
					return CheckpointOpen
				}
				return ""
			}, false, ProblemUnsigned},
		// The limit: within the last signQueue checkpoint spans, default verify cannot tell the
		// edit from a live log whose signatures are outstanding; --sealed can.
		{"edit in the last spans, default verify", 35, 30, func(int) string { return "" }, false, ""},
		{"edit in the last spans, verify --sealed", 35, 30, func(int) string { return "" }, true, ProblemUnsealed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, path, lines := keyFileLog(t, tc.decisions)
			editDecisionMarkDeferred(t, f, path, lines, tc.edit, tc.relabel)
			rep, err := Verify(f.dir, VerifyOptions{PublicKeys: f.pub, RequireSealed: tc.sealed})
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.want == "" && (!rep.OK() || rep.UnsealedTail == 0):
				t.Fatalf("want verified with an unsealed tail: unsealed %d, %+v", rep.UnsealedTail, rep.Problems)
			case tc.want != "" && !strings.Contains(kindsOf(rep), tc.want):
				t.Fatalf("decision %d edited, later checkpoints marked deferred: want a %s problem, got %s (checkpoints %d, unsealed %d)",
					tc.edit, tc.want, kindsOf(rep), rep.Checkpoints, rep.UnsealedTail)
			}
		})
	}
}

// TestVerifyDeferredLogsWithoutFindings: the bound on checkpoints awaiting a signature holds
// for what the writer writes - a long log whose signer lags behind the checkpoints, and one
// whose signer failed for a while (those are reported, as never signed, and nothing else).
func TestVerifyDeferredLogsWithoutFindings(t *testing.T) {
	f := newFixture(t)
	f.cfg.CheckpointEvery = 1
	s := &remoteSigner{key: f.signer, delay: 20 * time.Millisecond}
	l := f.openSigned(t, s)
	appendN(t, l, 0, 60)
	for i := 0; i < 20; i++ {
		appendN(t, l, 60+i, 1)
		time.Sleep(5 * time.Millisecond)
	}
	l.Close()
	rep, err := Verify(f.dir, VerifyOptions{PublicKeys: f.pub})
	if err != nil {
		t.Fatal(err)
	}
	// Checkpoints the lagging signer made the writer leave out are reported by their spacing
	// (every 1): the deferred ones written must all verify.
	for _, p := range rep.Problems {
		if p.Kind != ProblemCheckpointMiss || strings.Contains(p.Message, "never signed") {
			t.Errorf("lagging signer: %s: %s", p.Kind, p.Message)
		}
	}
	if rep.Decisions != 80 {
		t.Errorf("%d decisions", rep.Decisions)
	}
}

// TestVerifyDeferredCheckpointCannotCarryOwnSignature: a deferred checkpoint's signatures are
// not in its signed message, so it could carry its own signature: a stopped log cut right
// after a deferred checkpoint, with the signature the close carried for it moved into it,
// passed verify --sealed.
func TestVerifyDeferredCheckpointCannotCarryOwnSignature(t *testing.T) {
	f, path, lines := deferredLog(t)
	bodies := checkpointBodies(t, lines)
	last := -1
	for i, b := range bodies {
		if b.Deferred && i > last {
			last = i
		}
	}
	h, _ := parseHeader(lines[last])
	var own map[string]any
	for _, b := range bodies {
		for _, cs := range b.Signatures {
			if cs.Seq == h.seq {
				own = map[string]any{"seq": json.Number(itoa(int(cs.Seq))), "alg": cs.Algorithm, "key_id": cs.KeyID, "signature": cs.Signature}
			}
		}
	}
	if own == nil {
		t.Fatalf("no checkpoint carries the signature of %d", h.seq)
	}
	lines = lines[:last+1]
	editCheckpoint(t, f, path, lines, last, func(cb map[string]any) {
		sigs, _ := cb["signatures"].([]any)
		cb["signatures"] = append(sigs, own)
	})
	rep, err := Verify(f.dir, VerifyOptions{PublicKeys: f.pub, RequireSealed: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(kindsOf(rep), ProblemCheckpointForged) {
		t.Errorf("log cut after deferred checkpoint %d carrying its own signature: want %s, got %s (unsealed %d)",
			h.seq, ProblemCheckpointForged, kindsOf(rep), rep.UnsealedTail)
	}
}

// TestStopSignsOutstandingCheckpoints: at close the log waits signTimeout for the signatures
// still outstanding, then cancels the rest. It took a signer still busy then for a hung one and
// left the close checkpoint unsigned, and the cancelled checkpoints unsigned too: a healthy
// signer answering in 400 ms made an untouched stopped log fail verify --sealed. A signer that
// returns once cancelled is not hanging: what was cancelled is signed in place, then the close.
// A hung one still holds the close for a bounded time, and its checkpoints are reported.
// A 700 ms signer (well within signTimeout per call) used to run out of the one signTimeout
// shared by the cancelled checkpoints, which marked it hung and left the close unsigned: the
// close is now signed first, with its own timeout, and a signed close seals the rest.
func TestStopSignsOutstandingCheckpoints(t *testing.T) {
	cases := []struct {
		name   string
		setup  func(s *remoteSigner)
		sealed bool // the stopped log verifies --sealed; otherwise only checkpoint_missing
	}{
		{"slow signer", func(s *remoteSigner) { s.delay = 400 * time.Millisecond }, true},
		{"slow signer past the shared close budget", func(s *remoteSigner) { s.delay = 700 * time.Millisecond }, true},
		{"hung signer", func(s *remoteSigner) { s.hang.Store(true) }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.cfg.CheckpointEvery = 1
			s := &remoteSigner{key: f.signer}
			l := f.openSigned(t, s)
			tc.setup(s)
			appendN(t, l, 0, 8)
			t0 := time.Now()
			l.Close()
			if d := time.Since(t0); d > 3*signTimeout {
				t.Errorf("close took %s", d.Round(time.Millisecond))
			}
			rep, err := Verify(f.dir, VerifyOptions{PublicKeys: f.pub, RequireSealed: tc.sealed})
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.sealed && !rep.OK():
				t.Fatalf("untouched stopped log: %s: %+v", kindsOf(rep), rep.Problems)
			case !tc.sealed && (rep.OK() || strings.Contains(kindsOf(rep), ProblemCheckpointForged) || rep.Decisions != 8):
				t.Fatalf("hung signer: want checkpoint_missing and every decision, got %d decisions, %+v", rep.Decisions, rep.Problems)
			}
		})
	}
}
