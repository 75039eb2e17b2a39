package cli

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// signalHelperEnv makes the test binary play a process whose graceful stop takes long (a
// drain) instead of running tests.
const signalHelperEnv = "CONSENTRY_TEST_SIGNAL_HELPER"

func init() {
	switch os.Getenv(signalHelperEnv) {
	case "run":
		ctx, stop := signalContext(true)
		defer stop()
		os.Stdout.WriteString("ready\n")
		<-ctx.Done()
		os.Stdout.WriteString("draining\n")
		time.Sleep(30 * time.Second) // a drain far longer than the test waits
		os.Exit(0)
	case "demo":
		// demo's way out: stopping child processes that a killed parent would orphan.
		ctx, stop := signalContext(false)
		defer stop()
		os.Stdout.WriteString("ready\n")
		<-ctx.Done()
		os.Stdout.WriteString("draining\n")
		time.Sleep(1500 * time.Millisecond)
		os.Stdout.WriteString("children stopped\n")
		os.Exit(0)
	}
}

// TestSecondSignalDoesNotInterruptDemoCleanup: a second Ctrl-C while `demo` stops its Vault and
// demo CRM must not kill it half-way (the children, in their own process groups, would keep
// running with a known root token).
func TestSecondSignalDoesNotInterruptDemoCleanup(t *testing.T) {
	cmd, expect := startSignalHelper(t, "demo")
	expect("ready")
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	expect("draining")
	for range 3 {
		time.Sleep(100 * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGINT)
	}
	expect("children stopped")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper exited with %v, want 0 after its cleanup", err)
	}
}

// TestOnlyRunExitsOnASecondSignal: Main picks the handling by command.
func TestOnlyRunExitsOnASecondSignal(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{
		{[]string{"run", "--config", "c.yaml"}, true},
		{[]string{"demo"}, false},
		{[]string{"demo", "--exit"}, false},
		{[]string{"audit", "verify"}, false},
		{nil, false},
	} {
		if got := secondSignalExits(c.args); got != c.want {
			t.Errorf("secondSignalExits(%q) = %v, want %v", c.args, got, c.want)
		}
	}
}

// The first SIGTERM starts a graceful stop; a second one, sent while that stop is still
// draining, ends the process at once (it used to be swallowed until the drain ended).
func TestSecondSignalExitsAtOnce(t *testing.T) {
	cmd, expect := startSignalHelper(t, "run")
	expect("ready")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expect("draining")
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Signal delivery is asynchronous (the default handling is restored just after the first
	// signal is seen): repeat the second signal until the process ends or the test gives up.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case err := <-exited:
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("helper exited with %v, want killed by SIGTERM", err)
			}
			if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
				t.Fatalf("helper exited with %v, want killed by SIGTERM", err)
			}
			return
		case <-tick.C:
			_ = cmd.Process.Signal(syscall.SIGTERM)
		case <-deadline:
			t.Fatal("a second SIGTERM did not end the process while it was draining")
		}
	}
}

// startSignalHelper starts this test binary as the signal helper in mode (see init) and
// returns it with a check of its next line of output.
func startSignalHelper(t *testing.T, mode string) (*exec.Cmd, func(want string)) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), signalHelperEnv+"="+mode)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := bufio.NewScanner(out)
	return cmd, func(want string) {
		t.Helper()
		if !lines.Scan() || lines.Text() != want {
			t.Fatalf("helper said %q (%v), want %q", lines.Text(), lines.Err(), want)
		}
	}
}
