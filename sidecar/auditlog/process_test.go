package auditlog

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/auditlog/collector"
)

// TestMain lets tests re-execute the test binary as a real child process: a log writer that
// is killed with SIGKILL, or the HTTP collector.
func TestMain(m *testing.M) {
	switch os.Getenv("AUDITLOG_CHILD") {
	case "writer":
		childWriter()
		return
	case "collector":
		if err := collector.Main(strings.Fields(os.Getenv("AUDITLOG_CHILD_ARGS"))); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	code := m.Run()
	if verifyFix != nil {
		// Built once per process by BenchmarkVerify (outlives each benchmark round).
		os.RemoveAll(filepath.Dir(verifyFix.cfg.Dir))
	}
	os.Exit(code)
}

// childWriter appends from 8 goroutines forever, printing each acknowledged decision id.
func childWriter() {
	var cfg Config
	if err := json.Unmarshal([]byte(os.Getenv("AUDITLOG_CHILD_CONFIG")), &cfg); err != nil {
		panic(err)
	}
	l, err := Open(cfg, Options{})
	if err != nil {
		panic(err)
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	in := loadInput(nil)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; ; i++ {
				e := entry(nil, i)
				e.Input = in
				e.DecisionID = fmt.Sprintf("g%d-%d", g, i)
				if err := l.Append(context.Background(), e); err != nil {
					panic(err)
				}
				mu.Lock()
				fmt.Fprintln(out, e.DecisionID)
				out.Flush() // the ack is visible only once durable
				mu.Unlock()
			}
		}(g)
	}
	wg.Wait()
}

func child(t *testing.T, mode string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{"AUDITLOG_CHILD=" + mode}, env...)...)
	cmd.Stderr = os.Stderr
	return cmd
}

func TestSIGKILLLosesNoAcknowledgedDecision(t *testing.T) {
	f := newFixture(t)
	cfgJSON, _ := json.Marshal(f.cfg)
	cmd := child(t, "writer", "AUDITLOG_CHILD_CONFIG="+string(cfgJSON))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]bool{}
	sc := bufio.NewScanner(stdout)
	killed := false
	for sc.Scan() {
		acked[sc.Text()] = true
		if len(acked) == 1500 && !killed {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	_ = cmd.Wait()
	if !killed {
		t.Fatalf("writer exited early after %d acks", len(acked))
	}
	// Restart: recovery, then a clean close.
	l := f.open(t)
	l.Close()
	rep := f.verify(t)
	if !rep.OK() {
		t.Fatalf("log after SIGKILL does not verify: %+v", rep.Problems)
	}
	found := loggedDecisions(t, f.dir)
	missing := 0
	for id := range acked {
		if !found[id] {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged decisions missing after SIGKILL", missing, len(acked))
	}
	t.Logf("acked %d, logged %d, records %d", len(acked), len(found), rep.Records)
}

func startCollector(t *testing.T, dir string, failFirst int) (*exec.Cmd, string) {
	t.Helper()
	addrFile := filepath.Join(dir, fmt.Sprintf("addr-%d", time.Now().UnixNano()))
	cmd := child(t, "collector", fmt.Sprintf("AUDITLOG_CHILD_ARGS=-listen 127.0.0.1:0 -out %s -fail-first %d -addr-file %s",
		filepath.Join(dir, "events.jsonl"), failFirst, addrFile))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(addrFile); err == nil {
			return cmd, string(b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("collector did not start")
	return nil, ""
}

func collectorStats(addr string) (collector.Stats, error) {
	var st collector.Stats
	resp, err := http.Get("http://" + addr + "/stats")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st, err
}

func waitEvents(t *testing.T, addr string, n int) collector.Stats {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var st collector.Stats
	for time.Now().Before(deadline) {
		var err error
		if st, err = collectorStats(addr); err == nil && st.Events >= n {
			return st
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("collector has %+v, want %d events", st, n)
	return st
}

func TestUploadToCollectorProcess(t *testing.T) {
	cdir := t.TempDir()
	coll, addr := startCollector(t, cdir, 2)
	f := newFixture(t)
	f.cfg.Upload = &UploadConfig{URL: "http://" + addr + "/logs", MaxEvents: 200, Interval: 50 * time.Millisecond,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	l := f.open(t)
	appendN(t, l, 0, 500)
	st := waitEvents(t, addr, 500)
	if st.Requests < 3+2 {
		t.Fatalf("expected retries after injected failures: %+v", st)
	}
	// Collector down: events stay spooled on disk and arrive after it comes back.
	_ = coll.Process.Kill()
	_ = coll.Wait()
	appendN(t, l, 500, 300)
	time.Sleep(200 * time.Millisecond)
	_, addr2 := startCollector(t, cdir, 0)
	// The new collector listens on a new port: reopen the log pointing at it (the cursor persists).
	l.Close()
	f.cfg.Upload.URL = "http://" + addr2 + "/logs"
	l = f.open(t)
	defer l.Close()
	st = waitEvents(t, addr2, 800)
	if st.Events != 800 {
		t.Fatalf("collector has %d unique events, want 800", st.Events)
	}
	b, _ := os.ReadFile(filepath.Join(cdir, "events.jsonl"))
	if strings.Contains(string(b), `"type":"checkpoint"`) || strings.Contains(string(b), "secret-token") {
		t.Fatal("collector received checkpoints or secrets")
	}
	// A cursor a power loss left empty does not keep the log from opening: the spool is
	// uploaded again from its start (the collector keeps one copy per decision id).
	l.Close()
	cursors, _ := filepath.Glob(filepath.Join(f.dir, "upload-*.cursor"))
	if len(cursors) != 1 {
		t.Fatalf("cursor files: %v", cursors)
	}
	for _, c := range cursors {
		if err := os.WriteFile(c, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	l = f.open(t)
	defer l.Close()
	appendN(t, l, 800, 10)
	if st = waitEvents(t, addr2, 810); st.Events != 810 {
		t.Fatalf("collector has %d unique events after the cursor was lost, want 810", st.Events)
	}
}
