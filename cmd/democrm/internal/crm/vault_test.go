package crm

import (
	"bytes"
	"context"
	"encoding/base64"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// vaultBinary finds a real vault: $CONSENTRY_VAULT_BIN, then bin/vault at the repository
// root (the directory holding go.mod), then vault on PATH. No binary fails the test: the
// seeding path is only proven against a real Vault.
func vaultBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("CONSENTRY_VAULT_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("CONSENTRY_VAULT_BIN=%s: %v", p, err)
		}
		return p
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			if p := filepath.Join(d, "bin", "vault"); isExecutable(p) {
				return p
			}
			break
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	if p, err := exec.LookPath("vault"); err == nil {
		return p
	}
	t.Fatal("no vault binary: set CONSENTRY_VAULT_BIN, run `make vault` (builds bin/vault), or put vault on PATH")
	return ""
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// startVault runs a Vault dev server on a free loopback port with transit enabled and
// returns a root client. The server is stopped when the test ends.
func startVault(t testing.TB) *vault.Client {
	t.Helper()
	bin := vaultBinary(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "server", "-dev", "-dev-root-token-id=root", "-dev-listen-address="+addr, "-dev-no-store-token")
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "VAULT_ADDR=http://"+addr, "HOME="+cmd.Dir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start vault %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	client, err := NewVaultClient("http://"+addr, "root", 8)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		h, err := client.Sys().Health()
		if err == nil && h.Initialized && !h.Sealed {
			break
		}
		select {
		case <-exited:
			t.Fatalf("vault exited: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("vault not ready after 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := client.Sys().Mount("transit", &vault.MountInput{Type: "transit"}); err != nil {
		t.Fatalf("enable transit: %v", err)
	}
	return client
}

func TestSeedWithVault(t *testing.T) {
	client := startVault(t)
	ctx := context.Background()
	if err := EnsureTransit(ctx, client, "transit"); err != nil {
		t.Fatalf("EnsureTransit on a mounted engine: %v", err)
	}
	srv, store := newTestServerEmpty(t)
	const n = 20
	stats, err := Seed(ctx, store, SeedOptions{N: n, Seed: 42, Vault: client})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Customers != n || stats.Keys != n*len(Classes) {
		t.Fatalf("stats %+v", stats)
	}
	want := Generate(n, 42)
	decrypt := func(key, ct string) (string, error) {
		s, err := client.Logical().Write("transit/decrypt/"+key, map[string]any{"ciphertext": ct})
		if err != nil {
			return "", err
		}
		b, err := base64.StdEncoding.DecodeString(s.Data["plaintext"].(string))
		return string(b), err
	}
	for i, plain := range want.Customers {
		// Read through the API: the CRM must return the stored ciphertext untouched.
		stored := decode[Customer](t, do(t, srv, "GET", "/api/customers/"+plain.ID, "", nil).body)
		if stored.Name != plain.Name || stored.MarketingSegment != plain.MarketingSegment {
			t.Fatalf("%s: non-sensitive fields differ: %+v", plain.ID, stored)
		}
		for _, class := range Classes {
			key := KeyName(plain.ID, class)
			cts, pts := classFields(&stored, class), classFields(&want.Customers[i], class)
			for j := range cts {
				if !strings.HasPrefix(*cts[j], "vault:v1:") {
					t.Fatalf("%s %s field %d stored as %q, not transit ciphertext", plain.ID, class, j, *cts[j])
				}
				got, err := decrypt(key, *cts[j])
				if err != nil || got != *pts[j] {
					t.Fatalf("%s %s field %d decrypts to %q (%v), want %q", plain.ID, class, j, got, err, *pts[j])
				}
			}
			k, err := client.Logical().Read("transit/keys/" + key)
			if err != nil || k == nil {
				t.Fatalf("read key %s: %v", key, err)
			}
			if k.Data["type"] != KeyType || k.Data["exportable"] != true || k.Data["deletion_allowed"] != false {
				t.Fatalf("key %s: type %v exportable %v deletion_allowed %v", key, k.Data["type"], k.Data["exportable"], k.Data["deletion_allowed"])
			}
		}
	}
	// Note bodies are ciphertext under the customer's notes key (free text: erasure must reach it).
	wantNotes := map[string]string{}
	for _, n := range want.Notes {
		wantNotes[n.ID] = n.Body
	}
	seen := 0
	for _, plain := range want.Customers {
		stored := decode[List[Note]](t, do(t, srv, "GET", "/api/customers/"+plain.ID+"/notes", "", nil).body)
		for _, n := range stored.Items {
			got, err := decrypt(KeyName(plain.ID, ClassNotes), n.Body)
			if !strings.HasPrefix(n.Body, "vault:v1:") || err != nil || got != wantNotes[n.ID] {
				t.Fatalf("note %s of %s stored as %.24q, decrypts to %q (%v), want %q", n.ID, plain.ID, n.Body, got, err, wantNotes[n.ID])
			}
			seen++
		}
	}
	if seen != len(want.Notes) || seen == 0 {
		t.Fatalf("checked %d notes of %d", seen, len(want.Notes))
	}
	// Keys are per customer: another customer's key must not open this ciphertext.
	first, _ := store.GetCustomer(ctx, "c-000001")
	if _, err := decrypt(KeyName("c-000002", ClassContact), first.Contact.Email); err == nil {
		t.Fatal("c-000001's email decrypted with c-000002's key")
	}
	// Deleting the key (what consentry's erasure does) makes the stored copy unreadable.
	key := KeyName("c-000001", ClassFinancial)
	if _, err := client.Logical().Write("transit/keys/"+key+"/config", map[string]any{"deletion_allowed": true}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Logical().Delete("transit/keys/" + key); err != nil {
		t.Fatal(err)
	}
	if _, err := decrypt(key, first.Payment.CardNumber); err == nil {
		t.Fatal("card number still decrypts after its key was deleted")
	}
}

func TestSeedVaultFailureStoresNothing(t *testing.T) {
	client, err := NewVaultClient("http://"+closedAddr(t), "root", 2)
	if err != nil {
		t.Fatal(err)
	}
	client.SetMaxRetries(0)
	_, store := newTestServerEmpty(t)
	_, err = Seed(context.Background(), store, SeedOptions{N: 5, Seed: 1, Vault: client})
	if err == nil || !strings.Contains(err.Error(), "transit create key consentry-c-00000") {
		t.Fatalf("seed against an unreachable Vault: %v", err)
	}
	if n, _ := store.Count(context.Background()); n != 0 {
		t.Fatalf("%d customers stored after a failed encryption", n)
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return "127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// BenchmarkSeedVault measures seeding against a real Vault dev server (key creation and
// batch encryption for every customer and class); it reports customers per second. Each
// iteration seeds into its own transit mount, so every key is new.
func BenchmarkSeedVault(b *testing.B) {
	client := startVault(b)
	const perOp = 200
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		mount := "transit-bench-" + strconv.Itoa(i)
		if err := EnsureTransit(context.Background(), client, mount); err != nil {
			b.Fatal(err)
		}
		store, err := Open(filepath.Join(b.TempDir(), "crm.db"))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := Seed(context.Background(), store, SeedOptions{N: perOp, Seed: 42, Vault: client, Mount: mount}); err != nil {
			b.Fatal(err)
		}
		store.Close()
	}
	b.ReportMetric(float64(perOp*b.N)/b.Elapsed().Seconds(), "customers/s")
}
