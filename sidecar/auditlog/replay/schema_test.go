package replay

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/consentry/consentry/sidecar/auditlog"
)

// TestRecordsMatchSchema validates every record of real logs (decisions, checkpoints; the
// pipeline's, with a public route and a list filtered per record) against
// policies/schema/decision_log_event.json with OPA's JSON Schema validator.
func TestRecordsMatchSchema(t *testing.T) {
	raw, err := os.ReadFile(policyDir + "/schema/decision_log_event.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	pq, err := rego.New(rego.Query("x := json.match_schema(input.doc, input.schema)")).PrepareForEval(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, dir := range []string{recordLog(t, 5), pipelineLog(t)} {
		err = auditlog.ScanLines(dir, func(_ string, line []byte) error {
			var doc any
			if err := json.Unmarshal(line, &doc); err != nil {
				return err
			}
			rs, err := pq.Eval(context.Background(), rego.EvalInput(map[string]any{"doc": doc, "schema": schema}))
			if err != nil {
				return err
			}
			res := rs[0].Bindings["x"].([]any)
			if res[0] != true {
				t.Errorf("record does not match the schema: %v\n%s", res[1], line)
			}
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if n < 13 {
		t.Fatalf("%v (%d records)", err, n)
	}
}
