package engine

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/routes"
)

const policyDir = "../../policies"

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// testConfig gives evaluations a generous deadline: under -race on a loaded 2-core CI machine a
// full-trace Explain or a swap storm can take far longer than the 50ms production default, and
// a timeout there would test the machine, not the engine (TestTimeoutDenies covers timeouts).
var testConfig = Config{Timeout: 10 * time.Second}

func loadLibrary(t testing.TB) *Engine {
	t.Helper()
	return loadLibraryFrom(t, policyDir)
}

// loadLibraryFrom loads the policy library in dir into a new engine.
func loadLibraryFrom(t testing.TB, dir string) *Engine {
	t.Helper()
	ps, err := LoadDir(dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := New(testConfig, quiet())
	if err := e.Load(context.Background(), ps); err != nil {
		t.Fatal(err)
	}
	return e
}

func exampleInput(t testing.TB) *input.Input {
	t.Helper()
	raw, err := os.ReadFile(policyDir + "/examples/support-read.json")
	if err != nil {
		t.Fatal(err)
	}
	var in input.Input
	if err := json.Unmarshal(raw, &in); err != nil {
		t.Fatal(err)
	}
	return &in
}

// minimal builds a PolicySet with one module defining data.consentry.decision.
func minimal(body string) *PolicySet {
	return &PolicySet{Modules: map[string]string{"p.rego": "package consentry\n\n" + body}, Revision: "test"}
}

func TestLibraryDecision(t *testing.T) {
	e := loadLibrary(t)
	res, err := e.Decide(context.Background(), exampleInput(t))
	if err != nil {
		t.Fatal(err)
	}
	d := res.Decision
	if !d.Allow || d.Status != 200 {
		t.Fatalf("want allow 200, got %v %d %v", d.Allow, d.Status, d.Reasons)
	}
	if got := d.Fields["payment.card_number"].Outcome; got != decision.OutcomeDeny {
		t.Errorf("card: want deny, got %s", got)
	}
	if !d.HasKeyScope("contact") || d.HasKeyScope("financial") || d.HasKeyScope("health") {
		t.Errorf("key scopes: %v", d.KeyScopes)
	}
	if res.Revision != "dev" {
		t.Errorf("revision %q", res.Revision)
	}
}

func TestFailClosed(t *testing.T) {
	ctx := context.Background()
	// rest completes a decision document (every required member but those a case sets), so
	// that each case fails on the check it names, not on a missing member.
	const rest = `"obligations": [], "headers": {}, "flags": []`
	cases := []struct {
		name   string
		policy string
		code   string
		// want is a substring of the error: the check that refused the decision.
		want string
	}{
		{"undefined decision", `other := 1`, decision.ReasonEngineUndefined, "undefined"},
		{"decision not an object", `decision := "allow"`, decision.ReasonEngineInvalid, "not an object"},
		{"allow not boolean", `decision := {"allow": "yes", "status": 200, "reasons": [], "fields": {}, "key_scopes": [], ` + rest + `}`, decision.ReasonEngineInvalid, "allow is string, not a boolean"},
		{"allow with deny status", `decision := {"allow": true, "status": 403, "reasons": [], "fields": {}, "key_scopes": [], ` + rest + `}`, decision.ReasonEngineInvalid, "allow with status 403"},
		{"deny without reason", `decision := {"allow": false, "status": 403, "reasons": [], "fields": {}, "key_scopes": [], ` + rest + `}`, decision.ReasonEngineInvalid, "deny without a reason"},
		{"bad field outcome", `decision := {"allow": true, "status": 200, "reasons": [], "fields": {"a": {"outcome": "maybe"}}, "key_scopes": [], ` + rest + `}`, decision.ReasonEngineInvalid, `outcome "maybe" is not allow, mask or deny`},
		{"mask without kind", `decision := {"allow": true, "status": 200, "reasons": [], "fields": {"a": {"outcome": "mask"}}, "key_scopes": [], ` + rest + `}`, decision.ReasonEngineInvalid, "fields.a.mask"},
		{"key scope no field needs", `decision := {"allow": true, "status": 200, "reasons": [], "fields": {"a": {"outcome": "deny", "key_scope": "health"}}, "key_scopes": ["health"], ` + rest + `}`, decision.ReasonEngineInvalid, `scope "health" released but no allowed field needs it`},
		{"conflicting values", "decision := 1 if input.action\n\ndecision := 2 if input.purpose", decision.ReasonEngineError, "conflict"},
		{"required member missing", `decision := {"allow": true, "status": 200, "reasons": [], "fields": {}, "key_scopes": [], "headers": {}, "flags": []}`, decision.ReasonEngineInvalid, "obligations missing"},
		{"builtin error is strict", `decision := {"allow": true, "status": time.parse_rfc3339_ns("not a time")}`, decision.ReasonEngineError, "parse_rfc3339_ns"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := New(testConfig, quiet())
			if err := e.Load(ctx, minimal(tc.policy)); err != nil {
				t.Fatalf("load: %v", err)
			}
			res, err := e.Decide(ctx, &input.Input{Action: "read", Purpose: "x"})
			if err == nil {
				t.Fatal("want an error")
			}
			if CodeOf(err) != tc.code {
				t.Errorf("code: want %s, got %s (%v)", tc.code, CodeOf(err), err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name the check (want %q)", err, tc.want)
			}
			if res.Decision == nil || res.Decision.Allow || res.Decision.Status < 400 {
				t.Fatalf("want a deny decision, got %+v", res.Decision)
			}
			if res.Decision.Reasons[0].Code != tc.code {
				t.Errorf("deny reason %s, want %s", res.Decision.Reasons[0].Code, tc.code)
			}
		})
	}
}

func TestNotReadyDenies(t *testing.T) {
	e := New(testConfig, quiet())
	res, err := e.Decide(context.Background(), &input.Input{})
	if CodeOf(err) != decision.ReasonEngineNotReady || res.Decision.Status != 503 || res.Decision.Allow {
		t.Fatalf("got %v %+v", err, res.Decision)
	}
}

func TestTimeoutDenies(t *testing.T) {
	e := New(Config{Timeout: 20 * time.Millisecond}, quiet())
	slow := `decision := {"allow": true, "status": 200} if {
	count([x | some x in numbers.range(1, 100000000)]) > 0
}`
	if err := e.Load(context.Background(), minimal(slow)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := e.Decide(context.Background(), &input.Input{})
	if CodeOf(err) != decision.ReasonEngineTimeout || res.Decision.Allow {
		t.Fatalf("want timeout deny, got %v %+v", err, res.Decision)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("evaluation ran %s past a 20ms timeout", el)
	}
}

func TestCallerDeadlineWins(t *testing.T) {
	e := loadLibrary(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := e.Decide(ctx, exampleInput(t))
	if err == nil || res.Decision.Allow {
		t.Fatalf("cancelled context must deny, got %v %+v", err, res.Decision)
	}
}

func TestCompileErrors(t *testing.T) {
	cases := []struct {
		name, module, want string
	}{
		{"parse error has file:line:col", "package consentry\n\ndecision := {", "p.rego:3:"},
		{"schema typo fails type check", "package consentry\n\n# METADATA\n# schemas:\n#   - input: schema.input\ndecision := input.purpse", "undefined ref: input.purpse"},
		{"http.send not allowed", "package consentry\n\ndecision := http.send({\"method\": \"get\", \"url\": \"http://x\"})", "undefined function http.send"},
		{"net.* not allowed", "package consentry\n\ndecision := net.lookup_ip_addr(\"example.com\")", "undefined function net.lookup_ip_addr"},
		{"opa.runtime not allowed", "package consentry\n\ndecision := opa.runtime()", "undefined function opa.runtime"},
		{"strict mode: unused import", "package consentry\n\nimport data.x\n\ndecision := 1", "import data.x unused"},
		{"rego v0 syntax rejected", "package consentry\n\ndecision { true }", "p.rego:3"},
	}
	schema, err := os.ReadFile(policyDir + "/schema/input.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(schema, &doc); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := New(testConfig, quiet())
			ps := &PolicySet{Modules: map[string]string{"p.rego": tc.module}, Schemas: map[string]any{"input": doc}}
			err := e.Load(context.Background(), ps)
			var ce *CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("want CompileError, got %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if e.Ready() {
				t.Error("a failed load must not activate anything")
			}
		})
	}
}

func TestCapabilitiesConfigurable(t *testing.T) {
	e := New(Config{AllowRuntime: true, Timeout: testConfig.Timeout}, quiet())
	if err := e.Load(context.Background(), minimal(`decision := {"allow": false, "status": 403, "reasons": [{"code": "x", "message": sprintf("%v", [count(opa.runtime())])}]}`)); err != nil {
		t.Fatalf("opa.runtime allowed by config must compile: %v", err)
	}
}

func TestFailedReloadKeepsActivePolicy(t *testing.T) {
	e := loadLibrary(t)
	if err := e.Load(context.Background(), minimal("decision := {")); err == nil {
		t.Fatal("want compile error")
	}
	res, err := e.Decide(context.Background(), exampleInput(t))
	if err != nil || !res.Decision.Allow || res.Revision != "dev" {
		t.Fatalf("old policy must stay active: %v %+v", err, res)
	}
}

// TestAtomicSwap evaluates concurrently while policies are swapped: every decision comes from
// exactly one revision and matches what that revision decides.
func TestAtomicSwap(t *testing.T) {
	ctx := context.Background()
	e := New(testConfig, quiet())
	allow := minimal(`decision := {"allow": true, "status": 200, "reasons": [], "fields": {}, "key_scopes": [], "obligations": [], "headers": {}, "flags": []}`)
	allow.Revision = "allow"
	deny := minimal(`decision := {"allow": false, "status": 403, "reasons": [{"code": "r", "message": "m"}], "fields": {}, "key_scopes": [], "obligations": [], "headers": {}, "flags": []}`)
	deny.Revision = "deny"
	if err := e.Load(ctx, allow); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan string, 100)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, err := e.Decide(ctx, &input.Input{})
				if err != nil {
					errs <- res.Revision + ": " + err.Error()
					return
				}
				if res.Decision.Allow != (res.Revision == "allow") {
					errs <- res.Revision
					return
				}
			}
		}()
	}
	for i := 0; i < 20; i++ {
		ps := allow
		if i%2 == 0 {
			ps = deny
		}
		if err := e.Load(ctx, ps); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for r := range errs {
		t.Errorf("decision inconsistent with revision %q", r)
	}
}

