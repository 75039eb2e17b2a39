package replay

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/consentry/consentry/sidecar/auditlog"
)

// TestRecordsMatchSchema validates every record of a real log (decisions, checkpoints) against
// policies/schema/decision_log_event.json with OPA's JSON Schema validator.
func TestRecordsMatchSchema(t *testing.T) {
	dir := recordLog(t, 5)
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
	if err != nil || n < 7 {
		t.Fatalf("%v (%d records)", err, n)
	}
}
