package auditlog

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadLine(t *testing.T) {
	long := strings.Repeat("x", 100) // longer than the 16-byte reader below
	cases := []struct {
		name  string
		data  string
		lines []string // complete lines, newline included
		end   string   // what readLine returns at the end
		nul   bool     // the end is a NUL, not EOF
	}{
		{"lines then EOF", "a\nbb\n", []string{"a\n", "bb\n"}, "", false},
		{"partial at EOF", "a\nbb", []string{"a\n"}, "bb", false},
		{"zero tail", "a\n\x00\x00\x00", []string{"a\n"}, "", true},
		{"torn record then zeros", "a\nbb\x00\x00", []string{"a\n"}, "bb", true},
		{"long line", long + "\n", []string{long + "\n"}, "", false},
		{"long torn line then zeros", long + "\x00\x00" + "\n", nil, long, true},
		{"empty", "", nil, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := bufio.NewReaderSize(strings.NewReader(c.data), 16)
			for _, want := range c.lines {
				got, err := readLine(r)
				if err != nil || string(got) != want {
					t.Fatalf("readLine = %q, %v; want %q", got, err, want)
				}
			}
			got, err := readLine(r)
			if !endOfRecords(err) || string(got) != c.end || errors.Is(err, errNUL) != c.nul {
				t.Fatalf("at the end readLine = %q, %v; want %q (NUL %v)", got, err, c.end, c.nul)
			}
		})
	}
	if endOfRecords(io.ErrUnexpectedEOF) {
		t.Error("a read error counted as the end of the records")
	}
}

// activeSegment returns the path and contents of the newest segment.
func activeSegment(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	segs, err := listSegments(dir)
	if err != nil || len(segs) == 0 {
		t.Fatal(err, segs)
	}
	path := filepath.Join(dir, segs[len(segs)-1].name)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, b
}

func TestPreallocatedSegmentIsReadLiveAndTrimmedAtClose(t *testing.T) {
	f := newFixture(t)
	l := f.open(t)
	appendN(t, l, 0, 20)
	_, live := activeSegment(t, f.dir)
	end := bytes.IndexByte(live, 0)
	if end <= 0 || live[end-1] != '\n' || len(live)-end < int(l.cfg.PreallocateBytes)/2 {
		t.Fatalf("live segment: %d bytes, records end at %d; want records then at least %d zero bytes", len(live), end, l.cfg.PreallocateBytes/2)
	}
	if bytes.ContainsFunc(live[end:], func(r rune) bool { return r != 0 }) {
		t.Fatal("the space after the records is not all zeros")
	}
	if got := counterValue(l.m.preallocated); got < float64(l.cfg.PreallocateBytes) {
		t.Errorf("preallocated_bytes_total = %v", got)
	}
	// Readers of a live log stop at the zero-filled space.
	n := 0
	if err := ScanEvents(f.dir, func(ev *Event, _ []byte) error {
		if ev.Type == TypeDecision {
			n++
		}
		return nil
	}); err != nil || n != 20 {
		t.Fatalf("scan of the live log: %d decisions, %v", n, err)
	}
	if rep := f.verify(t); !rep.OK() || rep.Decisions != 20 {
		t.Fatalf("verify of the live log: %+v", rep)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	_, closed := activeSegment(t, f.dir)
	if bytes.IndexByte(closed, 0) >= 0 || closed[len(closed)-1] != '\n' {
		t.Fatalf("closed segment not trimmed to its records: %d bytes, NUL at %d", len(closed), bytes.IndexByte(closed, 0))
	}
}

func TestAppendModeWithoutPreallocation(t *testing.T) {
	f := newFixture(t)
	f.cfg.PreallocateBytes = -1
	l := f.open(t)
	appendN(t, l, 0, 5)
	_, live := activeSegment(t, f.dir)
	if bytes.IndexByte(live, 0) >= 0 || live[len(live)-1] != '\n' {
		t.Fatalf("preallocate_bytes -1 still zero-filled the segment (%d bytes)", len(live))
	}
	l.Close()
	if rep := f.verify(t); !rep.OK() || rep.Decisions != 5 {
		t.Fatalf("verify: %+v", rep)
	}
}

// A process that dies leaves its segment with the zero-filled space, and possibly a torn
// record before it (or, appending, a torn record alone); the next Open cuts both, counts only
// the torn bytes, and continues the chain.
func TestRecoveryCutsZeroTailAndTornRecord(t *testing.T) {
	const torn = `{"bundles":{"consentry":{"revision":"rev-1"}},"decision_id":"torn`
	for _, c := range []struct {
		name        string
		torn        string
		zeroFill    int
		preallocate int64
	}{
		{"zero-filled space", "", 64 << 10, 0},
		{"torn record then zero-filled space", torn, 64 << 10, 0},
		{"torn record, appending", torn, 0, -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			f.cfg.PreallocateBytes = c.preallocate
			l := f.open(t)
			appendN(t, l, 0, 5)
			l.Close()
			path, b := activeSegment(t, f.dir)
			crashed := append(append(b, c.torn...), make([]byte, c.zeroFill)...)
			if err := os.WriteFile(path, crashed, 0o600); err != nil {
				t.Fatal(err)
			}
			l = f.open(t)
			if got := counterValue(l.m.recovered); got != float64(len(c.torn)) {
				t.Errorf("recovery_truncated_bytes_total = %v, want %d (zeros are not torn bytes)", got, len(c.torn))
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, b) {
				t.Errorf("recovered segment is %d bytes, want its %d bytes of records", len(after), len(b))
			}
			appendN(t, l, 5, 3)
			l.Close()
			if rep := f.verify(t); !rep.OK() || rep.Decisions != 8 {
				t.Fatalf("after recovery: %+v", rep)
			}
		})
	}
}

