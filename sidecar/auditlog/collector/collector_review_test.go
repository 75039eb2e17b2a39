package collector

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func gz(t *testing.T, body string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func postRaw(t *testing.T, url string, body []byte, gzipped bool) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/logs", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if gzipped {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// batchOf is a JSON array of events with these decision ids.
func batchOf(ids ...string) string {
	evs := make([]string, len(ids))
	for i, id := range ids {
		evs[i] = fmt.Sprintf(`{"decision_id":%q,"path":"consentry/decision","result":true}`, id)
	}
	return "[" + strings.Join(evs, ",") + "]"
}

func stats(t *testing.T, url string) Stats {
	t.Helper()
	resp, err := http.Get(url + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// storedIDs counts each decision id in the store file (lines that do not parse are skipped,
// as New does).
func storedIDs(t *testing.T, path string) map[string]int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ids := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev struct {
			ID string `json:"decision_id"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.ID != "" {
			ids[ev.ID]++
		}
	}
	return ids
}

func newTestServer(t *testing.T) (*Server, *httptest.Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.jsonl")
	s, err := New(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(func() { hs.Close(); s.out.Close() })
	return s, hs, path
}

// A batch rejected with 400 leaves no id marked seen, so the client's corrected resend of the
// valid events is stored in full (before, the ids before the bad event counted as duplicates
// and were lost).
func TestRejectedBatchMarksNothing(t *testing.T) {
	cases := []struct {
		name    string
		body    string
		gzipped bool
	}{
		{"event without decision_id last", `[{"decision_id":"a"},{"decision_id":"b"},{"path":"x"}]`, true},
		{"empty decision_id", `[{"decision_id":"a"},{"decision_id":"b"},{"decision_id":""}]`, true},
		{"event not an object", `[{"decision_id":"a"},{"decision_id":"b"},1]`, true},
		{"truncated array", `[{"decision_id":"a"},{"decision_id":"b"},{"decision_id":`, true},
		{"not an array", `{"decision_id":"a"}`, true},
		{"not gzip", `[{"decision_id":"a"},{"decision_id":"b"}]`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, hs, path := newTestServer(t)
			body := []byte(tc.body)
			if tc.gzipped {
				body = gz(t, tc.body)
			}
			req, _ := http.NewRequest(http.MethodPost, hs.URL+"/logs", bytes.NewReader(body))
			req.Header.Set("Content-Encoding", "gzip") // claims gzip also when it is not
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("malformed batch answered %d, want 400", resp.StatusCode)
			}
			if st := stats(t, hs.URL); st.Events != 0 || st.Duplicates != 0 {
				t.Fatalf("after a rejected batch: %+v, want nothing seen", st)
			}
			if code := postRaw(t, hs.URL, gz(t, batchOf("a", "b")), true); code != http.StatusNoContent {
				t.Fatalf("resend answered %d", code)
			}
			if st := stats(t, hs.URL); st.Events != 2 || st.Duplicates != 0 {
				t.Fatalf("after the resend: %+v, want 2 events, 0 duplicates", st)
			}
			if ids := storedIDs(t, path); ids["a"] != 1 || ids["b"] != 1 || len(ids) != 2 {
				t.Fatalf("stored %v, want a and b once", ids)
			}
		})
	}
}

// A store that cannot be written or fsynced answers 500 and marks nothing seen; once it works
// again the client's resend is stored (before, a failed write was answered 204 and a failed
// fsync left the ids marked seen: both lost the events). The faults are real: descriptors
// that refuse writes, a full device, a pipe that cannot be fsynced.
func TestStoreFailureAnswers500(t *testing.T) {
	cases := []struct {
		name  string
		fault func(t *testing.T, path string) *os.File
	}{
		{"read-only descriptor", func(t *testing.T, path string) *os.File {
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}},
		{"closed descriptor", func(t *testing.T, path string) *os.File {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
			return f
		}},
		{"device full", func(t *testing.T, _ string) *os.File {
			f, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
			if err != nil {
				t.Fatal("/dev/full (a device that is always full) is needed for this fault:", err)
			}
			return f
		}},
		{"fsync fails", func(t *testing.T, _ string) *os.File {
			r, w, err := os.Pipe() // writes succeed into the pipe's buffer, fsync fails (EINVAL)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			return w
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, hs, path := newTestServer(t)
			if code := postRaw(t, hs.URL, gz(t, batchOf("a", "b")), true); code != http.StatusNoContent {
				t.Fatalf("first batch answered %d", code)
			}
			bad := tc.fault(t, path)
			s.mu.Lock()
			good := s.out
			s.out = bad
			s.mu.Unlock()
			if code := postRaw(t, hs.URL, gz(t, batchOf("b", "c", "d")), true); code != http.StatusInternalServerError {
				t.Fatalf("batch to a failing store answered %d, want 500", code)
			}
			if st := stats(t, hs.URL); st.Events != 2 || st.Duplicates != 0 {
				t.Fatalf("after the failure: %+v, want 2 events (a, b), 0 duplicates", st)
			}
			s.mu.Lock()
			s.out = good
			s.mu.Unlock()
			bad.Close()
			if code := postRaw(t, hs.URL, gz(t, batchOf("b", "c", "d")), true); code != http.StatusNoContent {
				t.Fatalf("resend answered %d", code)
			}
			if st := stats(t, hs.URL); st.Events != 4 || st.Duplicates != 1 {
				t.Fatalf("after the resend: %+v, want 4 events, 1 duplicate (b)", st)
			}
			ids := storedIDs(t, path)
			for _, id := range []string{"a", "b", "c", "d"} {
				if ids[id] != 1 {
					t.Fatalf("stored %v, want a..d once each", ids)
				}
			}
			// A restarted collector reads the same store back.
			s2, err := New(path, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer s2.out.Close()
			if len(s2.seen) != 4 {
				t.Fatalf("reloaded %d ids, want 4", len(s2.seen))
			}
		})
	}
}

// TestTornTailAfterRestart: a store that ends in part of a line (the collector killed mid
// write) is reopened knowing it: the next batch starts on a new line and its events are not
// glued to the torn one (and lost at the next restart).
func TestTornTailAfterRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	if err := os.WriteFile(path, []byte(`{"decision_id":"a","result":true}`+"\n"+`{"decision_id":"b","res`), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := New(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	if code := postRaw(t, hs.URL, gz(t, batchOf("c", "d")), true); code != http.StatusNoContent {
		t.Fatalf("POST: %d", code)
	}
	hs.Close()
	s.out.Close()
	s2, err := New(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.out.Close()
	if !s2.seen["c"] || !s2.seen["d"] {
		t.Fatalf("acknowledged ids after restart: c=%v d=%v (stored %v)", s2.seen["c"], s2.seen["d"], storedIDs(t, path))
	}
}
