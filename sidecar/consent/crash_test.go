package consent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestCrashKeepsAcknowledged kills a writer process with SIGKILL in the middle of a stream
// of writes: every event it acknowledged is in the ledger afterwards.
func TestCrashKeepsAcknowledged(t *testing.T) {
	if raw := os.Getenv("CONSENTRY_CRASH_CHILD"); raw != "" {
		crashChild(raw)
		return
	}
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t, backend)
			raw, _ := json.Marshal(cfg)
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashKeepsAcknowledged$", "-test.count=1")
			cmd.Env = append(os.Environ(), "CONSENTRY_CRASH_CHILD="+string(raw))
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var acked []string
			sc := bufio.NewScanner(out)
			deadline := time.AfterFunc(60*time.Second, func() { _ = cmd.Process.Kill() })
			for sc.Scan() && len(acked) < 200 {
				if id, ok := strings.CutPrefix(sc.Text(), "ack "); ok {
					acked = append(acked, id)
				}
			}
			deadline.Stop()
			_ = cmd.Process.Kill() // SIGKILL: no clean shutdown, no deferred close
			_ = cmd.Wait()
			if len(acked) < 200 {
				t.Fatalf("child acknowledged only %d events", len(acked))
			}
			s := openStore(t, cfg, Options{})
			h, err := s.History(context.Background(), "crash")
			if err != nil {
				t.Fatal(err)
			}
			have := map[string]bool{}
			for _, e := range h {
				have[e.EventID] = true
			}
			for _, id := range acked {
				if !have[id] {
					t.Fatalf("acknowledged event %s lost in the crash (%d in ledger)", id, len(h))
				}
			}
			t.Logf("%d acknowledged, %d in the ledger after SIGKILL", len(acked), len(h))
		})
	}
}

// crashChild writes grants/withdrawals forever, printing "ack ID" after each returns.
func crashChild(raw string) {
	var cfg Config
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		panic(err)
	}
	s, err := Open(context.Background(), cfg, Options{Logger: quietLogger(), NoBackground: true})
	if err != nil {
		panic(err)
	}
	for i := 0; ; i++ {
		in := grantInput("crash", "analytics.reporting")
		in.EventID = fmt.Sprintf("crash-%d", i)
		if i%2 == 1 {
			_, err = s.Withdraw(context.Background(), ConsentInput{EventID: in.EventID, CustomerID: "crash", Purpose: in.Purpose}, "child")
		} else {
			_, err = s.Grant(context.Background(), in, "child")
		}
		if err != nil {
			panic(err)
		}
		fmt.Printf("ack %s\n", in.EventID)
	}
}
