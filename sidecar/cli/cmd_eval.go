package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/verify"
)

func init() {
	c := &Command{
		Name:    "eval",
		Summary: "evaluate one input document and print the decision (and the trace with --explain)",
		Usage:   "--input FILE|- [--policies DIR] [--data DIR] [--explain notes|full]",
	}
	c.Run = func(ctx context.Context, env *Env, args []string) error {
		fs := NewFlags(c, env)
		inPath := fs.String("input", "", "input document (JSON file, or - for stdin)")
		policies := fs.String("policies", "policies", "policy directory")
		data := fs.String("data", "", "policy data directory (default POLICIES/data)")
		explain := fs.String("explain", "", "print an evaluation trace: notes or full")
		if err := ParseFlags(fs, args); err != nil {
			return err
		}
		if *inPath == "" {
			return Usagef("--input is required")
		}
		if *explain != "" && *explain != engine.ExplainNotes && *explain != engine.ExplainFull {
			return Usagef("--explain must be notes or full, got %q", *explain)
		}
		// Read in the background: a read of stdin does not end on Ctrl-C, the command must.
		type read struct {
			in  *input.Input
			err error
		}
		got := make(chan read, 1)
		go func() {
			in, err := readInput(env, *inPath)
			got <- read{in, err}
		}()
		var in *input.Input
		select {
		case r := <-got:
			if r.err != nil {
				return Exit(ExitUsage, r.err)
			}
			in = r.in
		case <-ctx.Done():
			return ctx.Err()
		}
		ps, err := engine.LoadDir(*policies, engine.LoadOptions{DataDir: *data})
		if err != nil {
			return compileOrError(err)
		}
		eng := engine.New(engine.Config{Timeout: verify.OfflineTimeout}, slog.New(slog.NewTextHandler(env.Stderr, nil)))
		if err := eng.Load(ctx, ps); err != nil {
			return compileOrError(err)
		}
		var res *engine.Result
		var trace string
		if *explain != "" {
			res, trace, err = eng.Explain(ctx, in, *explain)
		} else {
			res, err = eng.Decide(ctx, in)
		}
		if trace != "" {
			fmt.Fprintln(env.Stderr, trace)
		}
		out := map[string]any{"decision": res.Decision, "revision": res.Revision, "eval_ns": res.EvalNS}
		if err != nil {
			out["error"] = err.Error()
		}
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if eerr := enc.Encode(out); eerr != nil {
			return eerr
		}
		if err != nil {
			// The decision printed is the fail-closed deny; the exit code says it was an error.
			return fmt.Errorf("evaluation failed: %w", err)
		}
		return nil
	}
	Register(c)
}

func compileOrError(err error) error {
	var ce *engine.CompileError
	if errors.As(err, &ce) {
		return Exit(ExitCompile, err)
	}
	return err
}

// readInput reads and strictly decodes an input document, reporting JSON errors with the
// line and column where they occur.
func readInput(env *Env, path string) (*input.Input, error) {
	raw, err := readFileOrStdin(env, path)
	if err != nil {
		return nil, fmt.Errorf("read input: %w", err)
	}
	in, err := verify.DecodeInput(raw)
	if err != nil {
		return nil, fmt.Errorf("input %s: %w", path, withPosition(raw, err))
	}
	return in, nil
}

// readFileOrStdin reads a file, or the command's stdin for "-".
func readFileOrStdin(env *Env, path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(env.Stdin)
	}
	return os.ReadFile(path)
}

// withPosition adds line:column to JSON syntax and type errors.
func withPosition(raw []byte, err error) error {
	var off int64 = -1
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &te):
		off = te.Offset
	}
	if off < 0 {
		return err
	}
	line, col := 1, 1
	for i := int64(0); i < off && i < int64(len(raw)); i++ {
		if raw[i] == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return fmt.Errorf("line %d, column %d: %w", line, col, err)
}
