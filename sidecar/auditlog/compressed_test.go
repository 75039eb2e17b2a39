package auditlog

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/internal/syncbuf"
)

// gzipSegment compresses a segment file in place as an operator would (gzip, or gzip -k when
// keep), the last cut bytes of the .gz left off.
func gzipSegment(t *testing.T, path string, keep bool, cut int) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, _ = zw.Write(raw)
	_ = zw.Close()
	if err := os.WriteFile(path+gzSuffix, b.Bytes()[:b.Len()-cut], 0o600); err != nil {
		t.Fatal(err)
	}
	if !keep {
		mustRemove(t, path)
	}
}

// segmentFiles returns the names of the segment files in dir, plain and compressed.
func segmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, segmentPrefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}

// TestRetentionRemovesCompressedSegments: a closed segment an operator gzipped in place is
// still that segment for retention: counted against retain_segments, vouched for by its own
// records and removed (in both forms, after gzip -k). Retention reading only the plain files
// stopped for good at the first compressed one (alarm decision_log_gap at every rotation,
// verify reporting head_deleted, the .gz never removed).
func TestRetentionRemovesCompressedSegments(t *testing.T) {
	cases := []struct {
		name string
		// compress picks the closed segments (oldest first) to gzip, and whether the plain
		// file is kept too.
		compress func(i, n int) bool
		keep     bool
	}{
		{name: "oldest compressed", compress: func(i, _ int) bool { return i == 0 }},
		{name: "every closed segment compressed", compress: func(int, int) bool { return true }},
		{name: "gzip -k: both forms", compress: func(i, _ int) bool { return i < 2 }, keep: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.cfg.SegmentMaxBytes = 8192
			f.cfg.RetainSegments = 2
			f.cfg.PreallocateBytes = -1
			l := f.open(t)
			appendN(t, l, 0, 30)
			l.Close()
			segs, _ := listSegments(f.dir)
			if len(segs) < 3 {
				t.Fatalf("want >= 3 segments, got %v", segs)
			}
			for i, s := range segs {
				if tc.compress(i, len(segs)) {
					gzipSegment(t, filepath.Join(f.dir, s.name), tc.keep, 0)
				}
			}
			var logs syncbuf.Buffer
			l = f.openLogging(t, &logs, nil)
			appendN(t, l, 100, 60) // rotations, each with retention
			l.Close()
			if strings.Contains(logs.String(), "decision_log_gap") {
				t.Errorf("retention stopped at a compressed segment:\n%.800s", logs.String())
			}
			files := segmentFiles(t, f.dir)
			for _, n := range files {
				if isCompressed(n) {
					t.Errorf("compressed segment %s never removed (files %v)", n, files)
				}
			}
			if after, _ := listScanSegments(f.dir); len(after) > f.cfg.RetainSegments+1 {
				t.Errorf("%d segments left, retain_segments %d: %v", len(after), f.cfg.RetainSegments, files)
			}
			if rep := f.verify(t); !rep.OK() {
				t.Errorf("verify: %s %+v", kindsOf(rep), rep.Problems)
			}
			checkRetentionRecords(t, f.dir)
		})
	}
}

// TestVerifyReadsCompressedSegments: verify reads a gzipped segment as the segment it is: an
// intact log verifies with its records counted once (a segment in both forms is one), an
// edited record inside a .gz is found, and a truncated .gz is a finding naming it, not an I/O
// error (its records are missing from the chain).
func TestVerifyReadsCompressedSegments(t *testing.T) {
	f := newFixture(t)
	f.cfg.SegmentMaxBytes = 4096
	f.cfg.PreallocateBytes = -1
	l := f.open(t)
	appendN(t, l, 0, 20)
	l.Close()
	plain := f.verify(t)
	if !plain.OK() {
		t.Fatalf("precondition: %+v", plain.Problems)
	}
	segs, _ := listSegments(f.dir)
	if len(segs) < 4 {
		t.Fatalf("want >= 4 segments, got %v", segs)
	}
	gzipSegment(t, filepath.Join(f.dir, segs[0].name), false, 0)
	gzipSegment(t, filepath.Join(f.dir, segs[1].name), true, 0)
	rep := f.verify(t)
	if !rep.OK() || rep.Records != plain.Records || rep.Segments != plain.Segments || rep.FirstSeq != 0 {
		t.Fatalf("verify with compressed segments: %s %+v, %d records in %d segments from %d, want %d in %d from 0",
			kindsOf(rep), rep.Problems, rep.Records, rep.Segments, rep.FirstSeq, plain.Records, plain.Segments)
	}

	// An edited record in a compressed segment.
	path := filepath.Join(f.dir, segs[2].name)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, bytes.Replace(raw, []byte(`"outcome":"allow"`), []byte(`"outcome":"deny"`), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	gzipSegment(t, path, false, 0)
	if rep := f.verify(t); !strings.Contains(kindsOf(rep), ProblemModified) {
		t.Errorf("an edited record in %s.gz: %s", segs[2].name, kindsOf(rep))
	}

	// A truncated one.
	gzipSegment(t, filepath.Join(f.dir, segs[3].name), false, 30)
	rep, err = Verify(f.dir, VerifyOptions{PublicKeys: f.pub})
	if err != nil {
		t.Fatalf("a truncated .gz is a finding, not an error: %v", err)
	}
	found := false
	for _, p := range rep.Problems {
		found = found || (p.Kind == ProblemMalformed && strings.Contains(p.Message, segs[3].name+gzSuffix))
	}
	if !found {
		t.Errorf("a truncated .gz is not reported: %s %+v", kindsOf(rep), rep.Problems)
	}
}

// TestRecoveryContinuesAfterCompressedLastSegment: with every segment of a stopped log
// compressed, the writer continues the chain after the last one in a new plain segment,
// instead of starting a second log at seq 0 beside the .gz files.
func TestRecoveryContinuesAfterCompressedLastSegment(t *testing.T) {
	f := newFixture(t)
	f.cfg.SegmentMaxBytes = 4096
	f.cfg.PreallocateBytes = -1
	l := f.open(t)
	appendN(t, l, 0, 10)
	l.Close()
	before := f.verify(t)
	segs, _ := listSegments(f.dir)
	for _, s := range segs {
		gzipSegment(t, filepath.Join(f.dir, s.name), false, 0)
	}
	l = f.open(t)
	appendN(t, l, 10, 3)
	l.Close()
	rep := f.verify(t)
	if !rep.OK() || rep.FirstSeq != 0 || rep.LastSeq <= before.LastSeq || rep.Decisions != 13 {
		t.Fatalf("after reopening a compressed log: %s %+v, seq %d..%d, %d decisions", kindsOf(rep), rep.Problems, rep.FirstSeq, rep.LastSeq, rep.Decisions)
	}
	if plain, _ := listSegments(f.dir); len(plain) == 0 || plain[0].first != before.LastSeq+1 {
		t.Errorf("new plain segments %v, want the first at %d", plain, before.LastSeq+1)
	}
}
