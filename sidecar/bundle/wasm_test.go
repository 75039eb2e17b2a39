package bundle_test

import (
	"testing"

	"github.com/consentry/consentry/sidecar/bundle"
)

// OPA evaluates a bundle's wasm module (or IR plan) in place of its Rego for the entrypoints
// its manifest resolves; consentry evaluates the Rego only. Such a bundle would decide one
// way under `opa run` and another under the sidecar, so it is refused as unsupported.
func TestWasmAndPlanBundlesAreUnsupported(t *testing.T) {
	const rego = "package consentry\n\ndecision := {}\n"
	const wasm = "\x00asm\x01\x00\x00\x00"
	tests := []struct {
		name  string
		files [][2]string
		want  string
	}{
		{"wasm module", [][2]string{
			{"/.manifest", `{"revision":"1","roots":["consentry"]}`},
			{"/consentry/p.rego", rego},
			{"/policy.wasm", wasm},
		}, bundle.ReasonUnsupported},
		{"wasm module with a resolver", [][2]string{
			{"/.manifest", `{"revision":"1","roots":["consentry"],"wasm":[{"entrypoint":"consentry/decision","module":"/policy.wasm"}]}`},
			{"/consentry/p.rego", rego},
			{"/policy.wasm", wasm},
		}, bundle.ReasonUnsupported},
		{"plan file", [][2]string{
			{"/.manifest", `{"revision":"1","roots":["consentry"]}`},
			{"/consentry/p.rego", rego},
			{"/plan.json", `{"static":{},"plans":{"plans":[]},"funcs":{"funcs":[]}}`},
		}, bundle.ReasonUnsupported},
		{"rego only", [][2]string{
			{"/.manifest", `{"revision":"1","roots":["consentry"]}`},
			{"/consentry/p.rego", rego},
		}, ""},
	}
	v, err := bundle.NewVerifier(bundle.VerificationConfig{}, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.ReadTarball(tarGzFiles(t, tc.files))
			if bundle.ReasonOf(err) != tc.want || (tc.want == "" && err != nil) {
				t.Fatalf("got %v (reason %q), want %q", err, bundle.ReasonOf(err), tc.want)
			}
		})
	}
}
