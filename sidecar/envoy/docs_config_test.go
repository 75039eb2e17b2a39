package envoy

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/consentry/consentry/sidecar/enrich/static"
	"github.com/consentry/consentry/sidecar/identity"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/pipeline/pipelinetest"
	"github.com/consentry/consentry/sidecar/proxy"
	"github.com/consentry/consentry/sidecar/routes"
	"github.com/consentry/consentry/sidecar/transform"
)

// TestDocumentedConfig decodes the configuration examples of docs/front-doors.md into the
// packages' Config types (unknown keys fail), so the documentation cannot drift from the code.
func TestDocumentedConfig(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(pipelinetest.RepoRoot(), "docs", "front-doors.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(raw), "```yaml\n")[1:]
	seen := map[string]bool{}
	for _, b := range blocks {
		doc, _, _ := strings.Cut(b, "```")
		var sections map[string]yaml.Node
		if err := yaml.Unmarshal([]byte(doc), &sections); err != nil {
			t.Fatalf("yaml block: %v\n%s", err, doc)
		}
		for name, node := range sections {
			var target interface{ Validate() error }
			switch name {
			case "envoy":
				target = &Config{}
			case "pipeline":
				target = &pipeline.Config{}
			case "identity":
				target = &identity.Config{}
			case "routes":
				target = &routes.Config{}
			case "enrichment":
				target = &static.Config{}
			case "proxy":
				target = &proxy.Config{}
			case "transform":
				target = &transform.Config{}
			default:
				t.Fatalf("documented section %q is not decoded by this test", name)
			}
			var buf bytes.Buffer
			if err := yaml.NewEncoder(&buf).Encode(&node); err != nil {
				t.Fatal(err)
			}
			dec := yaml.NewDecoder(&buf)
			dec.KnownFields(true)
			if err := dec.Decode(target); err != nil {
				t.Fatalf("section %s: %v", name, err)
			}
			if err := validateWithDefaults(target); err != nil {
				t.Fatalf("section %s: %v", name, err)
			}
			seen[name] = true
		}
	}
	for _, want := range []string{"envoy", "pipeline", "identity", "routes", "enrichment", "proxy", "transform"} {
		if !seen[want] {
			t.Errorf("docs/front-doors.md has no %s example", want)
		}
	}
}

func validateWithDefaults(c any) error {
	switch v := c.(type) {
	case *Config:
		return v.WithDefaults().Validate()
	case *pipeline.Config:
		if v.DecisionCache.TTL != 2e9 || v.Timeout != 150e6 {
			return errNotDecoded
		}
		return v.WithDefaults().Validate()
	case *identity.Config:
		return v.WithDefaults().Validate()
	case *routes.Config:
		return v.WithDefaults().Validate()
	case *static.Config:
		return v.WithDefaults().Validate()
	case *proxy.Config:
		return v.WithDefaults().Validate()
	case *transform.Config:
		v.HMACKeyFile = "" // a path on the reader's machine
		return v.WithDefaults().Validate()
	}
	return nil
}

var errNotDecoded = os.ErrInvalid
