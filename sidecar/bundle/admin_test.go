package bundle_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentry/consentry/sidecar/admin"
	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/bundle/bundletest"
)

func TestAdminReadinessAndStatus(t *testing.T) {
	f := newFixture(t, bundle.Config{File: "unused"})
	srv := admin.New(admin.Config{}, prometheus.NewRegistry())
	f.mgr.Register(srv)
	get := func(path string) (int, map[string]any) {
		resp, err := srv.App().Test(httptest.NewRequest("GET", path, nil))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var body map[string]any
		if err := json.Unmarshal(raw, &body); err != nil {
			t.Fatalf("%s: %s", path, raw)
		}
		return resp.StatusCode, body
	}
	if code, _ := get("/ready"); code != 503 {
		t.Fatalf("/ready before a bundle: %d", code)
	}
	es := bundletest.DevES256(t)
	if err := f.mgr.ActivateTarball(context.Background(), signedBundle(t, "2026-11-22T08:00:00Z-a", es, ""), "test"); err != nil {
		t.Fatal(err)
	}
	if code, body := get("/ready"); code != 200 {
		t.Fatalf("/ready after activation: %d %v", code, body)
	}
	_, body := get("/status")
	pol, _ := body["policy"].(map[string]any)
	active, _ := pol["active"].(map[string]any)
	if pol["ready"] != true || active["name"] != "consentry" || active["revision"] != "2026-11-22T08:00:00Z-a" || active["keyid"] != es.ID {
		t.Fatalf("/status policy section: %v", body["policy"])
	}
}
