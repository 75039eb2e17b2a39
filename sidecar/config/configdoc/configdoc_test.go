package configdoc

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite docs/configuration.md")

const root = "../../.."

func TestConfigurationDocIsCurrent(t *testing.T) {
	md, err := Markdown(root)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "docs", "configuration.md")
	if *update {
		if err := os.WriteFile(path, []byte(md), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	have, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(have) != md {
		t.Fatal("docs/configuration.md is stale: run go test ./sidecar/config/configdoc -update")
	}
	for _, k := range []string{"policy.dir", "decision_log.mode", "vault.auth.method", "state.postgres.url", "envoy.tls.client_ca_file"} {
		if !strings.Contains(md, "`"+k+"`") {
			t.Errorf("reference lacks %s", k)
		}
	}
}

// TestShippedConfigsUseDocumentedKeys: every example configuration we ship (deploy/config and
// the Kubernetes ConfigMap) uses only keys the reference documents.
func TestShippedConfigsUseDocumentedKeys(t *testing.T) {
	keys, err := Keys(root)
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "deploy", "config", "*.yaml"))
	docs := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs[f] = string(b)
	}
	k8s, err := os.ReadFile(filepath.Join(root, "deploy", "kubernetes", "crm-with-consentry.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range strings.Split(string(k8s), "\n---") {
		var cm struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
		}
		if yaml.Unmarshal([]byte(d), &cm) == nil && cm.Kind == "ConfigMap" && cm.Data["consentry.yaml"] != "" {
			docs["kubernetes document "+string(rune('0'+i))] = cm.Data["consentry.yaml"]
		}
	}
	if len(docs) < 2 {
		t.Fatalf("expected shipped configs, found %d", len(docs))
	}
	idx := regexp.MustCompile(`\[\]`)
	for name, d := range docs {
		var v map[string]any
		if err := yaml.Unmarshal([]byte(d), &v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		walk("", v, func(k string) {
			if !keys[k] && !keys[idx.ReplaceAllString(k, "")] {
				t.Errorf("%s: key %s is not a documented configuration key", name, k)
			}
		})
	}
}

// walk reports every leaf and intermediate key path; list elements of objects add "[]".
func walk(prefix string, v any, f func(string)) {
	switch x := v.(type) {
	case map[string]any:
		for k, vv := range x {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			f(p)
			walk(p, vv, f)
		}
	case []any:
		for _, e := range x {
			if _, ok := e.(map[string]any); ok {
				walk(prefix+"[]", e, f)
			}
		}
	}
}
