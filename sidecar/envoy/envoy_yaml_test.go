package envoy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"

	"github.com/consentry/consentry/sidecar/pipeline/pipelinetest"
)

// loadBootstrap parses deploy/envoy/<name> as an Envoy v3 bootstrap with go-control-plane's
// types (unknown fields and unknown @types fail) and runs Envoy's proto validation rules.
func loadBootstrap(t *testing.T, name string) *bootstrapv3.Bootstrap {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(pipelinetest.RepoRoot(), "deploy", "envoy", name))
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
		t.Fatalf("%s is not a valid v3 bootstrap: %v", name, err)
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatalf("%s fails validation: %v", name, err)
	}
	return &bs
}

// TestEnvoyConfig parses deploy/envoy/envoy.yaml with go-control-plane's types (unknown
// fields and unknown @types fail), runs Envoy's proto validation rules, and checks the
// settings consentry's guarantees depend on.
func TestEnvoyConfig(t *testing.T) {
	bs := loadBootstrap(t, "envoy.yaml")
	listeners := bs.GetStaticResources().GetListeners()
	if len(listeners) == 0 {
		t.Fatal("no listeners")
	}
	for _, l := range listeners {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if err := f.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
					t.Fatalf("%s: %v", l.GetName(), err)
				}
				if err := hcm.ValidateAll(); err != nil {
					t.Fatalf("%s: hcm: %v", l.GetName(), err)
				}
				if !hcm.GetNormalizePath().GetValue() || !hcm.GetMergeSlashes() ||
					hcm.GetPathWithEscapedSlashesAction() != hcmv3.HttpConnectionManager_REJECT_REQUEST {
					t.Errorf("%s: path normalization is not fully on", l.GetName())
				}
				checkExtAuthz(t, l.GetName(), &hcm)
			}
		}
	}
	var found bool
	for _, c := range bs.GetStaticResources().GetClusters() {
		if c.GetName() != "consentry" {
			continue
		}
		found = true
		checkConsentryCluster(t, c)
	}
	if !found {
		t.Error("no consentry cluster")
	}
}

func checkExtAuthz(t *testing.T, listener string, hcm *hcmv3.HttpConnectionManager) {
	t.Helper()
	filters := hcm.GetHttpFilters()
	if len(filters) < 2 || filters[0].GetName() != "envoy.filters.http.ext_authz" || filters[len(filters)-1].GetName() != "envoy.filters.http.router" {
		t.Fatalf("%s: ext_authz must be the first filter and the router the last", listener)
	}
	var ea extauthzv3.ExtAuthz
	if err := filters[0].GetTypedConfig().UnmarshalTo(&ea); err != nil {
		t.Fatal(err)
	}
	if err := ea.ValidateAll(); err != nil {
		t.Fatalf("%s: ext_authz: %v", listener, err)
	}
	gs := ea.GetGrpcService()
	switch {
	case gs.GetEnvoyGrpc().GetClusterName() != "consentry":
		t.Errorf("%s: ext_authz does not call the consentry cluster", listener)
	case gs.GetTimeout().AsDuration() != 200*time.Millisecond:
		t.Errorf("%s: timeout %v, want 200ms", listener, gs.GetTimeout().AsDuration())
	case ea.GetFailureModeAllow():
		t.Errorf("%s: failure_mode_allow must be false", listener)
	case ea.GetStatusOnError().GetCode() != 503:
		t.Errorf("%s: status_on_error should be 503", listener)
	case ea.GetWithRequestBody().GetMaxRequestBytes() == 0 || ea.GetWithRequestBody().GetAllowPartialMessage():
		t.Errorf("%s: with_request_body must be bounded and must not pass partial bodies", listener)
	case !ea.GetIncludePeerCertificate():
		t.Errorf("%s: include_peer_certificate must be true", listener)
	case !ea.GetEncodeRawHeaders():
		t.Errorf("%s: encode_raw_headers must be true (every header value, raw)", listener)
	}
}

func checkConsentryCluster(t *testing.T, c *clusterv3.Cluster) {
	t.Helper()
	opts, ok := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if !ok {
		t.Fatal("consentry cluster: no HttpProtocolOptions (gRPC needs HTTP/2)")
	}
	var po httpv3.HttpProtocolOptions
	if err := opts.UnmarshalTo(&po); err != nil {
		t.Fatal(err)
	}
	if po.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Error("consentry cluster: not HTTP/2")
	}
	if c.GetTransportSocket() == nil {
		t.Error("consentry cluster: no TLS to consentry")
	}
}
