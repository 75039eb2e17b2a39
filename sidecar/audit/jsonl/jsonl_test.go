package jsonl

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/decision"
)

func TestAppendConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	s, err := Open(path, true)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := &audit.Entry{DecisionID: "d", Timestamp: time.Now(), Path: "consentry/decision",
				Decision: decision.Deny(403, "x", "y"), Bundles: map[string]string{"main": "r1"}}
			if err := s.Append(context.Background(), e); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(path)
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %d: %v", n, err)
		}
		if ev["bundles"].(map[string]any)["main"].(map[string]any)["revision"] != "r1" || ev["result"].(map[string]any)["status"].(float64) != 403 {
			t.Fatalf("event %v", ev)
		}
		n++
	}
	if n != 50 {
		t.Fatalf("%d lines", n)
	}
	if err := s.Append(context.Background(), &audit.Entry{}); err != ErrClosed {
		t.Fatalf("append after close: %v", err)
	}
}

type failing struct{}

func (failing) Write([]byte) (int, error) { return 0, os.ErrClosed }

func TestWriteErrorSurfaces(t *testing.T) {
	if err := New(failing{}).Append(context.Background(), &audit.Entry{}); err == nil {
		t.Fatal("write error swallowed")
	}
}
