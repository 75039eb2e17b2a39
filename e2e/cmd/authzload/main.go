// Command authzload is the ext_authz load generator (sidecar/envoy/loadgen) as its own
// process, the way Envoy calls consentry: the ext_authz latency benchmarks run it against
// consentry and a no-op server so that the generator does not share the server's Go runtime.
//
//	authzload -target 127.0.0.1:9191 -requests reqs.bin -rate 4000 -count 20000
package main

import (
	"fmt"
	"os"

	"github.com/consentry/consentry/sidecar/envoy/loadgen"
)

func main() {
	if err := loadgen.Main(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "authzload:", err)
		os.Exit(1)
	}
}