// The upload sink's reader follows the active segment while the writer writes over the
// zero-filled space: records written after the reader reached the zeros must still be read.
func TestTailFollowsWritesOverZeroFill(t *testing.T) {
	f := newFixture(t)
	l := f.open(t)
	defer l.Close()
	appendN(t, l, 0, 3)
	tl := tail{dir: f.dir}
	if err := tl.seek(0); err != nil {
		t.Fatal(err)
	}
	defer tl.close()
	read := func() []uint64 {
		var seqs []uint64
		for {
			_, h, ok, err := tl.next(^uint64(0))
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				return seqs
			}
			seqs = append(seqs, h.seq)
		}
	}
	first := read()
	if len(first) < 4 { // open checkpoint + 3 decisions (+ count checkpoints)
		t.Fatalf("first read: seqs %v", first)
	}
	appendN(t, l, 3, 4)
	second := read()
	if len(second) < 4 || second[0] != first[len(first)-1]+1 {
		t.Fatalf("after more appends: seqs %v, previous ended at %d", second, first[len(first)-1])
	}
}

// A record's strings cannot hold a raw NUL: canonical JSON escapes it, so the first NUL byte
// in a segment always marks the end of its records.
func TestRecordNeverContainsNUL(t *testing.T) {
	f := newFixture(t)
	l := f.open(t)
	e := entry(t, 0)
	e.Input.Subject.ID = "emp\x00-17"
	e.TraceID = "trace\x00"
	if err := l.Append(t.Context(), e); err != nil {
		t.Fatal(err)
	}
	l.Close()
	_, b := activeSegment(t, f.dir)
	if bytes.IndexByte(b, 0) >= 0 {
		t.Fatal("a NUL in the input reached the segment unescaped")
	}
	if !bytes.Contains(b, []byte(`trace\u0000`)) {
		t.Fatal("the NUL was not kept escaped")
	}
}

// The zero-filled space stops at segment_max_bytes: past it the segment rotates, and the rest
// would only be trimmed.
func TestPreallocationStopsAtSegmentSize(t *testing.T) {
	f := newFixture(t)
	f.cfg.SegmentMaxBytes = 64 << 10
	l := f.open(t)
	defer l.Close()
	appendN(t, l, 0, 2)
	_, live := activeSegment(t, f.dir)
	if end := bytes.IndexByte(live, 0); end <= 0 || len(live) != 64<<10 {
		t.Fatalf("live segment is %d bytes (records end at %d), want exactly segment_max_bytes (%d)", len(live), end, 64<<10)
	}
}

