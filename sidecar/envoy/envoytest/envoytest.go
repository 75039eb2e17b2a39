// Package envoytest plays Envoy's side of ext_authz for tests of a running sidecar: it sends the
// CheckRequest Envoy would build for an HTTP request over a real gRPC connection.
package envoytest

import (
	"context"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// Check sends one Check for method and path with headers (lowercase names) to the ext_authz
// listener at addr (plaintext) and fails the test when the call itself fails: ext_authz must
// always answer, with an allow or a deny.
func Check(tb testing.TB, addr, method, path string, headers map[string]string) *authv3.CheckResponse {
	tb.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(cc).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.0.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 4000}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Host: "crm.internal", Scheme: "http", Headers: headers}},
	}})
	if err != nil {
		tb.Fatalf("ext_authz Check must always answer: %v", err)
	}
	return resp
}

// Allowed reports whether an ext_authz answer lets the request through.
func Allowed(resp *authv3.CheckResponse) bool {
	return codes.Code(resp.GetStatus().GetCode()) == codes.OK
}