func TestExplain(t *testing.T) {
	e := loadLibrary(t)
	res, trace, err := e.Explain(context.Background(), exampleInput(t), ExplainFull)
	if err != nil || !res.Decision.Allow {
		t.Fatal(err)
	}
	if !strings.Contains(trace, "data.consentry.decision") {
		t.Errorf("full trace should mention the query:\n%.500s", trace)
	}
	if _, _, err := e.Explain(context.Background(), exampleInput(t), "bogus"); err == nil {
		t.Error("unknown explain mode must fail")
	}
}

func TestPrintGoesToLog(t *testing.T) {
	var buf strings.Builder
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	}), nil))
	e := New(testConfig, log)
	if err := e.Load(context.Background(), minimal("decision := {\"allow\": true, \"status\": 200, \"reasons\": [], \"fields\": {}, \"key_scopes\": [], \"obligations\": [], \"headers\": {}, \"flags\": []} if {\n\tprint(\"hello from policy\")\n}")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Decide(context.Background(), &input.Input{}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(buf.String(), "hello from policy") || !strings.Contains(buf.String(), "p.rego:4") {
		t.Errorf("print output not in log: %s", buf.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// The materialized field tables are an optimization only: a decision is the same with the
// tables served from data and with the library computing them itself.
func TestMaterializedTablesSameDecision(t *testing.T) {
	ctx := context.Background()
	ps, err := LoadDir(policyDir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fast, slow := New(Config{Timeout: 10 * time.Second}, nil), New(Config{Timeout: 10 * time.Second}, nil)
	slow.noMaterialize = true
	for _, e := range []*Engine{fast, slow} {
		if err := e.Load(ctx, ps); err != nil {
			t.Fatal(err)
		}
	}
	in := exampleInput(t)
	a, err := fast.Decide(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := slow.Decide(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a.Decision, b.Decision) {
		t.Fatalf("materialized %+v\ncomputed %+v", a.Decision, b.Decision)
	}
}

// A policy taken from Active decides with DecideWith whatever activates later, and carries
// the route map published with it; WithRoutes leaves the policy it copies unchanged.
func TestDecideWithTheTakenPolicy(t *testing.T) {
	ctx := context.Background()
	e := New(testConfig, quiet())
	allow := `decision := {"allow": true, "status": 200, "reasons": [], "fields": {}, "key_scopes": [], "obligations": [], "headers": {}, "flags": []}`
	load := func(rev string, m *routes.Map) {
		ps := minimal(allow)
		ps.Revision = rev
		p, err := e.Prepare(ctx, ps)
		if err != nil {
			t.Fatal(err)
		}
		if m != nil {
			if q := p.WithRoutes(m); q.Routes() != m || p.Routes() != nil {
				t.Fatal("WithRoutes changed the policy it copies")
			}
			p = p.WithRoutes(m)
		}
		e.Activate(p)
	}
	m1, err := routes.Parse([]byte("routes:\n  - {method: GET, path: \"/a/{id}\", customer_param: id, action: read, resource: customer, fields: [id]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	load("1", m1)
	pol := e.Active()
	load("2", nil)
	in := &input.Input{Action: "read"}
	if res, err := e.DecideWith(ctx, pol, in); err != nil || res.Revision != "1" || pol.Routes() != m1 {
		t.Fatalf("taken policy: %v revision %q routes %p", err, res.Revision, pol.Routes())
	}
	if res, err := e.Decide(ctx, in); err != nil || res.Revision != "2" || e.Active().Routes() != nil {
		t.Fatalf("active policy: %v revision %q", err, res.Revision)
	}
	if res, err := e.DecideWith(ctx, nil, in); CodeOf(err) != decision.ReasonEngineNotReady || res.Decision.Allow {
		t.Fatalf("no policy: %v %+v", err, res.Decision)
	}
}
