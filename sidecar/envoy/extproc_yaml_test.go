package envoy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"

	"github.com/consentry/consentry/sidecar/pipeline/pipelinetest"
)

// TestEnvoyExtProcConfig parses deploy/envoy/envoy-ext-proc.yaml with go-control-plane's types,
// runs Envoy's validation rules, and checks the settings response-side enforcement needs.
func TestEnvoyExtProcConfig(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(pipelinetest.RepoRoot(), "deploy", "envoy", "envoy-ext-proc.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &bs); err != nil {
		t.Fatalf("not a valid v3 bootstrap: %v", err)
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatalf("fails validation: %v", err)
	}
	n := 0
	for _, l := range bs.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if err := f.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
					t.Fatal(err)
				}
				if !hcm.GetNormalizePath().GetValue() || !hcm.GetMergeSlashes() || hcm.GetPathWithEscapedSlashesAction() != hcmv3.HttpConnectionManager_REJECT_REQUEST {
					t.Errorf("%s: path normalization is not fully on", l.GetName())
				}
				filters := hcm.GetHttpFilters()
				if len(filters) < 2 || filters[0].GetName() != "envoy.filters.http.ext_proc" || filters[len(filters)-1].GetName() != "envoy.filters.http.router" {
					t.Fatalf("%s: ext_proc must be the first filter and the router the last", l.GetName())
				}
				var ep extprocv3.ExternalProcessor
				if err := filters[0].GetTypedConfig().UnmarshalTo(&ep); err != nil {
					t.Fatal(err)
				}
				if err := ep.ValidateAll(); err != nil {
					t.Fatal(err)
				}
				pm := ep.GetProcessingMode()
				switch {
				case ep.GetGrpcService().GetEnvoyGrpc().GetClusterName() != "consentry":
					t.Error("ext_proc does not call the consentry cluster")
				case ep.GetFailureModeAllow():
					t.Error("failure_mode_allow must be false")
				case pm.GetRequestBodyMode() != extprocv3.ProcessingMode_BUFFERED || pm.GetResponseBodyMode() != extprocv3.ProcessingMode_BUFFERED:
					t.Error("request and response bodies must be BUFFERED")
				case pm.GetRequestHeaderMode() == extprocv3.ProcessingMode_SKIP || pm.GetResponseHeaderMode() == extprocv3.ProcessingMode_SKIP:
					t.Error("headers must be sent both ways")
				case ep.GetAllowModeOverride():
					t.Error("allow_mode_override must be false")
				}
				n++
			}
		}
	}
	if n == 0 {
		t.Fatal("no listener")
	}
	found := false
	for _, c := range bs.GetStaticResources().GetClusters() {
		if c.GetName() == "consentry" {
			found = true
			checkConsentryCluster(t, c)
		}
	}
	if !found {
		t.Error("no consentry cluster")
	}
}
