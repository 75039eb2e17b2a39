package envoy

import (
	"context"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/normalize"
	"github.com/consentry/consentry/sidecar/pipeline"
)

// TestAuthzRefusesNonCanonicalPaths: Envoy forwards the caller's :path as it is, not the path
// the pipeline decided on. A spelling that is decided as an allowed path but reaches the CRM
// as another (trailing slash: a Go ServeMux subtree or a Django URLconf route it elsewhere;
// dot segments; needless escapes) is refused with 400 request.path_non_canonical, and logged.
func TestAuthzRefusesNonCanonicalPaths(t *testing.T) {
	rec := &recording{Checker: fx.Pipeline}
	c := serve(t, Config{}, rec)
	h := map[string]string{"authorization": "Bearer " + fx.Agent(), "x-purpose": support, "x-case-id": "case-7"}
	for _, path := range []string{
		"/api/customers/c-1001/",
		"/api/customers/c-1001/?expand=notes",
		"/api/customers/c-1001/notes/..",
		"/api/customers/./c-1001",
		"/api//customers/c-1001",
		"//api/customers/c-1001",
		"/api/customers/c%2D1001",
		"/api/customers/%63-1001",
	} {
		t.Run(path, func(t *testing.T) {
			resp := call(t, c, checkRequest("GET", path, h))
			d := asDenied(t, resp)
			if d.status != 400 || d.codes()[0] != normalize.ReasonPathNonCanonical || codes.Code(resp.GetStatus().GetCode()) != codes.PermissionDenied {
				t.Fatalf("%s: status %d codes %v", path, d.status, d.codes())
			}
			e := rec.find(d.body.DecisionID)
			if e == nil || e.out.Allowed() || e.enf.Status != 400 || e.out.Decision.Reasons[0].Code != normalize.ReasonPathNonCanonical {
				t.Fatalf("%s: not logged as the deny it was: %+v", path, e)
			}
		})
	}
	for _, path := range []string{"/api/customers/c-1001", "/api/customers/c-1001?expand=notes&q=a%2Db//c"} {
		if resp := call(t, c, checkRequest("GET", path, h)); resp.GetOkResponse() == nil {
			t.Errorf("canonical %s denied: %s", path, resp.GetDeniedResponse().GetBody())
		}
	}
}

// TestAuthzCanonicalSpellings: properly percent-encoded non-ASCII (either hex case) and raw
// sub-delimiters are canonical; a raw non-ASCII byte is not. The pipeline is replaced by one
// that allows every path, so only the door's check decides.
func TestAuthzCanonicalSpellings(t *testing.T) {
	c := serve(t, Config{}, allowAll{})
	for path, ok := range map[string]bool{
		"/api/customers/J%C3%BCrgen":  true,
		"/api/customers/J%c3%bcrgen":  true,
		"/odata/Customers('c-1')":     true,
		"/api/customers/Jürgen":       false,
		"/api/customers/J%C3%BCrgen/": false,
		"/api/customers/c%201":        true,
		"/api/customers/c%7E1":        false,
	} {
		resp := call(t, c, checkRequest("GET", path, nil))
		if got := resp.GetOkResponse() != nil; got != ok {
			t.Errorf("%s: allowed %v, want %v", path, got, ok)
		}
	}
}

// recording wraps a Checker and keeps what was recorded.
type recording struct {
	Checker
	mu      sync.Mutex
	entries []recorded
}

type recorded struct {
	out *pipeline.Outcome
	enf audit.Enforcement
}

func (r *recording) Record(ctx context.Context, out *pipeline.Outcome, enf audit.Enforcement) error {
	err := r.Checker.Record(ctx, out, enf)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entries = append(r.entries, recorded{out, enf})
	return err
}

func (r *recording) find(id string) *recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := slices.IndexFunc(r.entries, func(e recorded) bool { return e.out.DecisionID == id })
	if i < 0 {
		return nil
	}
	return &r.entries[i]
}

// allowAll allows every request.
type allowAll struct{}

func (allowAll) Check(context.Context, *pipeline.Request) *pipeline.Outcome {
	return &pipeline.Outcome{DecisionID: "01ALLOW", Status: 200, Input: &input.Input{},
		Decision: &decision.Decision{Allow: true, Status: 200, Fields: map[string]decision.Field{}}}
}

func (allowAll) Record(context.Context, *pipeline.Outcome, audit.Enforcement) error { return nil }
