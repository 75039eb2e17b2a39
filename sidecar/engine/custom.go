package engine

import (
	"fmt"
	"sort"

	"github.com/open-policy-agent/opa/v1/ast"
)

// customRoot is where policy authors' own packages live. The library adds the `deny` and
// `record_deny[customer_id]` sets it finds there to its own reasons (policies/consentry/
// decision.rego); a rule of another shape would load and never be consulted, so it is
// refused when the policy is compiled.
var customRoot = ast.MustParseRef("data.consentry.custom")

// checkCustomRules refuses deny and record_deny rules under consentry.custom that the library
// cannot read: functions, a deny below the package level, or a record_deny not keyed by
// customer id.
func checkCustomRules(modules map[string]*ast.Module) error {
	var errs []string
	for _, m := range modules {
		if !m.Package.Path.HasPrefix(customRoot) {
			continue
		}
		for _, r := range m.Rules {
			ref := r.Head.Ref()
			if len(ref) == 0 {
				continue
			}
			name, ok := ref[0].Value.(ast.Var)
			if !ok {
				continue
			}
			var why string
			switch string(name) {
			case "deny":
				if len(r.Head.Args) > 0 || len(ref) > 1 {
					why = "deny must be a set (deny contains reason if ...) or a boolean (deny if ...)"
				}
			case "record_deny":
				if len(r.Head.Args) > 0 || len(ref) != 2 || r.Head.RuleKind() != ast.MultiValue {
					why = "record_deny must be keyed by customer id: record_deny[customer_id] contains reason if ..."
				}
			}
			if why != "" {
				errs = append(errs, fmt.Sprintf("%s: %s, or the library never consults it (docs/policy-input.md)", r.Location, why))
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	sort.Strings(errs)
	return &CompileError{Errs: errs}
}
