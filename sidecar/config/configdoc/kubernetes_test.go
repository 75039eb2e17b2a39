package configdoc

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestKubernetesManifestHangsTogether checks deploy/kubernetes structurally (no cluster here):
// the probes and ports match the sidecar's configuration, the CRM is reachable only through the
// sidecar, every file the configuration names is mounted, and everything consentry writes is
// on a volume (the root file system is read-only).
func TestKubernetesManifestHangsTogether(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root, "deploy", "kubernetes", "crm-with-consentry.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	type container struct {
		Name  string   `yaml:"name"`
		Args  []string `yaml:"args"`
		Ports []struct {
			Name string `yaml:"name"`
			Port int    `yaml:"containerPort"`
		} `yaml:"ports"`
		Readiness struct {
			HTTPGet struct {
				Path string `yaml:"path"`
				Port string `yaml:"port"`
			} `yaml:"httpGet"`
		} `yaml:"readinessProbe"`
		Mounts []struct {
			Name string `yaml:"name"`
			Path string `yaml:"mountPath"`
		} `yaml:"volumeMounts"`
		Security struct {
			ReadOnlyRoot bool `yaml:"readOnlyRootFilesystem"`
		} `yaml:"securityContext"`
	}
	var (
		cfg        map[string]any
		containers []container
		volumes    = map[string]bool{}
		svcTargets []string
	)
	for _, d := range strings.Split(string(raw), "\n---") {
		var doc struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers []container `yaml:"containers"`
						Volumes    []struct {
							Name string `yaml:"name"`
						} `yaml:"volumes"`
					} `yaml:"spec"`
				} `yaml:"template"`
				Claims []struct {
					Meta struct {
						Name string `yaml:"name"`
					} `yaml:"metadata"`
				} `yaml:"volumeClaimTemplates"`
				Ports []struct {
					Target string `yaml:"targetPort"`
				} `yaml:"ports"`
			} `yaml:"spec"`
		}
		if err := yaml.Unmarshal([]byte(d), &doc); err != nil {
			t.Fatal(err)
		}
		switch doc.Kind {
		case "ConfigMap":
			if c := doc.Data["consentry.yaml"]; c != "" {
				if err := yaml.Unmarshal([]byte(c), &cfg); err != nil {
					t.Fatal(err)
				}
			}
		case "StatefulSet", "Deployment":
			containers = doc.Spec.Template.Spec.Containers
			for _, v := range doc.Spec.Template.Spec.Volumes {
				volumes[v.Name] = true
			}
			for _, c := range doc.Spec.Claims {
				volumes[c.Meta.Name] = true
			}
		case "Service":
			for _, p := range doc.Spec.Ports {
				svcTargets = append(svcTargets, p.Target)
			}
		}
	}
	if cfg == nil || len(containers) != 2 {
		t.Fatalf("want the consentry ConfigMap and a workload with 2 containers, got cfg=%v containers=%d", cfg != nil, len(containers))
	}
	get := func(path string) string {
		var cur any = cfg
		for _, p := range strings.Split(path, ".") {
			m, _ := cur.(map[string]any)
			cur = m[p]
		}
		s, _ := cur.(string)
		return s
	}
	port := func(addr string) string {
		_, p, err := net.SplitHostPort(strings.TrimPrefix(addr, "http://"))
		if err != nil {
			t.Fatalf("%q: %v", addr, err)
		}
		return p
	}
	var sidecar, crm container
	for _, c := range containers {
		switch c.Name {
		case "consentry":
			sidecar = c
		case "crm":
			crm = c
		}
	}
	named := map[string]string{}
	for _, p := range sidecar.Ports {
		named[p.Name] = strconv.Itoa(p.Port)
	}
	if named["admin"] != port(get("admin.listen")) || named["http"] != port(get("proxy.listen")) {
		t.Errorf("container ports %v do not match admin.listen %s / proxy.listen %s", named, get("admin.listen"), get("proxy.listen"))
	}
	if sidecar.Readiness.HTTPGet.Path != "/ready" || sidecar.Readiness.HTTPGet.Port != "admin" {
		t.Errorf("readiness probe must be /ready on the admin port: %+v", sidecar.Readiness)
	}
	for _, tp := range svcTargets {
		if tp != "http" {
			t.Errorf("the Service must reach only the sidecar's proxy port, not %q", tp)
		}
	}
	up := get("proxy.upstream")
	if !strings.Contains(strings.Join(crm.Args, " "), "127.0.0.1:"+port(up)) || !strings.Contains(up, "127.0.0.1") {
		t.Errorf("the CRM must listen on the pod's loopback at proxy.upstream %s (args %v)", up, crm.Args)
	}
	mounted := func(p string) bool {
		for _, m := range sidecar.Mounts {
			if !volumes[m.Name] {
				t.Errorf("volumeMount %s has no volume", m.Name)
			}
			if strings.HasPrefix(p, strings.TrimSuffix(m.Path, "/")+"/") || p == m.Path {
				return true
			}
		}
		return false
	}
	for _, k := range []string{"admin.token_file", "routes.file", "decision_log.pseudonym_key_file", "decision_log.dir", "vault.ledger_path", "policy.persist_dir",
		// Its default is relative to the working directory, which has no policies/ in a container.
		"state.purposes_file"} {
		if p := get(k); p == "" || !mounted(p) {
			t.Errorf("%s (%q) is not on a mounted volume", k, p)
		}
	}
	if !sidecar.Security.ReadOnlyRoot {
		t.Error("the sidecar should run with a read-only root file system")
	}
}
