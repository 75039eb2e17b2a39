package envoy

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"

	"github.com/consentry/consentry/sidecar/normalize"
)

// FuzzCheckRequest drives arbitrary CheckRequests (method, path, one header as map entry and
// as raw header line, body, credentials) through the ext_authz conversion and the real
// pipeline. Properties: no panic, always an answer; without a valid token always a deny with
// a JSON body; an allow only for a canonical path that matched a route with a declared purpose
// and a policy decision.
func FuzzCheckRequest(f *testing.F) {
	seeds := []struct {
		method, path, hk, hv, body string
		token, raw                 bool
	}{
		{"GET", "/api/customers/c-1001", "x-purpose", support, "", true, false},
		{"GET", "//api/customers/c-1001", "x-case-id", "case-7", "", true, true},
		{"GET", "/api/customers%2Fc-1001", "x-purpose", support, "", true, false},
		{"PATCH", "/api/customers/c-1001", "content-length", "20", `{"name":"x"}`, true, false},
		{"GET", "/api/./customers/../customers/c-1001", "x-purpose", "a,b", "", false, true},
		{"GET", "/api/customers/c-1001", "x-purpose", "sup\xffport", "", true, true},
		{"get", "/api/customers?q=%zz", "authorization", "Bearer x.y.z", "", false, false},
		{"GET", "*", "x-break-glass", "because I need to", "", true, false},
		{"POST", "/api/customers", "x-envoy-auth-partial-body", "true", `{"payment":{}}`, true, false},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.hk, s.hv, s.body, s.token, s.raw)
	}
	a := NewAuthz(Config{}, fx.Pipeline, nil)
	agent := "Bearer " + fx.Agent()
	f.Fuzz(func(t *testing.T, method, path, hk, hv, body string, token, raw bool) {
		headers := map[string]string{"x-purpose": support, "x-case-id": "case-7"}
		if token {
			headers["authorization"] = agent
		}
		if hk != "" {
			headers[hk] = hv
		}
		req := checkRequest(method, path, headers)
		if raw {
			hm := &corev3.HeaderMap{}
			for k, v := range headers {
				hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
			}
			req.Attributes.Request.Http.Headers, req.Attributes.Request.Http.HeaderMap = nil, hm
		}
		req.Attributes.Request.Http.RawBody = []byte(body)

		resp, err := a.Check(context.Background(), req)
		if err != nil || resp == nil {
			t.Fatalf("no answer: %v", err)
		}
		resp = onTheWire(t, resp)
		allowed := codes.Code(resp.GetStatus().GetCode()) == codes.OK
		if !allowed {
			d := resp.GetDeniedResponse()
			var b struct {
				DecisionID string `json:"decision_id"`
				Reasons    []struct{ Code string }
			}
			if d == nil || json.Unmarshal([]byte(d.GetBody()), &b) != nil || b.DecisionID == "" || len(b.Reasons) == 0 || d.GetStatus().GetCode() < 400 {
				t.Fatalf("deny without a proper body: %v", resp)
			}
			return
		}
		// Allowed: only with the real token, a routed canonical path and a decided purpose.
		hasToken := false
		for k, v := range headers {
			if strings.EqualFold(k, "authorization") && v == agent {
				hasToken = true
			}
		}
		if !hasToken {
			t.Fatalf("allowed without a valid credential: %s %q %v", method, path, headers)
		}
		md := resp.GetDynamicMetadata().GetFields()
		if md["route"].GetStringValue() == "" || md["purpose"].GetStringValue() == "" || md["revision"].GetStringValue() == "" {
			t.Fatalf("allowed without route, purpose or policy decision: %v", md)
		}
		if resp.GetOkResponse() == nil {
			t.Fatalf("allow without ok response: %v", resp)
		}
		// Envoy forwards the path and method as sent: only their canonical forms pass.
		if err := normalize.CheckCanonical(path); err != nil || method != strings.ToUpper(method) {
			t.Fatalf("allowed a non-canonical request line %s %q (%v)", method, path, err)
		}
	})
}
