package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/consentry/consentry/e2e/harness"
)

// binDir holds the consentry and democrm binaries under test: the ones `make build` put next
// to $CONSENTRY_BIN, or freshly built ones (plain `go test ./e2e/...`).
var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if p := os.Getenv("CONSENTRY_BIN"); p != "" {
		dir := filepath.Dir(p)
		if exists(filepath.Join(dir, "consentry")) && exists(filepath.Join(dir, "democrm")) {
			binDir = dir
		}
	}
	if binDir == "" {
		tmp, err := os.MkdirTemp("", "consentry-e2e-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(tmp)
		if _, err := harness.Build(context.Background(), tmp, "./cmd/consentry", "./cmd/democrm"); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: build:", err)
			return 1
		}
		binDir = tmp
	}
	return m.Run()
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func freeAddr(t testing.TB) string {
	t.Helper()
	a, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// extAuthz sends one Check to a sidecar's ext_authz listener, as Envoy would for a GET.
func extAuthz(t testing.TB, addr, path string, headers map[string]string) *authv3.CheckResponse {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(cc).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.0.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 4000}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: path, Host: "crm.internal", Scheme: "http", Headers: headers}},
	}})
	if err != nil {
		t.Fatalf("ext_authz Check must always answer: %v", err)
	}
	return resp
}

// allowedBy reports whether an ext_authz answer lets the request through.
func allowedBy(resp *authv3.CheckResponse) bool {
	return codes.Code(resp.GetStatus().GetCode()) == codes.OK
}
