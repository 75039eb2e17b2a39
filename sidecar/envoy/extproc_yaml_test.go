package envoy

import (
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// maxFraming is what an ext_proc body message adds to the body (field tags, lengths, and
// attributes on the first message of a phase), generously.
const maxFraming = 16 << 10

// TestEnvoyExtProcConfig parses deploy/envoy/envoy-ext-proc.yaml with go-control-plane's types,
// runs Envoy's validation rules, and checks the settings response-side enforcement needs.
func TestEnvoyExtProcConfig(t *testing.T) {
	bs := loadBootstrap(t, "envoy-ext-proc.yaml")
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
				case !ep.GetMutationRules().GetAllowEnvoy().GetValue():
					// Envoy's default rules silently drop an external processor's mutation of
					// x-envoy-* headers: a caller's x-envoy-original-path would reach the CRM.
					t.Error("mutation_rules.allow_envoy must be true (consentry removes caller-supplied x-envoy-* headers)")
				}
				// One ext_proc message carries the whole buffered body: a body at Envoy's
				// buffer limit, with its framing, must fit consentry's default message limit.
				if limit := l.GetPerConnectionBufferLimitBytes().GetValue(); limit == 0 || int(limit)+maxFraming > DefaultMaxRecvMsgBytes {
					t.Errorf("%s: per_connection_buffer_limit_bytes %d (+%d framing) exceeds envoy.max_recv_msg_bytes' default %d", l.GetName(), limit, maxFraming, DefaultMaxRecvMsgBytes)
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
