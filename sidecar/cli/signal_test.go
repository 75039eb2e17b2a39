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
	if os.Getenv(signalHelperEnv) != "1" {
		return
	}
	ctx, stop := signalContext()
	defer stop()
	os.Stdout.WriteString("ready\n")
	<-ctx.Done()
	os.Stdout.WriteString("draining\n")
	time.Sleep(30 * time.Second) // a drain far longer than the test waits
	os.Exit(0)
}

// The first SIGTERM starts a graceful stop; a second one, sent while that stop is still
// draining, ends the process at once (it used to be swallowed until the drain ended).
func TestSecondSignalExitsAtOnce(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), signalHelperEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := bufio.NewScanner(out)
	expect := func(want string) {
		t.Helper()
		if !lines.Scan() || lines.Text() != want {
			t.Fatalf("helper said %q (%v), want %q", lines.Text(), lines.Err(), want)
		}
	}
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
