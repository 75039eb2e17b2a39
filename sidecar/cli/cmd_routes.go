package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/normalize"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/routes"
	"github.com/consentry/consentry/sidecar/transform"
)

func init() {
	Register(&Command{Name: "routes check", Summary: "validate a route map; with --request and --response, show what a response keeps on its route",
		Usage: "MAP [--catalog FILE] [--request 'GET /api/customers/c-1' --response FILE|- [--content-type T] [--status N] [--fail-on-drop]] [--json]",
		Run:   runRoutesCheck})
}

// routesCheckReport is the --json output.
type routesCheckReport struct {
	Routes []routeSummary `json:"routes"`
	// Request, when --request was given: the route it matched and what its response keeps.
	Request *responseCheck `json:"request,omitempty"`
	// PlaintextPersonalFields are the fields the routes carry whose catalogue category is
	// personal data (user.*) and that have no key_scope: stored in plaintext, so
	// crypto-erasure does not make them unreadable in the CRM's backups (docs/key-model.md).
	PlaintextPersonalFields []string `json:"plaintext_personal_fields"`
}

type routeSummary struct {
	Route       string   `json:"route"`
	Action      string   `json:"action,omitempty"`
	Public      bool     `json:"public,omitempty"`
	Unlisted    string   `json:"unlisted"`
	Fields      int      `json:"fields"`
	Passthrough []string `json:"passthrough,omitempty"`
	Envelope    []string `json:"envelope,omitempty"`
}

type responseCheck struct {
	Route string `json:"route"`
	// Dropped are the members the route map does not list that the response phase removes
	// (JSON paths); on a pass route, those it would remove with unlisted: drop.
	Dropped []string `json:"dropped"`
	// Withheld are ciphertext values served as null (no key is released here).
	Withheld []string `json:"withheld,omitempty"`
	// Body is the response as a caller allowed every listed field would get it.
	Body json.RawMessage `json:"body,omitempty"`
	// Error is why the response phase would refuse the response (replaced with a 502).
	Error string `json:"error,omitempty"`
}

// runRoutesCheck validates a route map and, given a sample CRM response, shows what the
// response phase keeps of it for a caller whose decision allows every field the route lists:
// the members a map with unlisted: drop removes are the ones to list (as fields, passthrough
// or envelope) before switching a route to drop.
func runRoutesCheck(_ context.Context, env *Env, args []string) error {
	c := commands["routes check"]
	fs := NewFlags(c, env)
	reqFlag := fs.String("request", "", "a request line, METHOD PATH, whose route the response belongs to")
	respFlag := fs.String("response", "", "a sample response body of that route (a file, or - for stdin)")
	ctype := fs.String("content-type", "application/json", "the response's content type (application/x-ndjson for JSON lines)")
	status := fs.Int("status", 200, "the response's HTTP status")
	failOnDrop := fs.Bool("fail-on-drop", false, "exit 1 when the response has members the map does not list")
	catalog := fs.String("catalog", "", "the policy catalogue whose fields the routes name (default "+defaultCatalog+" when it exists)")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	path, err := onePositional(c, pos, "route map")
	if err != nil {
		return err
	}
	if (*reqFlag == "") != (*respFlag == "") {
		return Usagef("--request and --response go together")
	}
	m, err := routes.Load(path)
	if err != nil {
		return Exit(ExitConfig, err)
	}
	plain, err := checkCatalogFields(m, *catalog)
	if err != nil {
		return Exit(ExitConfig, err)
	}
	rep := &routesCheckReport{PlaintextPersonalFields: plain}
	for _, r := range m.Routes() {
		rep.Routes = append(rep.Routes, routeSummary{Route: r.Name(), Action: r.Action, Public: r.Public, Unlisted: r.Unlisted,
			Fields: len(r.Fields), Passthrough: r.Passthrough, Envelope: r.Envelope})
	}
	if *reqFlag != "" {
		body, err := readFileOrStdin(env, *respFlag)
		if err != nil {
			return Exit(ExitFailure, err)
		}
		rc, err := checkResponse(m, *reqFlag, transform.Response{Status: *status, ContentType: *ctype, Body: body})
		if err != nil {
			return Usagef("%v", err)
		}
		rep.Request = rc
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printRoutesCheck(env.Stdout, path, rep)
	}
	if rc := rep.Request; rc != nil {
		if rc.Error != "" {
			return Exit(ExitFailure, fmt.Errorf("the response phase refuses this response: %s", rc.Error))
		}
		if *failOnDrop && len(rc.Dropped) > 0 {
			return Exit(ExitFailure, fmt.Errorf("%d member(s) the route map does not list: %s", len(rc.Dropped), strings.Join(rc.Dropped, ", ")))
		}
	}
	return nil
}

// defaultCatalog is the policy library's catalogue, relative to a repository checkout.
const defaultCatalog = "policies/data/consentry/catalog/data.json"

