// Package cli implements the consentry command line. Each subcommand lives in its own file
// and registers itself, so capabilities (consent, audit, bundle, keys, ...) add commands
// without touching one another. cmd/consentry/main.go only calls Main.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// Exit codes. They are part of the CLI contract: CI scripts tell "policy does not compile"
// from "policy tests failed" from "you called me wrong".
const (
	ExitOK           = 0
	ExitFailure      = 1 // runtime error (I/O, unreachable service, ...)
	ExitUsage        = 2 // bad flags or arguments
	ExitCompile      = 3 // policies do not compile (parse, type-check against the schema, strict mode)
	ExitTestsFailed  = 4 // policy tests or scenarios failed
	ExitConfig       = 5 // configuration file invalid
	ExitVerifyFailed = 6 // audit log or bundle verification failed
	ExitChanged      = 7 // replay --fail-on-change found changed decisions
	ExitNotReplayed  = 8 // replay --fail-on-change replayed no decision (the candidate was not exercised)
)

// Exit codes of audit query and report for "this is not the data you think" (never "nothing
// recorded" about the wrong data).
const (
	ExitWrongKey = 9  // the pseudonym key is not the one the log's records were written with
	ExitNoLog    = 10 // the directory holds no decision log segment
)

// Command is one subcommand. Name may contain a space for nested commands ("audit verify").
type Command struct {
	Name    string
	Summary string
	// Usage is the argument synopsis shown in help, e.g. "--input FILE [--data DIR]".
	Usage string
	// Run executes the command. It returns an *ExitError to choose the exit code.
	Run func(ctx context.Context, env *Env, args []string) error
}

// Env is what a command may use instead of globals, so tests can run commands in-process.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// ExitError carries an exit code and message.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// Exit wraps err with an exit code.
func Exit(code int, err error) error {
	if err == nil {
		return nil
	}
	return &ExitError{Code: code, Err: err}
}

// Usagef returns a usage error.
func Usagef(format string, args ...any) error {
	return &ExitError{Code: ExitUsage, Err: fmt.Errorf(format, args...)}
}

var commands = map[string]*Command{}

// Register adds a command; called from init functions.
func Register(c *Command) {
	if _, dup := commands[c.Name]; dup {
		panic("cli: duplicate command " + c.Name)
	}
	commands[c.Name] = c
}

// Main runs the CLI and returns the process exit code.
func Main(args []string, env *Env) int {
	ctx, stop := signalContext(secondSignalExits(args))
	defer stop()
	return Run(ctx, args, env)
}

// secondSignalExits: only `run` lets a second signal end it at once, since its drain holds
// nothing that outlives the process. `demo` stops child processes (Vault, the demo CRM) in
// their own process groups on the way out; killed half-way, it would leave them running.
func secondSignalExits(args []string) bool { return len(args) > 0 && args[0] == "run" }

// signalContext is cancelled by the first SIGINT or SIGTERM (a graceful stop: `run` drains its
// listeners and closes the decision log). With secondSignalExits that first signal also
// restores the default handling, so a second one ends the process at once instead of waiting
// for the drain; without, later signals are caught and ignored until the command returns.
func signalContext(secondSignalExits bool) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if !secondSignalExits {
		return ctx, stop
	}
	go func() {
		<-ctx.Done()
		stop()
	}()
	return ctx, stop
}

// Run dispatches args to a command.
func Run(ctx context.Context, args []string, env *Env) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		printHelp(env.Stdout)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	cmd, rest := lookup(args)
	if cmd == nil {
		fmt.Fprintf(env.Stderr, "consentry: unknown command %q (run `consentry help`)\n", strings.Join(args[:min(2, len(args))], " "))
		return ExitUsage
	}
	err := cmd.Run(ctx, env, rest)
	if err == nil {
		return ExitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	code := ExitFailure
	var ee *ExitError
	if errors.As(err, &ee) {
		code = ee.Code
	}
	fmt.Fprintf(env.Stderr, "consentry %s: %v\n", cmd.Name, err)
	return code
}

// lookup finds the longest registered command name matching the leading args.
func lookup(args []string) (*Command, []string) {
	for n := min(3, len(args)); n > 0; n-- {
		if c, ok := commands[strings.Join(args[:n], " ")]; ok {
			return c, args[n:]
		}
	}
	return nil, nil
}

func printHelp(w io.Writer) {
	fmt.Fprintln(w, "consentry - policy-as-code authorization sidecar for CRM customer data")
	fmt.Fprintln(w, "\nUsage: consentry COMMAND [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := commands[n]
		fmt.Fprintf(w, "  %-22s %s\n", n, c.Summary)
	}
	fmt.Fprintln(w, "\nExit codes: 0 ok, 1 error, 2 usage, 3 policy does not compile, 4 policy tests failed,")
	fmt.Fprintln(w, "            5 invalid config, 6 verification failed, 7 replay found changes,")
	fmt.Fprintln(w, "            8 replay --fail-on-change replayed nothing")
}

// NewFlags returns a flag set that reports errors instead of exiting, with usage naming the command.
func NewFlags(c *Command, env *Env) *flag.FlagSet {
	fs := flag.NewFlagSet("consentry "+c.Name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, "Usage: consentry %s %s\n%s\n\nFlags:\n", c.Name, c.Usage, c.Summary)
		fs.PrintDefaults()
	}
	return fs
}

// ParseFlags parses args, mapping flag errors to usage errors.
func ParseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &ExitError{Code: ExitUsage, Err: err}
	}
	return nil
}

// writePrivate writes a file only its owner can read (it holds customer ids or access
// history), also when it existed with a looser mode; a failed write or close is an error,
// not a silently partial file.
func writePrivate(path string, write func(io.Writer) error) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
