package consent

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"gopkg.in/yaml.v3"

	"github.com/consentry/consentry/vaultkeys"
)

// TestOpenAPIMatchesRoutes keeps docs/openapi.yaml and the mounted handlers in step.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	raw, err := os.ReadFile("../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	var documented []string
	for p, ops := range doc.Paths {
		for m := range ops {
			if m == "parameters" {
				continue
			}
			documented = append(documented, strings.ToUpper(m)+" /v1"+p)
		}
	}
	app := fiber.New()
	v1 := app.Group("/v1")
	(&Store{}).MountAPI(v1)
	// The erase endpoint is vaultkeys' (consentry run mounts it next to the state API when the
	// vault section is configured); docs/openapi.yaml describes both.
	vaultkeys.MountAdmin(v1, nil)
	var mounted []string
	for _, r := range app.GetRoutes(true) {
		if r.Method == fiber.MethodHead || !strings.HasPrefix(r.Path, "/v1/") {
			continue
		}
		path := r.Path
		for _, p := range r.Params {
			path = strings.Replace(path, ":"+p, "{"+p+"}", 1)
		}
		mounted = append(mounted, r.Method+" "+path)
	}
	if len(mounted) < 12 || len(documented) < 12 {
		t.Fatalf("too few routes: %d mounted, %d documented", len(mounted), len(documented))
	}
	sort.Strings(documented)
	sort.Strings(mounted)
	// The OpenAPI names path parameters for readability ({processor_id}); normalize.
	norm := func(xs []string) string {
		return strings.NewReplacer("{processor_id}", "{id}").Replace(strings.Join(xs, "\n"))
	}
	if norm(documented) != norm(mounted) {
		t.Fatalf("docs/openapi.yaml and MountAPI differ:\ndocumented:\n%s\n\nmounted:\n%s", norm(documented), norm(mounted))
	}
}

// TestOpenAPIDocumentsErrorStatuses: every admin API operation can answer 401 (no or wrong
// credential), every one with a path id 400 (a malformed id), and every one with a JSON body
// 400, 413 (request.too_large: over admin.MaxBodyBytes) and - where the handler checks the
// media type - 415. The description used to leave these out of the PUTs and the GETs of
// cases and agreements.
func TestOpenAPIDocumentsErrorStatuses(t *testing.T) {
	raw, err := os.ReadFile("../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	type op struct {
		OperationID string                    `yaml:"operationId"`
		RequestBody map[string]any            `yaml:"requestBody"`
		Responses   map[string]map[string]any `yaml:"responses"`
	}
	var doc struct {
		Paths map[string]map[string]yaml.Node `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	// The erase endpoint (vaultkeys) answers a body that is not JSON with 400 erase.bad_request.
	noMediaTypeCheck := map[string]bool{"eraseCustomer": true}
	n := 0
	for path, ops := range doc.Paths {
		for method, node := range ops {
			if method == "parameters" {
				continue
			}
			var o op
			if err := node.Decode(&o); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			n++
			want := []string{"401"}
			if strings.Contains(path, "{") {
				want = append(want, "400")
			}
			if content, ok := o.RequestBody["content"].(map[string]any); ok {
				if _, json := content["application/json"]; json {
					want = append(want, "400", "413")
					if !noMediaTypeCheck[o.OperationID] {
						want = append(want, "415")
					}
				}
			}
			for _, status := range want {
				if _, ok := o.Responses[status]; !ok {
					t.Errorf("%s %s (%s): no %s response", strings.ToUpper(method), path, o.OperationID, status)
				}
			}
		}
	}
	if n < 12 {
		t.Fatalf("only %d operations", n)
	}
}

// TestDocsStateCapturedAtMargin: the docs said captured_at "may not be in the future", but
// event() accepts up to allowedClockSkew ahead (clients' clocks drift). Both documents now
// state the margin the code applies.
func TestDocsStateCapturedAtMargin(t *testing.T) {
	want := fmt.Sprintf("at most %d minutes in the future", int(allowedClockSkew/time.Minute))
	for _, doc := range []string{"../../docs/admin-api.md", "../../docs/openapi.yaml"} {
		raw, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Join(strings.Fields(string(raw)), " ")
		if !strings.Contains(text, want) || strings.Contains(text, "may not be in the future") || strings.Contains(text, "not in the future}") {
			t.Errorf("%s does not say captured_at may be %s", doc, want)
		}
	}
}
