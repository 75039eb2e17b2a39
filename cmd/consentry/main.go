// Command consentry is the consentry sidecar and its tooling (eval, test, run, audit, bundle,
// keys, consent, replay). All logic lives in sidecar/cli; main stays thin.
package main

import (
	"os"

	"github.com/consentry/consentry/sidecar/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], &cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}))
}
