package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSeedAndServe drives the command as the demo does: seed a database, serve it on a free
// port announced on stdout, answer a request, and stop cleanly when cancelled.
func TestSeedAndServe(t *testing.T) {
	db := filepath.Join(t.TempDir(), "crm.db")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"seed", "-db", db, "-n", "30", "-plaintext"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "seeded 30 customers") {
		t.Fatalf("seed output %q", out.String())
	}
	if err := run(context.Background(), []string{"seed", "-db", db, "-n", "30", "-plaintext"}, io.Discard, io.Discard); err == nil {
		t.Fatal("second seed without -force succeeded")
	}

	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-db", db}, pw, io.Discard); pw.Close() }()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no listening line: %v", err)
	}
	go io.Copy(io.Discard, pr)
	base := strings.TrimSpace(strings.TrimPrefix(line, "democrm listening on "))
	resp, err := http.Get(base + "/api/customers?page_size=5")
	if err != nil {
		t.Fatal(err)
	}
	var page struct {
		Total int `json:"total"`
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	err = json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if err != nil || page.Total != 30 || len(page.Items) != 5 || page.Items[0].ID != "c-000001" {
		t.Fatalf("list: %+v, %v", page, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
}

func TestUsageErrors(t *testing.T) {
	t.Setenv("VAULT_ADDR", "")
	for _, args := range [][]string{
		{"-nope"},
		{"serve", "extra"},
		{"seed", "-n", "x"},
		{"seed", "-db", filepath.Join(t.TempDir(), "x.db"), "-vault-addr", ""},
	} {
		err := run(context.Background(), args, io.Discard, io.Discard)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("run %q: %v, want a usage error", args, err)
		}
	}
	if err := run(context.Background(), []string{"-listen", "256.0.0.1:1", "-db", filepath.Join(t.TempDir(), "x.db")}, io.Discard, io.Discard); err == nil {
		t.Error("serving on an invalid address succeeded")
	}
}
