package proxy_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/proxy"
	"github.com/consentry/consentry/sidecar/transform"
	tt "github.com/consentry/consentry/sidecar/transform/transformtest"
)

// rangeCRM serves one record the way nginx, a cache or Go's http.ServeContent do: it honours
// Range, If-Range and the conditionals against a strong ETag computed over the whole stored
// record (and Last-Modified). It remembers the headers of the last request it got.
type rangeCRM struct {
	record []byte
	etag   string
	mu     sync.Mutex
	seen   http.Header
}

func newRangeCRM(t *testing.T, record string) (*rangeCRM, string) {
	sum := sha256.Sum256([]byte(record))
	c := &rangeCRM{record: []byte(record), etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.seen = r.Header.Clone()
		c.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("ETag", c.etag)
		w.Header().Set("Content-MD5", "x")
		w.Header().Set("Digest", "sha-256=x")
		w.Header().Set("X-Crm-Version", "7")
		http.ServeContent(w, r, "", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), bytes.NewReader(c.record))
	}))
	t.Cleanup(srv.Close)
	return c, srv.URL
}

func (c *rangeCRM) lastSeen() http.Header {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen
}

// TestRangeAndConditionalReadsGetTheWholeRecord: a byte range of a record that is itself valid
// JSON (a denied field's bare value, an inner object) would be minimized as a whole document
// and served; a conditional read against the CRM's validator of the whole record would
// confirm a guess of a denied value (304, or 412). The proxy removes Range, If-Range and (on
// reads) the conditionals from the upstream request, so the CRM answers 200 with the whole
// record, which is minimized; the CRM's validators are not served either.
func TestRangeAndConditionalReadsGetTheWholeRecord(t *testing.T) {
	f := newFixture(t)
	record := `{"id":"c-1001","name":"Ada","payment":{"card_number":"4111111111111111","card_expiry":"12/30"},"health":{"notes":"diabetic"}}`
	crm, crmURL := newRangeCRM(t, record)
	url := startProxy(t, proxy.Config{Upstream: crmURL}, f.fx.Pipeline, f.tr)
	byteRange := func(part string) string {
		i := strings.Index(record, part)
		return fmt.Sprintf("bytes=%d-%d", i, i+len(part)-1)
	}
	tests := []struct {
		name string
		hdr  map[string]string
	}{
		{"none (control)", nil},
		{"range over a denied value", map[string]string{"Range": byteRange(`"4111111111111111"`)}},
		{"range over an inner object", map[string]string{"Range": byteRange(`{"notes":"diabetic"}`)}},
		{"range with a matching If-Range", map[string]string{"Range": byteRange(`"4111111111111111"`), "If-Range": crm.etag}},
		{"multipart ranges", map[string]string{"Range": byteRange(`"4111111111111111"`) + ",0-5"}},
		{"If-None-Match with the validator of the guessed record", map[string]string{"If-None-Match": crm.etag}},
		{"If-Match with a wrong guess", map[string]string{"If-Match": `"0000"`}},
		{"If-Modified-Since", map[string]string{"If-Modified-Since": "Fri, 02 Jan 2026 03:04:05 GMT"}},
		{"If-Unmodified-Since in the past", map[string]string{"If-Unmodified-Since": "Thu, 01 Jan 2015 00:00:00 GMT"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, "GET", url+"/api/customers/c-1001", f.fx.Agent(), tt.Support, "case-7", "", tc.hdr)
			if r.status != 200 || string(r.body) != `{"id":"c-1001","name":"Ada","payment":{},"health":{}}` {
				t.Fatalf("%d %s", r.status, r.body)
			}
			for _, h := range []string{"ETag", "Last-Modified", "Content-MD5", "Digest", "Accept-Ranges", "Content-Range"} {
				if v := r.header.Get(h); v != "" {
					t.Errorf("CRM's %s %q served with a minimized body", h, v)
				}
			}
			if r.header.Get("X-Crm-Version") != "7" {
				t.Errorf("unrelated CRM header dropped: %v", r.header)
			}
			for _, h := range []string{"Range", "If-Range", "If-None-Match", "If-Match", "If-Modified-Since", "If-Unmodified-Since"} {
				if v := crm.lastSeen().Get(h); v != "" {
					t.Errorf("CRM got %s %q", h, v)
				}
			}
		})
	}
}

