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

// checkCustomRules refuses deny and record_deny rules under data.consentry.custom that the
// library cannot read. The rule's whole path counts (package path, then its head, which v1
// lets run over several keys: `y.deny`, or `custom.x.deny` in package consentry): a deny or
// record_deny anywhere but directly under consentry.custom.<name>; a deny that is neither a
// set (deny contains reason) nor a boolean (deny if ...); a record_deny not keyed by customer
// id.
func checkCustomRules(modules map[string]*ast.Module) error {
	var errs []string
	for _, m := range modules {
		for _, r := range m.Rules {
			if why := customRuleProblem(m.Package.Path, r); why != "" {
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

// customRuleProblem says what is wrong with rule r of package pkg ("" when nothing, or when
// it is not a deny or record_deny under consentry.custom).
func customRuleProblem(pkg ast.Ref, r *ast.Rule) string {
	head := r.Head.Ref()
	if len(head) == 0 {
		return ""
	}
	full := append(pkg.Copy(), head...)
	if v, ok := head[0].Value.(ast.Var); ok {
		full[len(pkg)] = ast.StringTerm(string(v))
	}
	if !full.HasPrefix(customRoot) {
		return ""
	}
	rest := full[len(customRoot):]
	at := -1
	for i, t := range rest {
		if s, ok := t.Value.(ast.String); ok && (s == "deny" || s == "record_deny") {
			at = i
			break
		}
	}
	if at < 0 {
		return ""
	}
	name := string(rest[at].Value.(ast.String))
	if _, ok := rest[0].Value.(ast.String); !ok || at != 1 {
		return fmt.Sprintf("%s must be a rule of a package consentry.custom.<name>, not at %s", name, full)
	}
	after := len(rest) - at - 1 // keys after deny/record_deny in the head
	switch {
	case len(r.Head.Args) > 0:
		return name + " must not be a function"
	case name == "deny" && (after != 0 || !denyShapeOK(r)):
		return "deny must be a set (deny contains reason if ...) or a boolean (deny if ...)"
	case name == "record_deny" && (after != 1 || r.Head.RuleKind() != ast.MultiValue):
		return "record_deny must be keyed by customer id: record_deny[customer_id] contains reason if ..."
	}
	return ""
}

// denyShapeOK: `deny contains reason if ...`, or a boolean `deny if ...` / `default deny :=
// false` (else branches included). A deny bound to an object, string or array would never
// deny.
func denyShapeOK(r *ast.Rule) bool {
	if r.Head.RuleKind() == ast.MultiValue {
		return true
	}
	for e := r; e != nil; e = e.Else {
		if _, ok := e.Head.Value.Value.(ast.Boolean); !ok {
			return false
		}
	}
	return true
}

// checkCustomData refuses data documents that would stand where the library reads a custom
// package's rules (data/consentry/custom/<name>/data.json with a deny or record_deny key):
// the library would read them as rules, deny everything, or fail every decision.
func checkCustomData(data map[string]any) error {
	consentry, _ := data["consentry"].(map[string]any)
	custom, _ := consentry["custom"].(map[string]any)
	var errs []string
	for name, pkg := range custom {
		doc, _ := pkg.(map[string]any)
		for _, k := range []string{"deny", "record_deny"} {
			if _, ok := doc[k]; ok {
				errs = append(errs, fmt.Sprintf("data.consentry.custom.%s.%s: a data document may not stand where the library reads a custom package's %s rule", name, k, k))
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	sort.Strings(errs)
	return &CompileError{Errs: errs}
}
