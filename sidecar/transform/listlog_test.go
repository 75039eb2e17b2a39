package transform_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/transform"
)

var listLogKey = []byte("transform-test-pseudonym-key-0123456789abcdef")

// servedList runs a marketing list through a pipeline logging to a real decision log and the
// transformer, and records it as the proxy and ext_proc do (the transformer's enforcement,
// the status sent). It returns the log directory.
func servedList(t *testing.T, tr *transform.Transformer, rd func(*pipeline.Pipeline) transform.RecordDecider, body string) (string, *transform.Result) {
	t.Helper()
	dir := t.TempDir()
	l, err := auditlog.Open(auditlog.Config{Dir: dir, UnsignedCheckpoints: true}, auditlog.Options{PseudonymKey: listLogKey, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p, err := fx.WithConfigAndLog(pipeline.Config{}, l)
	if err != nil {
		t.Fatal(err)
	}
	mkt := fx.Token("emp-30", "employee", []string{"marketing"}, nil)
	out := p.Check(context.Background(), &pipeline.Request{FrontDoor: "proxy", Method: "GET", Target: "/api/customers",
		Headers: map[string][]string{"authorization": {"Bearer " + mkt}, "x-purpose": {"marketing.communications.email"}},
		Source:  input.Source{Address: "127.0.0.1:1"}, CanFulfil: []string{pipeline.ObligationFilterRecords, pipeline.ObligationMinimizeFields}})
	if !out.Allowed() {
		t.Fatalf("list denied: %v", out.Decision.Reasons)
	}
	var dec transform.RecordDecider = p
	if rd != nil {
		dec = rd(p)
	}
	res := tr.Response(context.Background(), dec, out, transform.Response{Status: 200, ContentType: "application/json", Body: []byte(body)})
	enf := res.Enforcement
	enf.Status = res.Status
	if err := p.Record(context.Background(), out, enf); err != nil {
		t.Fatal(err)
	}
	return dir, res
}

// listEvent is the one decision record of dir.
func listEvent(t *testing.T, dir string) (*auditlog.Event, map[string]any) {
	t.Helper()
	var ev *auditlog.Event
	var raw map[string]any
	err := auditlog.Query(context.Background(), dir, auditlog.Filter{}, func(e *auditlog.Event, line []byte) error {
		ev = e
		return json.Unmarshal(line, &raw)
	}, nil)
	if err != nil || ev == nil {
		t.Fatalf("no decision logged: %v", err)
	}
	return ev, raw
}

// TestListLogNamesServedCustomers: a list response's decision record names the customers it
// served (customers) and those it removed (customers_filtered), with each one's input record
// and outcome, so `audit query --customer` and `audit report` find a marketing list that
// served the customer. They named nobody: the request's input has no records.
func TestListLogNamesServedCustomers(t *testing.T) {
	tr, _ := transform.New(transform.Config{}, nil, nil)
	// c-1001 opted in; c-3003 withdrew; c-2002 is erased; c-4004 is past retention; the
	// duplicate c-1001 is served twice but named once; "no id" names nobody.
	body := `{"items":[{"id":"c-1001","name":"A"},{"id":"c-3003","name":"B"},{"id":"c-2002"},{"id":"c-4004"},{"id":"c-1001","name":"A2"},{"name":"no id"}],"total":6}`
	dir, res := servedList(t, tr, nil, body)
	if res.Enforcement.RecordsReturned != 2 || res.Enforcement.RecordsFiltered != 4 {
		t.Fatalf("enforcement %+v: %s", res.Enforcement, res.Body)
	}
	ps, err := auditlog.NewPseudonymizer(listLogKey)
	if err != nil {
		t.Fatal(err)
	}
	ev, raw := listEvent(t, dir)
	want := func(ids ...string) []string {
		var out []string
		for _, id := range ids {
			out = append(out, ps.Customer(id))
		}
		slices.Sort(out)
		return out
	}
	if !slices.Equal(ev.Customers, want("c-1001")) || !slices.Equal(ev.CustomersFiltered, want("c-2002", "c-3003", "c-4004")) {
		t.Fatalf("customers %v, filtered %v", ev.Customers, ev.CustomersFiltered)
	}
	if ev.Records == nil || ev.Records.Returned != 2 || ev.Records.Filtered != 4 || ev.Records.DetailsOmitted != 0 {
		t.Fatalf("records %+v", ev.Records)
	}
	// The response phase is logged for replay: each customer's input record and outcome,
	// under its pseudonym only.
	line, _ := json.Marshal(raw)
	for _, id := range []string{"c-1001", "c-2002", "c-3003", "c-4004"} {
		if strings.Contains(string(line), `"`+id+`"`) {
			t.Fatalf("raw customer id %s in the log: %s", id, line)
		}
	}
	recs := raw["result"].(map[string]any)["records"].(map[string]any)
	in := raw["input"].(map[string]any)["records"].([]any)
	if len(recs) != 4 || len(in) != 4 || recs[ps.Customer("c-1001")].(map[string]any)["allow"] != true || recs[ps.Customer("c-3003")].(map[string]any)["allow"] != false {
		t.Fatalf("per-record outcomes not logged: %v / %v", recs, in)
	}

	// audit query --customer and audit report find the list for the customer it served.
	for _, tc := range []struct {
		id    string
		found bool
	}{{"c-1001", true}, {"c-3003", false}, {"c-9999", false}} {
		n := 0
		if err := auditlog.Query(context.Background(), dir, auditlog.Filter{Customer: ps.Customer(tc.id)}, func(*auditlog.Event, []byte) error { n++; return nil }, nil); err != nil {
			t.Fatal(err)
		}
		rep, err := auditlog.BuildReport(context.Background(), dir, auditlog.ReportOptions{CustomerID: tc.id, Pseudonymizer: ps, Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		if got := n == 1 && len(rep.Accesses) == 1; got != tc.found {
			t.Errorf("%s: query found %d, report %d accesses; want found=%v", tc.id, n, len(rep.Accesses), tc.found)
		}
	}
}

// TestListLogPageRefused: a page the policy refuses at response time serves nobody; the log
// says every customer was filtered, each with the page's reasons.
func TestListLogPageRefused(t *testing.T) {
	tr, _ := transform.New(transform.Config{}, nil, nil)
	dir, _ := servedList(t, tr, func(*pipeline.Pipeline) transform.RecordDecider { return pageDenied{} },
		`{"items":[{"id":"c-1001","name":"A"},{"id":"c-3003","name":"B"}]}`)
	ev, raw := listEvent(t, dir)
	if len(ev.Customers) != 0 || len(ev.CustomersFiltered) != 2 {
		t.Fatalf("customers %v, filtered %v", ev.Customers, ev.CustomersFiltered)
	}
	for id, r := range raw["result"].(map[string]any)["records"].(map[string]any) {
		if r.(map[string]any)["allow"] != false {
			t.Fatalf("%s served by a refused page: %v", id, r)
		}
	}
}

// TestListLogDetailsBounded: beyond auditlog.MaxRecordDetails customers the record still
// names every customer served, but carries the input and outcome of the first ones only and
// counts the rest.
func TestListLogDetailsBounded(t *testing.T) {
	tr, _ := transform.New(transform.Config{MaxBodyBytes: 1 << 20}, nil, nil)
	n := auditlog.MaxRecordDetails + 5
	var items []string
	for i := range n {
		items = append(items, fmt.Sprintf(`{"id":"c-%05d"}`, i))
	}
	allowAll := func(p *pipeline.Pipeline) transform.RecordDecider { return allowingDecider{p} }
	dir, res := servedList(t, tr, allowAll, `{"items":[`+strings.Join(items, ",")+`]}`)
	if res.Enforcement.RecordsReturned != n {
		t.Fatalf("enforcement %+v", res.Enforcement)
	}
	ev, raw := listEvent(t, dir)
	if len(ev.Customers) != n || ev.Records.DetailsOmitted != 5 {
		t.Fatalf("%d customers named, %+v", len(ev.Customers), ev.Records)
	}
	if in := raw["input"].(map[string]any)["records"].([]any); len(in) != auditlog.MaxRecordDetails {
		t.Fatalf("%d input records logged", len(in))
	}
	if recs := raw["result"].(map[string]any)["records"].(map[string]any); len(recs) != auditlog.MaxRecordDetails {
		t.Fatalf("%d outcomes logged", len(recs))
	}
}

// allowingDecider decides the page with the real pipeline (unknown customers: their records
// are denied) and then serves every record, as a policy without record rules would.
type allowingDecider struct{ p *pipeline.Pipeline }

func (a allowingDecider) DecidePage(ctx context.Context, out *pipeline.Outcome, ids []string) (*pipeline.Page, error) {
	pg, err := a.p.DecidePage(ctx, out, ids)
	if err != nil {
		return nil, err
	}
	for id, r := range pg.Decision.Records {
		r.Allow, r.Reasons = true, nil
		pg.Decision.Records[id] = r
	}
	return pg, nil
}
