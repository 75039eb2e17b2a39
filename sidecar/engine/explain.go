package engine

import (
	"bytes"
	"context"
	"fmt"

	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/lineage"

	"github.com/consentry/consentry/sidecar/input"
)

// Explain modes.
const (
	ExplainNotes = "notes"
	ExplainFull  = "full"
)

// Explain evaluates like Decide and also returns a human-readable trace: "notes" keeps only
// trace() notes and the rules that produced them, "full" is the whole evaluation.
func (e *Engine) Explain(ctx context.Context, in *input.Input, mode string) (*Result, string, error) {
	if mode != ExplainNotes && mode != ExplainFull {
		return nil, "", fmt.Errorf("explain mode %q: want notes or full", mode)
	}
	buf := topdown.NewBufferTracer()
	res, err := e.decide(ctx, e.active.Load(), in, buf)
	var out bytes.Buffer
	events := *buf
	if mode == ExplainNotes {
		events = lineage.Notes(events)
	}
	topdown.PrettyTraceWithLocation(&out, events)
	if err != nil {
		if ce, ok := err.(*Error); ok {
			res.Decision = denyFor(ce)
		}
		return res, out.String(), err
	}
	return res, out.String(), nil
}
