package consent

import (
	"os"
	"sort"
	"strings"
	"testing"

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
