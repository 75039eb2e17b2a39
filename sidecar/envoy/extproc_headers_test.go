package envoy_test

import (
	"context"
	"slices"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	tt "github.com/consentry/consentry/sidecar/transform/transformtest"
)

// TestExtProcHeadDropsBodyDerivedHeaders: a HEAD on a transformed route. Envoy sends the
// CRM's response headers with end_of_stream true (no body follows). The CRM's ETag / digest /
// content-length of the whole, unminimized record must not reach the caller, as on the proxy.
func TestExtProcHeadDropsBodyDerivedHeaders(t *testing.T) {
	e := tt.Start(t, tt.Options{})
	client := startExtProc(t, e.Pipeline, e.Transformer)
	send := stream(t, client)
	h := map[string]string{":method": "HEAD", ":path": "/api/customers/c-1001", ":authority": "crm.test", ":scheme": "http",
		"authorization": "Bearer " + e.Agent(), "x-purpose": tt.Support, "x-case-id": "case-7"}
	resp := send(&extprocv3.ProcessingRequest{ProtocolConfig: buffered, Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hdrs(h, true)}})
	if resp.GetImmediateResponse() != nil {
		t.Fatalf("HEAD denied: %v", resp)
	}
	resp = send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: hdrs(map[string]string{
		":status": "200", "content-type": "application/json", "content-length": "4242", "etag": `"sha-of-full-record"`, "digest": "sha-256=x", "last-modified": "Fri, 02 Jan 2026 03:04:05 GMT"}, true)}})
	if ir := resp.GetImmediateResponse(); ir != nil {
		return // refused: fine
	}
	removed := resp.GetResponseHeaders().GetResponse().GetHeaderMutation().GetRemoveHeaders()
	for _, k := range []string{"etag", "digest", "content-length", "last-modified"} {
		if !slices.Contains(removed, k) {
			t.Errorf("HEAD: the CRM's %s (of the unminimized record) reaches the caller; removed=%v", k, removed)
		}
	}
}

// TestExtProcRemovesClientAddressHeaders: the proxy removes caller-supplied client-address
// headers (Forwarded, X-Real-IP, True-Client-IP, ...) so a caller cannot pose to the CRM as
// another address; the Envoy doors remove them too, through the pipeline's RemoveHeaders.
func TestExtProcRemovesClientAddressHeaders(t *testing.T) {
	e := tt.Start(t, tt.Options{})
	client := startExtProc(t, e.Pipeline, e.Transformer)
	send := stream(t, client)
	h := map[string]string{":method": "GET", ":path": "/api/customers/c-1001", ":authority": "crm.test", ":scheme": "http",
		"authorization": "Bearer " + e.Agent(), "x-purpose": tt.Support, "x-case-id": "case-7",
		"x-real-ip": "6.6.6.6", "forwarded": "for=6.6.6.6", "true-client-ip": "6.6.6.6", "x_client_ip": "6.6.6.6", "x-forwarded-for": "6.6.6.6"}
	resp := send(&extprocv3.ProcessingRequest{ProtocolConfig: buffered, Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hdrs(h, true)}})
	removed := resp.GetRequestHeaders().GetResponse().GetHeaderMutation().GetRemoveHeaders()
	for _, k := range []string{"x-real-ip", "forwarded", "true-client-ip", "x_client_ip"} {
		if !slices.Contains(removed, k) {
			t.Errorf("caller-supplied %s reaches the CRM behind ext_proc (removed=%v)", k, removed)
		}
	}
	if slices.Contains(removed, "x-forwarded-for") {
		t.Error("x-forwarded-for removed: behind Envoy it is Envoy's own (use_remote_address)")
	}
}

// TestExtProcResponseTrailersDropBodyDerived: a digest of the unminimized body sent as a
// response trailer is removed like the header.
func TestExtProcResponseTrailersDropBodyDerived(t *testing.T) {
	e := tt.Start(t, tt.Options{})
	client := startExtProc(t, e.Pipeline, e.Transformer)
	send := stream(t, client)
	h := map[string]string{":method": "GET", ":path": "/api/customers/c-1001", ":authority": "crm.test", ":scheme": "http",
		"authorization": "Bearer " + e.Agent(), "x-purpose": tt.Support, "x-case-id": "case-7"}
	send(&extprocv3.ProcessingRequest{ProtocolConfig: buffered, Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hdrs(h, true)}})
	send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: hdrs(map[string]string{":status": "200", "content-type": "application/json"}, false)}})
	send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte(`{"id":"c-1001","name":"Ada"}`)}}})
	resp := send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{
		Trailers: hdrs(map[string]string{"content-digest": "sha-256=:x:", "grpc-status": "0"}, true).GetHeaders()}}})
	removed := resp.GetResponseTrailers().GetHeaderMutation().GetRemoveHeaders()
	if !slices.Equal(removed, []string{"content-digest"}) {
		t.Fatalf("trailers removed: %v", removed)
	}
}

// stream opens one ext_proc stream, as Envoy does per request, and returns a function that
// sends a message and waits for its answer.
func stream(t *testing.T, client extprocv3.ExternalProcessorClient) func(*extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	st, err := client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
		t.Helper()
		if err := st.Send(m); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
}
