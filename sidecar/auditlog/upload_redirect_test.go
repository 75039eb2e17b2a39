package auditlog

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestUploadRedirectIsNotDelivery: an auth proxy in front of the collector answers every POST
// with a redirect to its login page, which answers 200 to anything. Followed, a 301/302/303
// turns the POST into a GET without the body and the login page's 200 acknowledged the batch:
// the cursor moved to the end while the collector stored nothing (and retention could then
// delete the segments). Redirects are never followed: each is a failure, alarmed with its
// Location, the cursor stays, and everything arrives once the proxy lets the POSTs through.
func TestUploadRedirectIsNotDelivery(t *testing.T) {
	for _, status := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			c := &testCollector{t: t, got: map[string]int{}}
			var login atomic.Int64 // requests that reached the login page
			mux := http.NewServeMux()
			mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
				login.Add(1)
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "text/html")
				_, _ = io.WriteString(w, "<html><body>Please sign in</body></html>")
			})
			mux.Handle("/", c)
			srv := httptest.NewServer(mux)
			t.Cleanup(srv.Close)
			var open atomic.Bool
			c.setAnswer(func(int, int, int) (int, http.Header, string) {
				if open.Load() {
					return http.StatusNoContent, nil, ""
				}
				return status, http.Header{"Location": {"/login?next=%2Flogs"}}, "<a href=\"/login\">moved</a>"
			})

			f := newFixture(t)
			f.cfg.Upload = uploadCfg(srv.URL + "/logs")
			l, logs := openLogged(t, f)
			appendN(t, l, 0, 14)
			deadline := time.Now().Add(30 * time.Second) // generous: a busy machine may be slow to retry
			for {
				if _, _, answers := c.snapshot(); len(answers) >= 3 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the uploader did not retry the redirected POST")
				}
				time.Sleep(5 * time.Millisecond)
			}
			st, _ := l.UploadStatus()
			// seq 0 is the open checkpoint, which is not uploaded: the cursor may pass it, and
			// no decision.
			if got, accepted, _ := c.snapshot(); l.uploader.Cursor() > 0 || len(got) != 0 || len(accepted) != 0 {
				t.Fatalf("cursor moved to %d on redirects, collector has %d ids (status %+v)", l.uploader.Cursor(), len(got), st)
			}
			if st.Failures == 0 || st.LastStatus != status || !strings.Contains(st.LastError, "/login") {
				t.Fatalf("upload status %+v: want failures, last status %d naming the Location", st, status)
			}
			if n := login.Load(); n != 0 {
				t.Fatalf("the redirect was followed: %d requests reached the login page", n)
			}
			out := logs.String()
			if !strings.Contains(out, "alarm=true") || !strings.Contains(out, fmt.Sprintf("status=%d", status)) || !strings.Contains(out, `location="/login?next=%2Flogs"`) ||
				!strings.Contains(out, "not followed") {
				t.Fatalf("the redirect is not alarmed with its status and Location:\n%s", out)
			}

			open.Store(true)
			waitDelivered(t, c, l, 14)
		})
	}
}
