package input

import (
	"fmt"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

func TestInternSharesValues(t *testing.T) {
	Intern([]string{"marketing.communications.email", "support_agent"})
	for _, s := range []string{"granted", "marketing.communications.email", "support_agent", "not-interned"} {
		if got := str(s); got.Compare(ast.String(s)) != 0 {
			t.Errorf("str(%q) = %v", s, got)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = str("marketing.communications.email") }); n != 0 {
		t.Errorf("interned string: %v allocations, want 0", n)
	}
}

func TestInternIsBounded(t *testing.T) {
	ss := make([]string, maxInterned+10)
	for i := range ss {
		ss[i] = fmt.Sprintf("bounded-%d", i)
	}
	Intern(ss)
	if n := len(*interned.Load()); n > maxInterned {
		t.Errorf("%d interned strings, want at most %d", n, maxInterned)
	}
	if got := str("bounded-5000"); got.Compare(ast.String("bounded-5000")) != 0 {
		t.Errorf("str beyond the bound = %v", got)
	}
}
