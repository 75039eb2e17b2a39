// Command logcollector is a minimal OPA-compatible decision-log collector for tests and the
// demo: consentry's decision-log upload sink POSTs gzip JSON arrays to it; it deduplicates by
// decision_id and stores JSON lines. GET /stats reports counts.
package main

import (
	"fmt"
	"os"

	"github.com/consentry/consentry/sidecar/auditlog/collector"
)

func main() {
	if err := collector.Main(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "logcollector:", err)
		os.Exit(1)
	}
}
