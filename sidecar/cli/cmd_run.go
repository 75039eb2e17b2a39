package cli

import (
	"context"
	"log/slog"
	"os"

	"github.com/consentry/consentry/sidecar/app"
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
		check := fs.Bool("check", false, "validate the configuration and policies, then exit")
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
		a, err := app.New(ctx, cfg, log)
		if err != nil {
			if ce := compileOrError(err); ce != err {
				return ce
			}
			return Exit(ExitConfig, err)
		}
		if *check {
			_ = a.Close()
			env.Stdout.Write([]byte("configuration and policies OK\n"))
			return nil
		}
		return a.Run(ctx)
	}
	Register(c)
}
