package input

import (
	"sync"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Strings that recur from request to request (statuses, channels, methods, subject types,
// actions, and - once registered with Intern - the catalogue's purposes, roles and field
// names) are converted to one shared, pre-boxed ast.String each, so ToValue does not allocate
// for them. OPA treats values as immutable, so sharing them between evaluations is safe.

// maxInterned bounds the table: Intern stops adding strings beyond it.
const maxInterned = 4096

var (
	internMu sync.Mutex
	interned atomic.Pointer[map[string]ast.Value]
)

func init() {
	m := map[string]ast.Value{}
	for _, s := range []string{
		// consent and case statuses, consent channels
		"granted", "withdrawn", "expired", "open", "closed", "pending",
		"web", "app", "phone", "sms", "email", "paper", "in_person", "api",
		// subject types, auth methods, resource type, phases
		SubjectEmployee, SubjectService, SubjectCustomer, SubjectProcessor, "jwt", "mtls", "oidc", "api_key",
		"customer", "request", "response",
		// actions and HTTP methods
		"read", "list", "create", "update", "delete", "export",
		"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
		// front doors
		"cli", "http", "envoy", "grpc", "proxy",
	} {
		m[s] = ast.String(s)
	}
	interned.Store(&m)
}

// Intern registers strings that recur in inputs (e.g. a policy's catalogue purposes, roles and
// field names). It is safe to call concurrently with ToValue; at most maxInterned strings are
// kept in all.
func Intern(ss []string) {
	internMu.Lock()
	defer internMu.Unlock()
	old := *interned.Load()
	add := 0
	for _, s := range ss {
		if _, ok := old[s]; !ok {
			add++
		}
	}
	if add == 0 {
		return
	}
	m := make(map[string]ast.Value, len(old)+add)
	for k, v := range old {
		m[k] = v
	}
	for _, s := range ss {
		if len(m) >= maxInterned {
			break
		}
		if _, ok := m[s]; !ok {
			m[s] = ast.String(s)
		}
	}
	interned.Store(&m)
}

// str is ast.String(s), shared when s is interned.
func str(s string) ast.Value {
	if v, ok := (*interned.Load())[s]; ok {
		return v
	}
	return ast.String(s)
}
