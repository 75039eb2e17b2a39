package engine

import (
	"fmt"
	"sort"

	"github.com/open-policy-agent/opa/v1/ast"
)

// customRoot is where policy authors' own packages live. The library adds the `deny` and
// `record_deny[customer_id]` rules of each package consentry.custom.<name> to its own
// reasons (policies/consentry/decision.rego); a rule of another shape, or one in a deeper
// package, would load and never be consulted, so it is refused when the policy is compiled.
var customRoot = ast.MustParseRef("data.consentry.custom")

// checkCustomRules refuses deny and record_deny rules under consentry.custom that the library
// cannot read: in a package below consentry.custom.<name>; a deny that is neither a set
// (deny contains reason) nor a boolean (deny if ...); a record_deny not keyed by customer id.
func checkCustomRules(modules map[string]*ast.Module) error {
	var errs []string
	for _, m := range modules {
		if !m.Package.Path.HasPrefix(customRoot) {
			continue
		}
		nested := len(m.Package.Path) != len(customRoot)+1
		for _, r := range m.Rules {
			ref := r.Head.Ref()
			if len(ref) == 0 {
				continue
			}
			name, ok := ref[0].Value.(ast.Var)
			if !ok || (name != "deny" && name != "record_deny") {
				continue
			}
			var why string
			switch {
			case nested:
				why = fmt.Sprintf("%s must be in a package consentry.custom.<name>, not %s", name, m.Package.Path)
			case name == "deny" && !denyShapeOK(r):
				why = "deny must be a set (deny contains reason if ...) or a boolean (deny if ...)"
			case name == "record_deny" && (len(r.Head.Args) > 0 || len(ref) != 2 || r.Head.RuleKind() != ast.MultiValue):
				why = "record_deny must be keyed by customer id: record_deny[customer_id] contains reason if ..."
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

// denyShapeOK: `deny contains reason if ...`, or a boolean `deny if ...` / `default deny :=
// false`. A deny bound to an object, string or array would never deny.
func denyShapeOK(r *ast.Rule) bool {
	if len(r.Head.Args) > 0 || len(r.Head.Ref()) != 1 {
		return false
	}
	if r.Head.RuleKind() == ast.MultiValue {
		return true
	}
	_, isBool := r.Head.Value.Value.(ast.Boolean)
	return isBool
}