// checkCatalogFields refuses a route field the catalogue does not know: the policy denies an
// unknown field, and on a pass route the CRM's real member (name, for a misspelt nmae) would
// then be served unchecked. Without --catalog the default is used only when it exists. It
// returns the personal-data fields the routes carry that have no key_scope (sorted).
func checkCatalogFields(m *routes.Map, catalog string) ([]string, error) {
	plain := []string{}
	if catalog == "" {
		if _, err := os.Stat(defaultCatalog); err != nil {
			return plain, nil
		}
		catalog = defaultCatalog
	}
	raw, err := os.ReadFile(catalog)
	if err != nil {
		return nil, fmt.Errorf("--catalog: %w", err)
	}
	var doc struct {
		Fields map[string]struct {
			Category string `json:"category"`
			KeyScope string `json:"key_scope"`
		} `json:"fields"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || len(doc.Fields) == 0 {
		return nil, fmt.Errorf("--catalog %s: not a catalogue with fields (%v)", catalog, err)
	}
	var unknown []string
	for _, r := range m.Routes() {
		for _, f := range r.Fields {
			cf, ok := doc.Fields[f]
			if !ok {
				unknown = append(unknown, fmt.Sprintf("%s: %q", r.Name(), f))
				continue
			}
			// The record's id is left out: it names the record (and its keys), so it cannot be
			// ciphertext; the CRM deletes the row.
			if cf.KeyScope == "" && (cf.Category == "user" || strings.HasPrefix(cf.Category, "user.")) &&
				cf.Category != "user.unique_id" && !slices.Contains(plain, f) {
				plain = append(plain, f)
			}
		}
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("fields the catalogue %s does not know (the policy denies them; a misspelt field leaves the real member unchecked): %s", catalog, strings.Join(unknown, "; "))
	}
	slices.Sort(plain)
	return plain, nil
}

// checkResponse runs the response phase on resp for the route requestLine matches, with a
// decision that allows every listed field and releases no key, on a copy of the route that
// drops unlisted members (so a pass route shows what drop would remove).
func checkResponse(m *routes.Map, requestLine string, resp transform.Response) (*responseCheck, error) {
	method, target, ok := strings.Cut(strings.TrimSpace(requestLine), " ")
	if !ok {
		return nil, fmt.Errorf("--request %q: want METHOD PATH", requestLine)
	}
	method = strings.ToUpper(strings.TrimSpace(method))
	t, err := normalize.New(normalize.Config{}).Target(strings.TrimSpace(target))
	if err != nil {
		return nil, fmt.Errorf("--request %q: %w", requestLine, err)
	}
	match, ok := m.Match(method, t.Path)
	if !ok {
		return nil, fmt.Errorf("--request %q: no route in the map (route.unknown)", requestLine)
	}
	if match.Route.Public {
		return nil, fmt.Errorf("--request %q: %s is public: its responses pass unchanged", requestLine, match.Route.Name())
	}
	route := *match.Route
	route.Unlisted = routes.UnlistedDrop
	fields := map[string]decision.Field{}
	for _, f := range route.Fields {
		fields[f] = decision.Field{Outcome: decision.OutcomeAllow}
	}
	out := &pipeline.Outcome{
		Decision: &decision.Decision{Allow: true, Status: 200, Fields: fields},
		Input:    &input.Input{Action: route.Action, Resource: input.Resource{Type: route.Resource, CustomerID: match.CustomerID()}},
		Match:    &routes.Match{Route: &route, Params: match.Params},
	}
	tr, err := transform.New(transform.Config{}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	res := tr.Response(context.Background(), nil, out, resp)
	rc := &responseCheck{Route: route.Name(), Dropped: []string{}, Withheld: res.Enforcement.Withheld}
	if res.Replaced {
		rc.Error = strings.TrimSpace(string(res.Body))
		return rc, nil
	}
	for _, d := range res.Enforcement.FieldsDropped {
		// The walk names a field the decision removed by its catalogue name, an unlisted
		// member by its JSON path: only the latter are the map's gaps.
		if !slices.Contains(route.Fields, d) {
			rc.Dropped = append(rc.Dropped, d)
		}
	}
	if json.Valid(res.Body) {
		rc.Body = res.Body
	}
	return rc, nil
}

func printRoutesCheck(w io.Writer, path string, rep *routesCheckReport) {
	fmt.Fprintf(w, "%s: %d routes, valid\n", path, len(rep.Routes))
	for _, r := range rep.Routes {
		switch {
		case r.Public:
			fmt.Fprintf(w, "  %-45s public\n", r.Route)
		default:
			extra := ""
			if len(r.Passthrough) > 0 {
				extra += fmt.Sprintf(", passthrough %v", r.Passthrough)
			}
			if len(r.Envelope) > 0 {
				extra += fmt.Sprintf(", envelope %v", r.Envelope)
			}
			fmt.Fprintf(w, "  %-45s %-13s unlisted: %-4s %d fields%s\n", r.Route, r.Action, r.Unlisted, r.Fields, extra)
		}
	}
	if len(rep.PlaintextPersonalFields) > 0 {
		fmt.Fprintf(w, "personal data stored in plaintext (no key_scope; crypto-erasure does not reach it, docs/key-model.md): %s\n",
			strings.Join(rep.PlaintextPersonalFields, ", "))
	}
	rc := rep.Request
	if rc == nil {
		return
	}
	fmt.Fprintf(w, "\nresponse of %s, for a caller allowed every listed field:\n", rc.Route)
	if rc.Error != "" {
		fmt.Fprintf(w, "  refused by the response phase: %s\n", rc.Error)
		return
	}
	if len(rc.Dropped) == 0 {
		fmt.Fprintln(w, "  every member is listed: nothing is dropped")
	} else {
		fmt.Fprintf(w, "  not listed (removed with unlisted: drop): %s\n", strings.Join(rc.Dropped, ", "))
	}
	if len(rc.Withheld) > 0 {
		fmt.Fprintf(w, "  ciphertext withheld (no key released here): %s\n", strings.Join(rc.Withheld, ", "))
	}
	if len(rc.Body) > 0 {
		fmt.Fprintf(w, "  served: %s\n", rc.Body)
	}
}
