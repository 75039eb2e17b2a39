package envoy_test

import (
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	tt "github.com/consentry/consentry/sidecar/transform/transformtest"
)

// TestExtProcRequestWithoutBodyIsDecidedOnItsHeaders: a request whose headers do not end the
// stream but that carries no body (HTTP/2 HEADERS, then trailers only) gets no body message
// from Envoy, which continues it to the CRM after the answer to its headers. A request that is
// not a write is therefore decided on its headers even under BUFFERED (a bare CONTINUE let an
// unauthenticated DELETE and a read without consent reach the CRM, undecided and unlogged).
func TestExtProcRequestWithoutBodyIsDecidedOnItsHeaders(t *testing.T) {
	capture := &tt.Capture{}
	e := tt.Start(t, tt.Options{Sink: capture})
	client := startExtProc(t, e.Pipeline, e.Transformer)
	for _, c := range []struct {
		name   string
		h      map[string]string
		status int
	}{
		{"unauthenticated DELETE", map[string]string{":method": "DELETE", ":path": "/api/customers/c-1001", ":authority": "crm.test", ":scheme": "http"}, 401},
		{"marketer GET of a customer without consent", map[string]string{":method": "GET", ":path": "/api/customers/c-3003", ":authority": "crm.test", ":scheme": "http",
			"authorization": "Bearer " + e.Marketer(), "x-purpose": tt.Marketing}, 451},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(capture.Entries())
			send := stream(t, client)
			resp := send(&extprocv3.ProcessingRequest{ProtocolConfig: buffered, Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hdrs(c.h, false)}})
			ir := resp.GetImmediateResponse()
			if ir == nil || int(ir.GetStatus().GetCode()) != c.status {
				t.Fatalf("request headers answered %v, want an immediate %d", resp, c.status)
			}
			if n := len(capture.Entries()) - before; n != 1 {
				t.Fatalf("%d decision log entries, want 1", n)
			}
		})
	}
}
