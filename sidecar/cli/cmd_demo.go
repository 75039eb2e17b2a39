package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/consentry/consentry/sidecar/demo"
)

func init() {
	c := &Command{
		Name:    "demo",
		Summary: "start Vault, the demo CRM and consentry, and walk through what consentry enforces",
		Usage:   "[--exit] [--customers N] [--dir DIR] [--state sqlite|postgres --postgres-url URL]",
	}
	c.Run = func(ctx context.Context, env *Env, args []string) error {
		fs := NewFlags(c, env)
		exit := fs.Bool("exit", false, "stop after the tour instead of serving until Ctrl-C")
		customers := fs.Int("customers", 2000, "synthetic customers to seed into the CRM")
		dir := fs.String("dir", "", "working directory, emptied first (default var/demo)")
		backend := fs.String("state", "sqlite", "state backend: sqlite (embedded) or postgres")
		pgURL := fs.String("postgres-url", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "PostgreSQL URL for --state postgres")
		if err := ParseFlags(fs, args); err != nil {
			return err
		}
		out := env.Stdout
		fmt.Fprintln(out, "consentry demo: starting a real Vault, the demo CRM and consentry in front of it")
		st, err := demo.Start(ctx, demo.Options{Dir: *dir, Customers: *customers, StateBackend: *backend, PostgresURL: *pgURL, Progress: out})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// One clear line: the cause, not a stack trace.
			return fmt.Errorf("demo could not start: %w", err)
		}
		defer st.Close()
		tour := &demo.Tour{S: st, Out: out}
		terr := tour.Run(ctx)
		if errors.Is(terr, demo.ErrInterrupted) {
			return nil
		}
		if terr != nil {
			fmt.Fprintf(out, "\n%v\n", terr)
		} else {
			fmt.Fprintln(out, "\nEvery step behaved as narrated.")
		}
		if *exit {
			return terr
		}
		fmt.Fprint(out, demo.TryIt(st))
		<-ctx.Done()
		fmt.Fprintln(out, "\nstopping consentry, the CRM and Vault")
		return nil
	}
	Register(c)
}
