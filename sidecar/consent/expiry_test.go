package consent

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/enrich"
)

func testExpiry(t *testing.T, backend string) {
	ctx := context.Background()
	var mu sync.Mutex
	var got []ExpiryNotice
	fail := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		m := hmac.New(sha256.New, []byte("s3cret"))
		m.Write(body)
		if r.Header.Get("X-Consentry-Signature") != "sha256="+hex.EncodeToString(m.Sum(nil)) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if fail {
			fail = false
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		var n ExpiryNotice
		_ = json.Unmarshal(body, &n)
		got = append(got, n)
	}))
	defer srv.Close()
	cfg := testConfig(t, backend)
	cfg.Expiry.NoticeDays = 7
	cfg.Expiry.WebhookURL = srv.URL
	cfg.Expiry.WebhookSecretFile = tempFile(t, "secret", "s3cret\n")
	clk := &clock{t: time.Now()}
	s := openStore(t, cfg, Options{Now: clk.now})
	at := func(d time.Duration) *time.Time { x := clk.t.Add(d); return &x }
	grants := map[string]*time.Time{"soon": at(3 * 24 * time.Hour), "later": at(30 * 24 * time.Hour), "gone": at(time.Hour)}
	for id, exp := range grants {
		in := grantInput(id, "marketing.communications.email")
		in.ExpiresAt = exp
		if _, err := s.Grant(ctx, in, "a"); err != nil {
			t.Fatal(err)
		}
	}
	// First sweep: "soon" and "gone" are within 7 days; the webhook fails once (retried).
	r, err := s.SweepExpiry(ctx)
	if err != nil || r.Expired != 0 || r.Notified+r.Failed != 2 || r.Failed != 1 {
		t.Fatalf("sweep 1 %+v %v", r, err)
	}
	r, err = s.SweepExpiry(ctx)
	if err != nil || r.Notified != 1 || r.Failed != 0 {
		t.Fatalf("sweep 2 (retry) %+v %v", r, err)
	}
	if r, _ = s.SweepExpiry(ctx); r.Notified != 0 {
		t.Fatalf("notice sent twice: %+v", r)
	}
	mu.Lock()
	if len(got) != 2 || got[0].Type != "consent.expiring" || got[0].Purpose != "marketing.communications.email" {
		t.Fatalf("webhook got %+v", got)
	}
	mu.Unlock()
	// Two hours later "gone" has expired: lookups say so at once, the sweep records it.
	clk.t = clk.t.Add(2 * time.Hour)
	if e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "gone"}); e.Consents[0].Status != KindExpired {
		t.Fatalf("lookup of expired grant: %+v", e.Consents)
	}
	r, err = s.SweepExpiry(ctx)
	if err != nil || r.Expired != 1 {
		t.Fatalf("sweep 3 %+v %v", r, err)
	}
	h, _ := s.History(ctx, "gone")
	if len(h) != 2 || h[1].Kind != KindExpired || h[1].RecordedBy != "consentry-expiry" {
		t.Fatalf("expired event %+v", h)
	}
	if r, _ = s.SweepExpiry(ctx); r.Expired != 0 {
		t.Fatalf("expired twice: %+v", r)
	}
	if cv, _ := s.Customer(ctx, "gone"); cv.Consents[0].Status != KindExpired {
		t.Fatalf("current after expiry %+v", cv.Consents)
	}
}

// TestSweepDoesNotExpireARenewal: a renewal or a withdrawal recorded after the sweep read
// the due grant is not overwritten by the expiry (the expiry is in the ledger, with no
// effect on the current state, in the store and in the view).
func TestSweepDoesNotExpireARenewal(t *testing.T) {
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			clk := &clock{t: time.Now()}
			cfg := testConfig(t, backend)
			cfg.Expiry.NoticeDays = -1
			s := openStore(t, cfg, Options{Now: clk.now, NoBackground: true})
			const purpose = "marketing.communications.email"
			for _, id := range []string{"renews", "withdraws", "lapses"} {
				in := grantInput(id, purpose)
				exp := clk.t.Add(time.Hour)
				in.ExpiresAt = &exp
				if _, err := s.Grant(ctx, in, "a"); err != nil {
					t.Fatal(err)
				}
			}
			clk.t = clk.t.Add(2 * time.Hour)
			later := clk.t.Add(365 * 24 * time.Hour)
			s.afterDue = func() {
				in := grantInput("renews", purpose)
				in.ExpiresAt = &later
				if _, err := s.Grant(ctx, in, "a"); err != nil {
					t.Error(err)
				}
				if _, err := s.Withdraw(ctx, ConsentInput{CustomerID: "withdraws", Purpose: purpose, Channel: "phone"}, "a"); err != nil {
					t.Error(err)
				}
			}
			r, err := s.SweepExpiry(ctx)
			if err != nil || r.Expired != 1 {
				t.Fatalf("sweep %+v %v (want only \"lapses\" expired)", r, err)
			}
			for id, want := range map[string]string{"renews": KindGranted, "withdraws": KindWithdrawn, "lapses": KindExpired} {
				cv, err := s.Customer(ctx, id)
				if err != nil || len(cv.Consents) != 1 || cv.Consents[0].Status != want {
					t.Fatalf("%s: current %+v %v, want %s", id, cv.Consents, err, want)
				}
				e, _ := s.Enrich(ctx, enrich.Query{CustomerID: id, Purpose: purpose})
				if len(e.Consents) != 1 || e.Consents[0].Status != want {
					t.Fatalf("%s: view %+v, want %s", id, e.Consents, want)
				}
				_, cur, _, _ := s.be.Customer(ctx, id)
				if len(cur) != 1 || cur[0].Status != want {
					t.Fatalf("%s: stored %+v, want %s", id, cur, want)
				}
			}
			if h, _ := s.History(ctx, "renews"); len(h) != 3 || h[2].Kind != KindExpired {
				t.Fatalf("the superseded expiry is not in the ledger: %+v", h)
			}
		})
	}
}
