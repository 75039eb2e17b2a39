package auditlog

import (
	"context"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/input"
)

// TestCopiesHoldNoRawCustomerID: a caller that sets the case id header or the purpose to a
// customer id (x-case-id: c-1001) or writes it into a justification never gets the raw id into
// the record: the input holds its pseudonym, and so do the top-level copies (purpose, case_id),
// which used to be taken before the replacement. Both encoders: without mask rules (typed) and
// with one (generic tree).
func TestCopiesHoldNoRawCustomerID(t *testing.T) {
	for _, masked := range []bool{false, true} {
		name := "typed"
		if masked {
			name = "generic"
		}
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			if masked {
				f.cfg.Mask = []MaskRule{{Op: MaskOpRemove, Path: "/input/request/path"}}
			}
			l := f.open(t)
			e := entry(t, 0)
			e.Input.CaseID = "c-1001"
			e.Input.Request.Headers["x-case-id"] = []string{"c-1001"}
			e.Input.Purpose = "support for c-1001"
			e.Input.BreakGlass = &input.BreakGlass{Justification: "ticket for c-1001"}
			if err := l.Append(context.Background(), e); err != nil {
				t.Fatal(err)
			}
			l.Close()
			p := f.pseudonym(t, "c-1001")
			n := 0
			_ = ScanEvents(f.dir, func(ev *Event, line []byte) error {
				if ev.Type != TypeDecision {
					return nil
				}
				n++
				if strings.Contains(string(line), "c-1001") {
					t.Errorf("raw customer id in the record: %s", line)
				}
				if ev.CaseID != p || ev.Purpose != "support for "+p {
					t.Errorf("copies case_id %q purpose %q, want the pseudonym %s", ev.CaseID, ev.Purpose, p)
				}
				return nil
			})
			if n != 1 {
				t.Fatalf("%d decisions", n)
			}
		})
	}
}
