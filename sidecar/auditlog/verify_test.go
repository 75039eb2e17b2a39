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

// tamperLog builds a stopped log: open checkpoint, 35 decisions with a checkpoint every 10, close
// checkpoint. It returns the segment path and its lines (without newlines).
func tamperLog(t *testing.T) (*fixture, string, [][]byte) {
	t.Helper()
	f := newFixture(t)
	l := f.open(t)
	appendN(t, l, 0, 35)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if rep := f.verify(t); !rep.OK() {
		t.Fatalf("clean log does not verify: %+v", rep.Problems)
	}
	segs, _ := listSegments(f.dir)
	path := filepath.Join(f.dir, segs[0].name)
	b, _ := os.ReadFile(path)
	lines := bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
	return f, path, lines
}

func writeLines(t *testing.T, path string, lines [][]byte) {
	t.Helper()
	if err := os.WriteFile(path, append(bytes.Join(lines, []byte("\n")), '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
}

// reseal recomputes seq, prev_hash and hash of every line, as an attacker without the signing
// key would after editing the log.
func reseal(t *testing.T, lines [][]byte) [][]byte {
	t.Helper()
	head := ZeroHash
	out := make([][]byte, len(lines))
	for i, line := range lines {
		var m map[string]any
		d := json.NewDecoder(bytes.NewReader(line))
		d.UseNumber()
		if err := d.Decode(&m); err != nil {
			t.Fatal(err)
		}
		delete(m, "hash")
		m["prev_hash"], m["seq"] = head, json.Number(itoa(i))
		body, err := appendCanonical(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		sum := sealBody(body)
		head = sum
		out[i] = append(body[:len(body)-1], []byte(`,"hash":"`+sum+`"}`)...)
	}
	return out
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func kindsOf(rep *VerifyReport) string {
	var k []string
	for _, p := range rep.Problems {
		k = append(k, p.Kind)
	}
	return strings.Join(k, ",")
}

func decisionLines(t *testing.T, lines [][]byte) []int {
	var idx []int
	for i, l := range lines {
		if bytes.Contains(l, []byte(`"type":"decision"`)) {
			idx = append(idx, i)
		}
	}
	return idx
}

func TestVerifyDetectsTampering(t *testing.T) {
	cases := []struct {
		name   string
		tamper func(t *testing.T, f *fixture, path string, lines [][]byte)
		want   string
	}{
		{"modified event", func(t *testing.T, f *fixture, path string, lines [][]byte) {
			i := decisionLines(t, lines)[3]
			lines[i] = bytes.Replace(lines[i], []byte(`"outcome":"allow"`), []byte(`"outcome":"deny"`), 1)
			writeLines(t, path, lines)
		}, ProblemModified},
		{"modified event with recomputed chain", func(t *testing.T, f *fixture, path string, lines [][]byte) {
			i := decisionLines(t, lines)[3]
			lines[i] = bytes.Replace(lines[i], []byte(`"outcome":"allow"`), []byte(`"outcome":"deny"`), 1)
			writeLines(t, path, reseal(t, lines))
		}, ProblemCheckpointForged},
		{"deleted event", func(t *testing.T, f *fixture, path string, lines [][]byte) {
			i := decisionLines(t, lines)[5]
			writeLines(t, path, append(lines[:i:i], lines[i+1:]...))
		}, ProblemDeleted},
		{"deleted event with recomputed chain", func(t *testing.T, f *fixture, path string, lines [][]byte) {
			i := decisionLines(t, lines)[5]
			writeLines(t, path, reseal(t, append(lines[:i:i], lines[i+1:]...)))
		}, ProblemCheckpointForged},
		{"reordered events", func(t *testing.T, f *fixture, path string, lines [][]byte) {
			d := decisionLines(t, lines)
			lines[d[2]], lines[d[3]] = lines[d[3]], lines[d[2]]
			writeLines(t, path, lines)
		}, ProblemReordered},
		{"inserted event", func(t *testing.T, f *fixture, path string, lines [][]byte) {
			i := decisionLines(t, lines)[4]
			forged := bytes.Replace(lines[i], []byte("dec-000004"), []byte("dec-999999"), 1)
			rs := reseal(t, [][]byte{forged})
			out := append(append(append([][]byte{}, lines[:i+1]...), rs[0]), lines[i+1:]...)
			writeLines(t, path, out)
		}, ProblemReordered},
		{"truncated tail", func(t *testing.T, f *fixture, path string, lines [][]byte) {
			writeLines(t, path, lines[:len(lines)-4])
		}, ProblemTruncated},
		{"missing checkpoint", func(t *testing.T, f *fixture, path string, lines [][]byte) {
			var out [][]byte
			for i, l := range lines {
				if i > 0 && i < len(lines)-1 && bytes.Contains(l, []byte(`"type":"checkpoint"`)) {
					continue
				}
				out = append(out, l)
			}
			writeLines(t, path, reseal(t, out))
			os.WriteFile(filepath.Join(f.dir, checkpointsFile), nil, 0o600)
		}, ProblemCheckpointMiss},
		{"forged checkpoint", func(t *testing.T, f *fixture, path string, lines [][]byte) {
			_, other, _ := ed25519.GenerateKey(nil)
			i := 0
			for j, l := range lines {
				if j > 0 && bytes.Contains(l, []byte(`"type":"checkpoint"`)) {
					i = j
					break
				}
			}
			h, _ := parseHeader(lines[i])
			var b CheckpointBody
			json.Unmarshal(h.checkpoint, &b)
			sig := base64.StdEncoding.EncodeToString(ed25519.Sign(other, CheckpointMessage(h.seq, h.prevHash, h.timestamp, b)))
			lines[i] = bytes.Replace(lines[i], []byte(b.Signature), []byte(sig), 1)
			writeLines(t, path, reseal(t, lines))
		}, ProblemCheckpointForged},
		{"deleted first segment", func(t *testing.T, f *fixture, path string, lines [][]byte) {
			l := f.open(t)
			appendN(t, l, 100, 3)
			l.Close()
			os.Remove(path)
		}, ProblemHeadDeleted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, path, lines := tamperLog(t)
			tc.tamper(t, f, path, lines)
			rep := f.verify(t)
			if rep.OK() {
				t.Fatalf("tampering not detected")
			}
			if !strings.Contains(kindsOf(rep), tc.want) {
				t.Fatalf("want a %s problem, got %s: %+v", tc.want, kindsOf(rep), rep.Problems)
			}
		})
	}
}

func TestVerifyUnknownKeyAndUnsigned(t *testing.T) {
	f, _, _ := tamperLog(t)
	rep, err := Verify(f.dir, VerifyOptions{})
	if err != nil || rep.OK() || !strings.Contains(kindsOf(rep), ProblemCheckpointForged) {
		t.Fatalf("verify without the public key: %v %+v", err, rep)
	}
	g := newFixture(t)
	g.cfg.SigningKeyFile, g.cfg.UnsignedCheckpoints = "", true
	l := g.open(t)
	appendN(t, l, 0, 3)
	l.Close()
	if rep, _ := Verify(g.dir, VerifyOptions{}); rep.OK() || !strings.Contains(kindsOf(rep), ProblemUnsigned) {
		t.Fatalf("unsigned log accepted: %+v", rep)
	}
	if rep, _ := Verify(g.dir, VerifyOptions{AllowUnsigned: true}); !rep.OK() {
		t.Fatalf("unsigned log with AllowUnsigned: %+v", rep.Problems)
	}
}

func TestEmptyCheckpointsWhenIdle(t *testing.T) {
	f := newFixture(t)
	f.cfg.CheckpointInterval = 20 * time.Millisecond
	l := f.open(t)
	time.Sleep(300 * time.Millisecond) // ~15 intervals
	// A starved machine may not have fired the interval timer twice in 300ms: wait until the
	// open checkpoint and two time checkpoints (seqs 0-2, no decisions) are committed.
	for deadline := time.Now().Add(20 * time.Second); l.Committed() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("idle log: %d records committed after 20s, want the open and two time checkpoints", l.Committed()+1)
		}
	}
	l.Close()
	rep := f.verify(t)
	if !rep.OK() || rep.Checkpoints < 4 || rep.Decisions != 0 {
		t.Fatalf("idle log: %+v", rep)
	}
}

func TestRetentionRecordedAndVerified(t *testing.T) {
	f := newFixture(t)
	f.cfg.SegmentMaxBytes = 8 << 10
	f.cfg.RetainSegments = 2
	l := f.open(t)
	appendN(t, l, 0, 60)
	l.Close()
	segs, _ := listSegments(f.dir)
	if len(segs) > 3 || segs[0].first == 0 {
		t.Fatalf("retention did not remove segments: %v", segs)
	}
	rep := f.verify(t)
	if !rep.OK() {
		t.Fatalf("retained log: %+v", rep.Problems)
	}
	// Removing the oldest retained segment as well is not retention.
	os.Remove(filepath.Join(f.dir, segs[0].name))
	if rep := f.verify(t); rep.OK() {
		t.Fatal("deleting a retained segment went unnoticed")
	}
}

// TestTimeRotationAndAgeRetention drives the writer's clock: segments rotate by age, and
// segments older than retain_age are removed (recorded in the chain) while the log verifies.
func TestTimeRotationAndAgeRetention(t *testing.T) {
	f := newFixture(t)
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	f.cfg.SegmentMaxAge = time.Hour
	f.cfg.CheckpointInterval = 1000 * time.Hour
	l, err := Open(f.cfg, Options{Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	for day := 0; day < 3; day++ {
		appendN(t, l, day*10, 3)
		clock.Add(int64(2 * time.Hour))
	}
	appendN(t, l, 100, 1)
	l.Close()
	segs, _ := listSegments(f.dir)
	if len(segs) != 4 {
		t.Fatalf("want 4 segments (one per 2h step), got %v", segs)
	}
	if rep := f.verify(t); !rep.OK() {
		t.Fatalf("%+v", rep.Problems)
	}
	// Reopen with age retention: the clock is far past the segments' last records.
	f.cfg.RetainAge = time.Hour
	clock.Add(int64(48 * time.Hour))
	l, err = Open(f.cfg, Options{Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(int64(2 * time.Hour))
	appendN(t, l, 200, 1) // triggers rotation, then retention of the aged closed segments
	l.Close()
	after, _ := listSegments(f.dir)
	if len(after) >= len(segs) || after[0].first == 0 {
		t.Fatalf("age retention removed nothing: %v", after)
	}
	if rep := f.verify(t); !rep.OK() {
		t.Fatalf("after age retention: %+v", rep.Problems)
	}
}

// TestVerifyLiveLog: verifying a log while its writer appends over the zero-filled space never
// reports a problem other than the records after the last checkpoint.
func TestVerifyLiveLog(t *testing.T) {
	f := newFixture(t)
	f.cfg.PreallocateBytes = 64 << 10
	l := f.open(t)
	defer l.Close()
	stop := make(chan struct{})
	done := make(chan struct{})
	var n atomic.Int64
	for w := 0; w < 4; w++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := int(n.Add(1))
				if err := l.Append(t.Context(), entry(t, i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	deadline := time.Now().Add(2 * time.Second)
	runs := 0
	for ; time.Now().Before(deadline) || runs < 20; runs++ {
		rep := f.verify(t)
		for _, p := range rep.Problems {
			if p.Kind != ProblemUnsealed {
				t.Errorf("run %d after %d appends: %s %s: %s", runs, n.Load(), p.Kind, p.Segment, p.Message)
			}
		}
		if t.Failed() {
			break
		}
	}
	close(stop)
	for w := 0; w < 4; w++ {
		<-done
	}
	t.Logf("%d verifications during %d appends", runs, n.Load())
}

// TestFailedRetentionRecordFailsTheBatch: when the retention record cannot be written the log
// breaks, and the batch that triggered the rotation is refused instead of being chained after
// a record that does not exist. After a restart the log verifies and holds exactly the
// acknowledged decisions.
func TestFailedRetentionRecordFailsTheBatch(t *testing.T) {
	f := newFixture(t)
	f.cfg.SegmentMaxBytes = 4096
	f.cfg.RetainSegments = 1
	l := f.open(t)
	var acked int
	for acked = 0; acked < 40; acked++ {
		if err := l.Append(t.Context(), entry(t, acked)); err != nil {
			t.Fatal(err)
		}
	}
	if segs, _ := listSegments(f.dir); segs[0].first == 0 {
		t.Fatal("no segment removed by retention: the fixture should rotate and retain")
	}
	l.retentionFault = func() error { return errors.New("injected: no space left on device") }
	var refused int
	ids := map[string]bool{}
	for i := range acked {
		ids[entry(t, i).DecisionID] = true
	}
	for i := acked; i < acked+20; i++ {
		e := entry(t, i)
		if err := l.Append(t.Context(), e); err != nil {
			refused++
		} else if refused > 0 {
			t.Fatalf("decision %d acknowledged after the log broke", i)
		} else {
			ids[e.DecisionID] = true
		}
	}
	if refused == 0 {
		t.Fatal("no rotation with retention happened in 20 appends")
	}
	if l.Healthy() == nil {
		t.Error("a broken log reports healthy")
	}
	_ = l.Close()
	l = f.open(t)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep := f.verify(t)
	if !rep.OK() {
		t.Fatalf("after restart: %s %+v", kindsOf(rep), rep.Problems)
	}
	// Retention removed the oldest segments: every acknowledged decision from the first
	// retained record on must still be there.
	logged := loggedDecisions(t, f.dir)
	first := -1 // retention removes a prefix: from the first retained decision on, none is missing
	for i := 0; i < acked+20; i++ {
		id := entry(t, i).DecisionID
		if first < 0 && logged[id] {
			first = i
		}
		if first >= 0 && ids[id] && !logged[id] {
			t.Errorf("acknowledged decision %s lost", id)
		}
		if logged[id] && !ids[id] {
			t.Errorf("refused decision %s is in the log", id)
		}
	}
	if first < 0 {
		t.Fatal("no decision in the log")
	}
}

// headLedger is a key ledger that only has a head (the real one, vaultkeys.Ledger, imports
// this package; its own test covers the refused start).
type headLedger struct {
	seq  int64
	hash string
}

func (h *headLedger) Head() (int64, string)                 { return h.seq, h.hash }
func (h *headLedger) CheckAnchor(seq int64, _ string) error { return nil }

// TestKeyLedgerAnchorFromCheckpointCopies: when the last segment holds no checkpoint (a
// stop right after a rotation, before any checkpoint), the anchor comes from the last
// checkpoint copy; and the anchor is signed: the message differs with the head.
func TestKeyLedgerAnchorFromCheckpointCopies(t *testing.T) {
	f := newFixture(t)
	f.cfg.CheckpointEvery = 1000
	f.cfg.SegmentMaxBytes = 4096 // a few decisions per segment
	f.cfg.PreallocateBytes = -1
	kl := &headLedger{seq: 5, hash: strings.Repeat("ab", 32)}
	l, err := Open(f.cfg, Options{KeyLedger: kl, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 0, 8)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// Cut the close checkpoint as a crash before it would: the last segment then holds
	// decisions and no checkpoint.
	segs, _ := listSegments(f.dir)
	path := filepath.Join(f.dir, segs[len(segs)-1].name)
	raw, _ := os.ReadFile(path)
	lines := bytes.SplitAfter(bytes.TrimSuffix(raw, []byte("\n")), []byte("\n"))
	for i, line := range lines {
		if ck := bytes.Contains(line, []byte(`"type":"checkpoint"`)); ck != (i == len(lines)-1) || len(segs) < 2 || len(lines) < 2 {
			t.Fatalf("want segments whose last holds decisions and then the close checkpoint: %d segments, last %q", len(segs), raw)
		}
	}
	if err := os.WriteFile(path, bytes.Join(lines[:len(lines)-1], nil), 0o600); err != nil {
		t.Fatal(err)
	}
	kl.seq = 9
	l, err = Open(f.cfg, Options{KeyLedger: kl, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if an := l.KeyLedgerAnchor(); an == nil || an.Seq != 5 || an.Hash != kl.hash {
		t.Fatalf("anchor from the checkpoint copies: %+v", an)
	}
	b := CheckpointBody{Reason: "time", KeyLedger: &LedgerHead{Seq: 5, Hash: kl.hash}}
	m1 := CheckpointMessage(1, ZeroHash, "t", b)
	b.KeyLedger = &LedgerHead{Seq: 4, Hash: kl.hash}
	if bytes.Equal(m1, CheckpointMessage(1, ZeroHash, "t", b)) {
		t.Fatal("the signed message does not cover the key ledger head")
	}
}

// TestVerifyCancelled: a cancelled verification stops and says so.
func TestVerifyCancelled(t *testing.T) {
	f := newFixture(t)
	l := f.open(t)
	appendN(t, l, 0, 5)
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Verify(f.dir, VerifyOptions{PublicKeys: f.pub, Context: ctx}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled verify: %v", err)
	}
}
