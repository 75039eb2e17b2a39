package envoy_test

import (
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/envoy"
)

// TestListenerAdmitsEnvoyOnly: the gRPC doors trust their client to be Envoy (it supplies the
// caller's SPIFFE id in request attributes, and to ext_proc the CRM's response, which
// consentry decrypts). A listener other clients can reach needs mutual TLS, or an explicit
// opt-out; plaintext and server-only TLS are for loopback.
func TestListenerAdmitsEnvoyOnly(t *testing.T) {
	serverTLS := envoy.TLSConfig{CertFile: "tls.crt", KeyFile: "tls.key"}
	mutualTLS := envoy.TLSConfig{CertFile: "tls.crt", KeyFile: "tls.key", ClientCAFile: "envoy-ca.pem"}
	for _, c := range []struct {
		name string
		cfg  envoy.Config
		ok   bool
	}{
		{"default (loopback)", envoy.Config{}, true},
		{"127.0.0.1 plaintext", envoy.Config{Listen: "127.0.0.1:9191"}, true},
		{"::1 plaintext", envoy.Config{Listen: "[::1]:9191"}, true},
		{"localhost plaintext", envoy.Config{Listen: "localhost:9191"}, true},
		{"0.0.0.0 plaintext", envoy.Config{Listen: "0.0.0.0:9191"}, false},
		{"every interface plaintext", envoy.Config{Listen: ":9191"}, false},
		{"pod address plaintext", envoy.Config{Listen: "10.0.0.5:9191"}, false},
		{"host name plaintext", envoy.Config{Listen: "consentry:9191"}, false},
		{"0.0.0.0 TLS without client CA", envoy.Config{Listen: "0.0.0.0:9191", TLS: serverTLS}, false},
		{"0.0.0.0 mutual TLS", envoy.Config{Listen: "0.0.0.0:9191", TLS: mutualTLS}, true},
		{"127.0.0.1 TLS without client CA", envoy.Config{Listen: "127.0.0.1:9191", TLS: serverTLS}, true},
		{"0.0.0.0 plaintext, explicit opt-out", envoy.Config{Listen: "0.0.0.0:9191", InsecureUnauthenticatedClients: true}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.WithDefaults().Validate()
			switch {
			case c.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case !c.ok && err == nil:
				t.Fatal("accepted: any client that reaches it can claim an identity and have records decrypted")
			case !c.ok && !strings.Contains(err.Error(), "insecure_unauthenticated_clients"):
				t.Errorf("the error does not name the opt-out: %v", err)
			}
		})
	}
}