// NUL bytes written over records in the middle of a segment are not zero-fill: recovery must
// refuse the log (ErrCorrupt) instead of cutting the records after them away, and verify must
// report the overwrite, whether or not a later record is covered by a checkpoint.
func TestNULsOverRecordsAreRefused(t *testing.T) {
	for _, where := range []string{"closed log", "zero-filled live tail"} {
		t.Run(where, func(t *testing.T) {
			f := newFixture(t)
			f.cfg.CheckpointEvery = 1000 // no checkpoint covers the records after the overwrite
			l := f.open(t)
			appendN(t, l, 0, 6)
			l.Close()
			path, b := activeSegment(t, f.dir)
			at := bytes.Index(b, []byte("dec-000002"))
			copy(b[at:], make([]byte, 100))
			if where == "zero-filled live tail" {
				b = append(b, make([]byte, 4096)...)
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			rep := f.verify(t)
			found := false
			for _, p := range rep.Problems {
				found = found || (p.Kind == ProblemModified && strings.Contains(p.Message, "overwritten"))
			}
			if rep.OK() || !found {
				t.Errorf("verify did not report the overwrite: %+v", rep.Problems)
			}
			if _, err := Open(f.cfg, Options{}); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open = %v, want ErrCorrupt", err)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, b) {
				t.Error("the refused segment was changed")
			}
		})
	}
}

// FuzzRecoverSegmentTail: whatever follows a segment's valid records (zero-fill, torn records,
// garbage, NULs then records), recovery never panics and never cuts a valid record: it either
// leaves a prefix of the file that holds all of them and ends with a record, or refuses with
// ErrCorrupt and changes nothing.
func FuzzRecoverSegmentTail(f *testing.F) {
	fx := newFixture(f)
	fx.cfg.PreallocateBytes = -1
	l := fx.open(f)
	appendN(f, l, 0, 3)
	l.Close()
	segs, err := listSegments(fx.dir)
	if err != nil || len(segs) != 1 {
		f.Fatal(err, segs)
	}
	base, err := os.ReadFile(filepath.Join(fx.dir, segs[0].name))
	if err != nil {
		f.Fatal(err)
	}
	lines := bytes.SplitAfter(base, []byte("\n"))
	f.Add([]byte{})
	f.Add(make([]byte, 300))
	f.Add([]byte(`{"decision_id":"torn`))
	f.Add(append([]byte(`{"decision_id":"torn`), make([]byte, 50)...))
	f.Add(append(make([]byte, 20), lines[1]...))
	f.Add([]byte("garbage\n"))
	f.Add(append([]byte("\x00\x00\n"), lines[0]...))
	f.Fuzz(func(t *testing.T, tail []byte) {
		path := filepath.Join(t.TempDir(), segs[0].name)
		in := append(append([]byte(nil), base...), tail...)
		if err := os.WriteFile(path, in, 0o600); err != nil {
			t.Fatal(err)
		}
		var st tailState
		_, err := recoverSegment(path, segs[0].first, &st)
		out, rerr := os.ReadFile(path)
		if rerr != nil {
			t.Fatal(rerr)
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("recovery failed with %v, want ErrCorrupt or success", err)
			}
			if !bytes.Equal(out, in) {
				t.Fatal("a refused segment was changed")
			}
			return
		}
		if len(out) < len(base) || !bytes.Equal(out, in[:len(out)]) {
			t.Fatalf("recovered %d bytes, not a prefix of the %d-byte file that keeps its %d bytes of records", len(out), len(in), len(base))
		}
		if bytes.IndexByte(out, 0) >= 0 || out[len(out)-1] != '\n' {
			t.Fatal("the recovered segment holds a NUL or ends in a partial line")
		}
	})
}

// TestTruncateTornCheckpointCopies: recovery cuts the last line of checkpoints.jsonl when a
// crash tore it (no newline) or left it zero-filled (NULs, with the newline persisted), and
// nothing else.
func TestTruncateTornCheckpointCopies(t *testing.T) {
	a, b := `{"seq":1,"type":"checkpoint"}`+"\n", `{"seq":2,"type":"checkpoint"}`+"\n"
	for _, c := range []struct{ name, in, want string }{
		{"empty", "", ""},
		{"complete", a + b, a + b},
		{"torn last line", a + b[:10], a},
		{"torn only line", a[:5], ""},
		{"zero-filled last line", a + "\x00\x00\x00\x00\n", a},
		{"zeros inside the last line", a + b[:8] + "\x00\x00" + b[10:], a},
		{"zero-filled and torn", a + "\x00\x00\x00", a},
		{"NULs in an earlier line are left for verify", a[:5] + "\x00" + a[6:] + b, a[:5] + "\x00" + a[6:] + b},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), checkpointsFile)
			if err := os.WriteFile(path, []byte(c.in), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := truncateTornLines(path); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(path)
			if string(got) != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}
