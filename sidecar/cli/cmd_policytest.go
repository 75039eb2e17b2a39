package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/verify"
)

func init() {
	c := &Command{
		Name:    "test",
		Summary: "run the policy directory's Rego tests and scenario files",
		Usage:   "[-v] [-run SUBSTRING] [--activation-timeout D] [PATH]  (PATH defaults to ./policies)",
	}
	c.Run = func(ctx context.Context, env *Env, args []string) error {
		fs := NewFlags(c, env)
		verbose := fs.Bool("v", false, "print passing tests too")
		run := fs.String("run", "", "only tests and scenarios whose name contains this")
		activation := addActivationTimeoutFlag(fs)
		if err := ParseFlags(fs, args); err != nil {
			return err
		}
		if err := checkLimits(nil, activation); err != nil {
			return err
		}
		dir := "policies"
		if fs.NArg() > 1 {
			return Usagef("at most one PATH")
		}
		if fs.NArg() == 1 {
			dir = fs.Arg(0)
		}
		rep, err := verify.Run(ctx, dir, verify.Options{Filter: *run, Engine: engine.Config{ActivationTimeout: *activation}})
		if err != nil {
			var ce *engine.CompileError
			if errors.As(err, &ce) || errors.Is(err, engine.ErrActivationTimeout) {
				return Exit(ExitCompile, err)
			}
			if errors.Is(err, verify.ErrScenarioFile) {
				return Exit(ExitTestsFailed, err)
			}
			return err
		}
		rep.Print(env.Stdout, *verbose)
		if n := rep.Failed(); n > 0 {
			return Exit(ExitTestsFailed, fmt.Errorf("%d test(s) failed", n))
		}
		return nil
	}
	Register(c)
}
