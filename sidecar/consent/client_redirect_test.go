package consent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestClientNeverFollowsRedirects: a proxy in front of the admin API that redirects to a login
// page answering 200 must not read as a recorded consent or a finished import.
func TestClientNeverFollowsRedirects(t *testing.T) {
	var loginHits int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/login" {
			loginHits++
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{}`))
			return
		}
		http.Redirect(w, r, "/login", http.StatusFound)
	}))
	defer srv.Close()
	cl := &Client{BaseURL: srv.URL, Token: "t", Context: context.Background()}
	err := cl.Do(http.MethodPost, "/v1/consents", map[string]string{"customer_id": "C-1", "purpose": "marketing.communications.email"}, nil)
	var ce *Error
	if !errors.As(err, &ce) || ce.Status != http.StatusFound {
		t.Fatalf("grant through a redirect: %v, want an error with status 302", err)
	}
	_, err = cl.Import(strings.NewReader("customer_id,purpose,status\nC-1,marketing.communications.email,granted\n"), "")
	if !errors.As(err, &ce) || ce.Status != http.StatusFound {
		t.Fatalf("import through a redirect: %v, want an error with status 302", err)
	}
	if loginHits != 0 {
		t.Fatalf("the client followed the redirect %d times", loginHits)
	}
}