// TestWritesKeepPreconditions: a write's If-Match guards against lost updates; removing it
// would make the write unconditional. Range never passes.
func TestWritesKeepPreconditions(t *testing.T) {
	f := newFixture(t)
	up := echo(t)
	url := startProxy(t, proxy.Config{Upstream: up.URL}, f.fx.Pipeline, f.tr)
	r := do(t, "PATCH", url+"/api/customers/c-1001", f.fx.Agent(), tt.Support, "case-7", `{"name":"Ada"}`,
		map[string]string{"If-Match": `"v7"`, "If-Unmodified-Since": "Thu, 01 Jan 2015 00:00:00 GMT", "Range": "bytes=0-3", "If_Range": `"v7"`})
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	seen := r.json(t)["seen"].(map[string]any)
	if seen["if-match"] != `"v7"` || seen["if-unmodified-since"] == nil {
		t.Errorf("write preconditions removed: %v", seen)
	}
	if seen["range"] != nil || seen["if-range"] != nil || seen["if_range"] != nil {
		t.Errorf("range forwarded on a write: %v", seen)
	}
}

// TestReplacedBodyCarriesNoCRMHeaders: when the transformer replaces the CRM's body with a
// deny document, the CRM's headers described a body that is not sent: its Content-Encoding
// would make the plain JSON deny unreadable (Go: "gzip: invalid header"), and its cookies,
// Location, validators and caching must not come with consentry's deny. Only CORS headers
// pass, so that a browser can read the deny.
func TestReplacedBodyCarriesNoCRMHeaders(t *testing.T) {
	f := newFixture(t)
	gz := []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	tests := []struct {
		name, ctype, encoding string
		status                int
		body                  []byte
		code                  string
	}{
		{"compressed", "application/json", "gzip", 200, gz, transform.ReasonEncoded},
		{"invalid JSON", "application/json", "", 200, []byte(`{"id":"c-1001","name":`), transform.ReasonInvalidJSON},
		{"not JSON", "text/csv", "", 200, []byte("id,name\nc-1001,Ada\n"), transform.ReasonNotJSON},
		{"partial", "application/json", "", 206, []byte(`"4111111111111111"`), transform.ReasonPartial},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			crm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h := w.Header()
				h.Set("Content-Type", tc.ctype)
				if tc.encoding != "" {
					h.Set("Content-Encoding", tc.encoding)
				}
				for k, v := range map[string]string{"ETag": `"abc"`, "Last-Modified": "Fri, 02 Jan 2026 03:04:05 GMT", "Set-Cookie": "crm_session=s3cr3t",
					"Location": "/api/customers/c-1001", "Content-Disposition": `attachment; filename="c-1001.json"`, "Cache-Control": "public, max-age=3600",
					"Access-Control-Allow-Origin": "https://app.example.test", "Vary": "Origin"} {
					h.Set(k, v)
				}
				if tc.status == 206 {
					h.Set("Content-Range", "bytes 60-77/200")
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write(tc.body)
			}))
			t.Cleanup(crm.Close)
			url := startProxy(t, proxy.Config{Upstream: crm.URL}, f.fx.Pipeline, f.tr)
			req, _ := http.NewRequest("GET", url+"/api/customers/c-1001", nil)
			req.Header.Set("Authorization", "Bearer "+f.fx.Agent())
			req.Header.Set("X-Purpose", tt.Support)
			req.Header.Set("X-Case-Id", "case-7")
			// A transport that does not decompress: it sees the headers as sent.
			res, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, _ := io.ReadAll(res.Body)
			var deny struct {
				DecisionID string `json:"decision_id"`
				Reasons    []struct{ Code string }
			}
			if res.StatusCode != 502 || json.Unmarshal(body, &deny) != nil || len(deny.Reasons) != 1 || deny.Reasons[0].Code != tc.code {
				t.Fatalf("%d %q", res.StatusCode, body)
			}
			if deny.DecisionID == "" || res.Header.Get(pipeline.HeaderDecisionID) != deny.DecisionID {
				t.Errorf("decision id %q, header %q", deny.DecisionID, res.Header.Get(pipeline.HeaderDecisionID))
			}
			if ct := res.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("content type %q", ct)
			}
			for _, h := range []string{"Content-Encoding", "ETag", "Last-Modified", "Set-Cookie", "Location", "Content-Disposition", "Cache-Control", "Content-Range", "Vary"} {
				if v := res.Header.Get(h); v != "" {
					t.Errorf("deny body sent with the CRM's %s %q", h, v)
				}
			}
			if res.Header.Get("Access-Control-Allow-Origin") != "https://app.example.test" {
				t.Errorf("CORS header dropped: %v", res.Header)
			}
		})
	}
}
