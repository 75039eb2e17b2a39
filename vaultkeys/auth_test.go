package vaultkeys

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// AppRole login with a least-privilege role; when the token is revoked behind consentry's
// back, fields are withheld (ErrUnauthenticated, never plaintext) and consentry logs in again
// with backoff and recovers on its own.
func TestAppRoleReauthAfterRevocation(t *testing.T) {
	srv := startVault(t)
	roleID, secretID := srv.EnableAppRole(t, "consentry", time.Hour, "consentry")
	cfg := testConfig(t, srv)
	cfg.Auth = AuthConfig{Method: AuthAppRole, RoleID: roleID, SecretIDFile: filepath.Join(t.TempDir(), "secret-id"),
		BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond}
	if err := os.WriteFile(cfg.Auth.SecretIDFile, []byte(secretID+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := newManager(t, cfg, Options{})
	ctx := context.Background()
	if err := m.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	d := allow(map[string]string{"e": "contact"})
	ks, err := m.ReleaseForWrite(ctx, "a1", d)
	if err != nil {
		t.Fatal(err)
	}
	ct, _ := ks.Encrypt("contact", []byte("ada@example.org"))

	// Revoke consentry's token.
	if err := srv.Client(t).Auth().Token().RevokeTree(m.client.Token()); err != nil {
		t.Fatal(err)
	}
	m.cache.purge()
	ks, err = m.Release(ctx, "a1", d)
	if !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("release with a revoked token: %v", err)
	}
	if plain, w := ks.DecryptFields(d, map[string]string{"e": ct}); len(plain) != 0 || len(w) != 1 || w[0].Reason != ReasonUnauthenticated {
		t.Fatalf("revoked: plain %v withheld %+v", plain, w)
	}
	eventually(t, 30*time.Second, "re-authentication", func() bool {
		ks, err := m.Release(ctx, "a1", d)
		if err != nil {
			return false
		}
		pt, err := ks.Decrypt("contact", ct)
		return err == nil && string(pt) == "ada@example.org"
	})
}

// A renewable token with a short TTL is kept alive by the lifetime watcher.
func TestTokenRenewedByLifetimeWatcher(t *testing.T) {
	srv := startVault(t)
	cfg := testConfig(t, srv)
	cfg.Auth.Token = srv.CreateToken(t, 2*time.Second, "consentry")
	m := newManager(t, cfg, Options{})
	time.Sleep(3 * time.Second) // past the original TTL
	if _, err := m.ReleaseForWrite(context.Background(), "w1", allow(map[string]string{"e": "contact"})); err != nil {
		t.Fatalf("token not renewed: %v", err)
	}
	if m.client.Token() != cfg.Auth.Token {
		t.Fatal("token method must keep the configured token")
	}
}

// A rejected static token: withheld while unauthenticated; a rotated token file (e.g. written
// by Vault Agent) is picked up by the re-login loop.
func TestTokenFileRotation(t *testing.T) {
	srv := startVault(t)
	cfg := testConfig(t, srv)
	cfg.Auth = AuthConfig{Method: AuthToken, TokenFile: filepath.Join(t.TempDir(), "token"),
		BackoffMin: 50 * time.Millisecond, BackoffMax: 100 * time.Millisecond}
	if err := os.WriteFile(cfg.Auth.TokenFile, []byte("hvs.not-a-valid-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := newManager(t, cfg, Options{})
	ctx := context.Background()
	if err := m.Ready(ctx); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("ready with a bad token: %v", err)
	}
	d := allow(map[string]string{"e": "contact"})
	if _, err := m.ReleaseForWrite(ctx, "t1", d); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("release with a bad token: %v", err)
	}
	if err := os.WriteFile(cfg.Auth.TokenFile, []byte(srv.CreateToken(t, time.Hour, "consentry")), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "token file pickup", func() bool { return m.Ready(ctx) == nil })
	if _, err := m.ReleaseForWrite(ctx, "t1", d); err != nil {
		t.Fatal(err)
	}
}

// Kubernetes auth against Vault's real kubernetes auth method. No Kubernetes cluster runs
// here: a stub answers the TokenReview API call Vault makes, the rest (JWT parsing, role
// binding to service account and namespace, token issuance with the consentry policy) is
// Vault's own code.
func TestKubernetesAuth(t *testing.T) {
	srv := startVault(t)
	jwt := serviceAccountJWT(t, "crm", "consentry", "uid-1")
	kube := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
			http.NotFound(w, r)
			return
		}
		var review struct {
			Spec struct {
				Token string `json:"token"`
			} `json:"spec"`
		}
		body, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(body, &review)
		status := map[string]any{"authenticated": false}
		if review.Spec.Token == jwt {
			status = map[string]any{"authenticated": true,
				"user": map[string]any{"username": "system:serviceaccount:crm:consentry", "uid": "uid-1"}}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})
	}))
	t.Cleanup(kube.Close)

	root := srv.Client(t)
	if err := root.Sys().EnableAuth("kubernetes", "kubernetes", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("auth/kubernetes/config", map[string]any{
		"kubernetes_host": kube.URL, "disable_local_ca_jwt": true,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("auth/kubernetes/role/consentry", map[string]any{
		"bound_service_account_names": "consentry", "bound_service_account_namespaces": "crm",
		"token_policies": "consentry", "token_no_default_policy": true, "token_ttl": "1h",
	}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := testConfig(t, srv)
	cfg.Auth = AuthConfig{Method: AuthKubernetes, Role: "consentry", JWTFile: filepath.Join(dir, "token"),
		BackoffMin: 50 * time.Millisecond, BackoffMax: 100 * time.Millisecond}
	if err := os.WriteFile(cfg.Auth.JWTFile, []byte(jwt), 0o600); err != nil {
		t.Fatal(err)
	}
	m := newManager(t, cfg, Options{})
	if err := m.Ready(context.Background()); err != nil {
		t.Fatalf("kubernetes login: %v", err)
	}
	if _, err := m.ReleaseForWrite(context.Background(), "k1", allow(map[string]string{"e": "contact"})); err != nil {
		t.Fatal(err)
	}

	// A service account of another namespace is refused by the role: fail closed.
	other := cfg
	other.Auth.JWTFile = filepath.Join(dir, "other")
	if err := os.WriteFile(other.Auth.JWTFile, []byte(serviceAccountJWT(t, "default", "consentry", "uid-2")), 0o600); err != nil {
		t.Fatal(err)
	}
	m2 := newManager(t, other, Options{})
	if err := m2.Ready(context.Background()); !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "namespace not authorized") {
		t.Fatalf("wrong namespace: %v", err)
	}
}

// serviceAccountJWT makes a legacy Kubernetes service account token (ES256).
func serviceAccountJWT(t *testing.T, ns, name, uid string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	header, _ := json.Marshal(map[string]string{"alg": "ES256", "typ": "JWT"})
	claims, _ := json.Marshal(map[string]any{
		"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:" + ns + ":" + name,
		"kubernetes.io/serviceaccount/namespace":            ns,
		"kubernetes.io/serviceaccount/service-account.name": name,
		"kubernetes.io/serviceaccount/service-account.uid":  uid,
		"kubernetes.io/serviceaccount/secret.name":          name + "-token",
	})
	signing := enc.EncodeToString(header) + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signing + "." + enc.EncodeToString(sig)
}

// When the token reaches its max TTL the lifetime watcher stops, and consentry logs in again
// before requests notice.
func TestAppRoleReloginAtMaxTTL(t *testing.T) {
	srv := startVault(t)
	roleID, secretID := srv.EnableAppRole(t, "short", time.Second, "consentry")
	if _, err := srv.Client(t).Logical().Write("auth/approle/role/short", map[string]any{"token_max_ttl": "2s"}); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, srv)
	cfg.Auth = AuthConfig{Method: AuthAppRole, RoleID: roleID, SecretID: secretID,
		BackoffMin: 50 * time.Millisecond, BackoffMax: 100 * time.Millisecond}
	m := newManager(t, cfg, Options{})
	first := m.client.Token()
	eventually(t, 30*time.Second, "a new token after max TTL", func() bool {
		return m.client.Token() != first && m.Ready(context.Background()) == nil
	})
	time.Sleep(1500 * time.Millisecond) // past the first token's max TTL
	// Tokens keep expiring every 2s; consentry keeps logging in (a request that lands in the
	// gap between expiry and re-login is withheld, and the next one succeeds).
	eventually(t, 20*time.Second, "release after max TTL", func() bool {
		_, err := m.ReleaseForWrite(context.Background(), "ttl1", allow(map[string]string{"e": "contact"}))
		return err == nil
	})
}
