package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/consentry/consentry/sidecar/app"
	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/config"
)

func init() {
	c := &Command{
		Name:    "run",
		Summary: "start the sidecar (front doors, admin listener) from a configuration file",
		Usage:   "--config FILE [--check]",
	}
	c.Run = func(ctx context.Context, env *Env, args []string) error {
		fs := NewFlags(c, env)
		path := fs.String("config", "consentry.yaml", "configuration file")
		check := fs.Bool("check", false, "validate the configuration, verify and compile a local policy source, then exit")
		level := fs.String("log-level", "info", "log level: debug, info, warn, error")
		if err := ParseFlags(fs, args); err != nil {
			return err
		}
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(*level)); err != nil {
			return Usagef("--log-level: %v", err)
		}
		log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
		cfg, err := config.Load(*path)
		if err != nil {
			return Exit(ExitConfig, err)
		}
		var opts []app.Option
		if *check {
			opts = append(opts, app.CheckOnly())
		}
		a, err := app.New(ctx, cfg, log, opts...)
		if err != nil && ctx.Err() != nil {
			// Stopped (SIGTERM/SIGINT) while starting: a graceful stop, not a configuration
			// error a supervisor or a reader would go looking for.
			log.Info("stopped during start-up", "cause", err)
			return nil
		}
		if err != nil {
			if ce := compileOrError(err); ce != err {
				return ce
			}
			// A section's Validate error names its dotted key: point at the file's line.
			return Exit(ExitConfig, cfg.KeyError(err))
		}
		if *check {
			defer a.Close()
			return checkRun(ctx, env, a)
		}
		return a.Run(ctx)
	}
	Register(c)
}

// checkRun finishes `run --check`. Assembly has validated the configuration, opened the
// decision log and state store, and compiled a local policy directory; a local bundle
// (policy.file, or a bundle directory) is verified and compiled here. What needs the network
// (a policy.url, the Vault login, a jwks_url) is left to readiness once the sidecar runs.
func checkRun(ctx context.Context, env *Env, a *app.App) error {
	ab, err := a.Bundles.CheckLocalSource(ctx)
	if err != nil {
		return policyCheckError(err)
	}
	if ab == nil {
		fmt.Fprintln(env.Stdout, "configuration OK; the policy.url bundle is not fetched by --check: /ready reports it once the sidecar runs")
		return nil
	}
	signed := "unsigned"
	if ab.Signed {
		signed = fmt.Sprintf("signed, key %q", ab.KeyID)
	}
	fmt.Fprintf(env.Stdout, "configuration and policies OK: %s, revision %q (%s)\n", ab.Source, ab.Revision, signed)
	return nil
}

// policyCheckError maps a refused policy source to the CLI's exit codes: 6 when a signature
// or the files it covers do not verify, 3 when the policies do not compile, 5 otherwise (an
// unreadable or malformed source is a configuration problem).
func policyCheckError(err error) error {
	switch bundle.ReasonOf(err) {
	case bundle.ReasonSignatureMissing, bundle.ReasonSignatureInvalid, bundle.ReasonScopeMismatch,
		bundle.ReasonExtraFile, bundle.ReasonMissingFile, bundle.ReasonHashMismatch:
		return Exit(ExitVerifyFailed, err)
	}
	if ce := compileOrError(err); ce != err {
		return ce
	}
	return Exit(ExitConfig, err)
}
