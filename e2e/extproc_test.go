package e2e_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/consentry/consentry/sidecar/demo"
)

// testExtProc plays Envoy's part of an ext_proc exchange (buffered bodies) against the running
// sidecar: request headers go to consentry, the request goes to the real CRM, the CRM's
// response headers and body go back through consentry, and what Envoy would send the caller
// is checked.
func testExtProc(t *testing.T, s *demo.Stack) {
	cc, err := grpc.NewClient(s.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := extprocv3.NewExternalProcessorClient(cc)
	tok, err := s.Token(demo.Agent)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("allowed read is decrypted and minimized", func(t *testing.T) {
		status, body := envoyExchange(t, client, s.CRMURL, "/api/customers/c-000001",
			map[string]string{"authorization": "Bearer " + tok, "x-purpose": demo.PurposeSupport, "x-case-id": "case-1"})
		if status != 200 {
			t.Fatalf("status %d: %s", status, body)
		}
		var rec struct {
			Contact struct{ Email string } `json:"contact"`
			Payment map[string]any         `json:"payment"`
			Health  map[string]any         `json:"health"`
		}
		if err := json.Unmarshal(body, &rec); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		if !strings.Contains(rec.Contact.Email, "@") || len(rec.Payment) != 0 || len(rec.Health) != 0 {
			t.Fatalf("want decrypted e-mail and no payment/health fields, got %s", body)
		}
		if strings.Contains(string(body), "vault:v") {
			t.Fatalf("ciphertext reached the caller: %s", body)
		}
	})
	t.Run("denied request never reaches the CRM", func(t *testing.T) {
		status, body := envoyExchange(t, client, s.CRMURL, "/api/customers/c-000001",
			map[string]string{"authorization": "Bearer " + tok, "x-purpose": demo.PurposeSupport})
		if status != 403 || !strings.Contains(string(body), "case.missing") {
			t.Fatalf("want 403 case.missing, got %d %s", status, body)
		}
	})
}

// envoyExchange returns the status and body the caller would receive. The CRM is called only
// when consentry let the request headers through.
func envoyExchange(t *testing.T, c extprocv3.ExternalProcessorClient, upstream, path string, headers map[string]string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := c.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.CloseSend()
	send := func(req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	h := map[string]string{":method": "GET", ":path": path, ":authority": "crm.internal", ":scheme": "http"}
	for k, v := range headers {
		h[k] = v
	}
	resp := send(&extprocv3.ProcessingRequest{
		ProtocolConfig: &extprocv3.ProtocolConfiguration{RequestBodyMode: extprocfilterv3.ProcessingMode_BUFFERED, ResponseBodyMode: extprocfilterv3.ProcessingMode_BUFFERED},
		Request:        &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: headerMap(h, true)},
	})
	if ir := resp.GetImmediateResponse(); ir != nil {
		return int(ir.GetStatus().GetCode()), ir.GetBody()
	}
	up, err := http.NewRequest("GET", upstream+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, hv := range resp.GetRequestHeaders().GetResponse().GetHeaderMutation().GetSetHeaders() {
		up.Header.Set(hv.GetHeader().GetKey(), string(hv.GetHeader().GetRawValue()))
	}
	res, err := http.DefaultClient.Do(up)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	rh := map[string]string{":status": strconv.Itoa(res.StatusCode), "content-type": res.Header.Get("Content-Type")}
	resp = send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: headerMap(rh, false)}})
	if ir := resp.GetImmediateResponse(); ir != nil {
		return int(ir.GetStatus().GetCode()), ir.GetBody()
	}
	resp = send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: body, EndOfStream: true}}})
	if ir := resp.GetImmediateResponse(); ir != nil {
		return int(ir.GetStatus().GetCode()), ir.GetBody()
	}
	if b := resp.GetResponseBody().GetResponse().GetBodyMutation().GetBody(); b != nil {
		body = b
	}
	return res.StatusCode, body
}

func headerMap(kv map[string]string, eos bool) *extprocv3.HttpHeaders {
	hm := &corev3.HeaderMap{}
	for k, v := range kv {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
	}
	return &extprocv3.HttpHeaders{Headers: hm, EndOfStream: eos}
}
