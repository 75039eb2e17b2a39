// Package harness starts and stops the real processes that the end-to-end tests and the demo
// run: consentry, the demo CRM, Vault, HTTP collectors. Each process gets a free loopback port,
// its output goes to a log file, and Stop/Kill clean up. It is a normal package (not a _test
// file) because `consentry-demo` uses it too.
package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// FreePort returns a free TCP port on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// FreeAddr returns "127.0.0.1:<free port>".
func FreeAddr() (string, error) {
	p, err := FreePort()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", p), nil
}

// Proc is a started process.
type Proc struct {
	Name    string
	Cmd     *exec.Cmd
	LogPath string

	mu     sync.Mutex
	done   chan struct{}
	err    error
	logOut *os.File
}

// Start starts bin with args, env added to the current environment, output to logDir/name.log.
func Start(name, logDir, bin string, args []string, env ...string) (*Proc, error) {
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	// Run in the log directory: whatever a process writes to relative default paths (var/...)
	// lands next to its log, never in the source tree.
	cmd.Dir = logDir
	cmd.Stdout = f
	cmd.Stderr = f
	// Own process group: Stop signals the process and anything it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, LogPath: logPath, done: make(chan struct{}), logOut: f}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and waits up to 10 s, then SIGKILL.
func (p *Proc) Stop() error {
	if p == nil || p.Exited() {
		return nil
	}
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	return nil
}

// Kill sends SIGKILL (a crash) and waits for the exit.
func (p *Proc) Kill() {
	if p == nil || p.Exited() {
		return
	}
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Log returns the last n bytes of the process log (for failure messages).
func (p *Proc) Log(n int) string {
	raw, err := os.ReadFile(p.LogPath)
	if err != nil {
		return err.Error()
	}
	if len(raw) > n {
		raw = raw[len(raw)-n:]
	}
	return string(raw)
}

// WaitHTTP polls url until it answers with a status < 500 or the timeout passes. It fails fast
// when the process exits.
func (p *Proc) WaitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return nil
			}
		}
		if p != nil && p.Exited() {
			return fmt.Errorf("%s exited before %s answered; log:\n%s", p.Name, url, p.Log(2000))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %s did not answer within %s: %v", p.nameOr(), url, timeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WaitTCP polls addr until it accepts a connection.
func (p *Proc) WaitTCP(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if p != nil && p.Exited() {
			return fmt.Errorf("%s exited before %s accepted; log:\n%s", p.Name, addr, p.Log(2000))
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s: %s did not accept within %s", p.nameOr(), addr, timeout)
}

func (p *Proc) nameOr() string {
	if p == nil {
		return "process"
	}
	return p.Name
}

// RepoRoot walks up from the working directory to the directory holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if raw, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(raw), "module github.com/consentry/consentry\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root (go.mod of github.com/consentry/consentry) not found")
		}
		dir = parent
	}
}

// Build compiles the named main packages (e.g. "./cmd/consentry") into dir and returns their
// paths by base name. Go's build cache makes repeated builds cheap.
func Build(ctx context.Context, dir string, pkgs ...string) (map[string]string, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, pkg := range pkgs {
		name := filepath.Base(pkg)
		bin := filepath.Join(dir, name)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
		cmd.Dir = root
		if msg, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %w\n%s", pkg, err, msg)
		}
		out[name] = bin
	}
	return out, nil
}

// VaultBinary finds the Vault server binary: $CONSENTRY_VAULT_BIN, bin/vault in the repository,
// or vault on PATH. It never builds one (that is `make vault`).
func VaultBinary() (string, error) {
	if p := os.Getenv("CONSENTRY_VAULT_BIN"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if root, err := RepoRoot(); err == nil {
		p := filepath.Join(root, "bin", "vault")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("vault"); err == nil {
		return p, nil
	}
	return "", errors.New("no Vault server binary: run `make vault` (builds bin/vault from the Go module) or put vault on PATH")
}
