package cli

import (
	"context"
	"fmt"
	"runtime/debug"
)

// Version is set at build time with -ldflags "-X github.com/consentry/consentry/sidecar/cli.Version=...".
var Version = "dev"

func init() {
	Register(&Command{
		Name:    "version",
		Summary: "print the consentry version, Go version and OPA version",
		Run: func(_ context.Context, env *Env, _ []string) error {
			opa := "unknown"
			goVersion := "unknown"
			if bi, ok := debug.ReadBuildInfo(); ok {
				goVersion = bi.GoVersion
				for _, d := range bi.Deps {
					if d.Path == "github.com/open-policy-agent/opa" {
						opa = d.Version
					}
				}
			}
			fmt.Fprintf(env.Stdout, "consentry %s (go %s, opa %s)\n", Version, goVersion, opa)
			return nil
		},
	})
}
