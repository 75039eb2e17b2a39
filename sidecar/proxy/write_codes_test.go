package proxy_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/consentry/consentry/sidecar/proxy"
	"github.com/consentry/consentry/sidecar/transform"
	tt "github.com/consentry/consentry/sidecar/transform/transformtest"
)

// TestWriteRefusalsThatRetryingCannotCure: a write whose sensitive fields can never be
// encrypted is refused with a 4xx and its own reason code, not the 503 write.keys_unavailable
// that tells a client (and an operator's alerting) to retry; the CRM gets nothing either way.
func TestWriteRefusalsThatRetryingCannotCure(t *testing.T) {
	e := tt.Start(t, tt.Options{})
	url := startProxy(t, proxy.Config{Upstream: e.CRM}, e.Pipeline, e.Transformer)

	t.Run("customer id that cannot name a key", func(t *testing.T) {
		r := do(t, "POST", url+"/api/customers", e.Agent(), tt.Support, "case-7",
			`{"id":"c..9002","name":"New","contact":{"email":"n@example.test"}}`, nil)
		if r.status != 422 || !bytes.Contains(r.body, []byte(transform.ReasonWriteCustomerKey)) {
			t.Fatalf("%d %s, want 422 %s", r.status, r.body, transform.ReasonWriteCustomerKey)
		}
		if bytes.Contains(r.body, []byte("n@example.test")) {
			t.Fatalf("refusal echoes the plaintext: %s", r.body)
		}
		if st := do(t, "GET", e.CRM+"/api/customers/c..9002", "", "", "", "", nil); st.status == 200 {
			t.Fatalf("the CRM stored the refused create: %s", st.body)
		}
	})

	t.Run("erased customer", func(t *testing.T) {
		if _, err := e.Keys.Erase(context.Background(), "c-3003", "dpo-1", "consent withdrawn"); err != nil {
			t.Fatal(err)
		}
		before := e.Stored(t, "c-3003")
		r := do(t, "PATCH", url+"/api/customers/c-3003", e.Customer("c-3003"), tt.Self, "",
			`{"contact":{"email":"again@example.test"}}`, nil)
		if r.status != 410 || !bytes.Contains(r.body, []byte(transform.ReasonWriteErased)) {
			t.Fatalf("%d %s, want 410 %s", r.status, r.body, transform.ReasonWriteErased)
		}
		if fmt.Sprint(e.Stored(t, "c-3003")) != fmt.Sprint(before) {
			t.Fatal("the CRM got a write for an erased customer")
		}
	})
}
