package transform_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/routes"
	"github.com/consentry/consentry/sidecar/transform"
)

// testCiphertext is well-formed transit ciphertext no key here decrypts.
var testCiphertext = "vault:v1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 40))

// TestCiphertextNeverPassedAsValue: whatever shape the CRM gives a value, ciphertext the walk
// does not decrypt is withheld (null, named in x-consentry-withheld), and a field is logged as
// released only for what was served as plaintext. Without keys nothing decrypts, so no
// ciphertext may come out at all. The support agent's decision allows contact.email (key
// scope contact) and drops payment.* and health.notes.
func TestCiphertextNeverPassedAsValue(t *testing.T) {
	tr, err := transform.New(transform.Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ct := testCiphertext
	read := check(t, "GET", "/api/customers/c-1001", fx.Agent(), "essential.service.operations.support", "case-7")
	notes := check(t, "GET", "/api/customers/c-1001/notes", fx.Agent(), "essential.service.operations.support", "case-7")
	tests := []struct {
		name     string
		out      *pipeline.Outcome
		body     string
		want     string   // the served body
		withheld []string // x-consentry-withheld
		released []string // must be listed as released
		notRel   []string // must not be listed as released
	}{
		{name: "unlisted member", out: read, body: `{"id":"c-1001","unlisted":"` + ct + `"}`,
			want: `{"id":"c-1001","unlisted":null}`, withheld: []string{"unlisted"}},
		{name: "string at an intermediate node", out: read, body: `{"id":"c-1001","contact":"` + ct + `"}`,
			want: `{"id":"c-1001","contact":null}`, withheld: []string{"contact"}},
		{name: "array at an intermediate node of denied fields", out: read, body: `{"id":"c-1001","payment":["` + ct + `",{"card_number":"4111"}]}`,
			want: `{"id":"c-1001","payment":[null,{}]}`, withheld: []string{"payment"}},
		{name: "array under an allowed field", out: read, body: `{"id":"c-1001","contact":{"email":["` + ct + `","plain@example.test"]}}`,
			want: `{"id":"c-1001","contact":{"email":[null,"plain@example.test"]}}`, withheld: []string{"contact.email"}, released: []string{"contact.email"}},
		{name: "object under an allowed field", out: read, body: `{"id":"c-1001","contact":{"email":{"value":"` + ct + `"}}}`,
			want: `{"id":"c-1001","contact":{"email":{"value":null}}}`, withheld: []string{"contact.email"}, notRel: []string{"contact.email"}},
		{name: "escaped ciphertext under an allowed field", out: read, body: `{"contact":{"email":[["vault\u003a` + ct[6:] + `"]]}}`,
			want: `{"contact":{"email":[[null]]}}`, withheld: []string{"contact.email"}, notRel: []string{"contact.email"}},
		{name: "plaintext array under an allowed field is released", out: read, body: `{"contact":{"email":["a@example.test"]}}`,
			want: `{"contact":{"email":["a@example.test"]}}`, released: []string{"contact.email"}},
		{name: "bare string document", out: read, body: `"` + ct + `"`, want: `null`, withheld: []string{"$"}},
		{name: "envelope member of a record list", out: notes, body: `{"items":[],"customer_email":"` + ct + `"}`,
			want: `{"items":[],"customer_email":null}`, withheld: []string{"customer_email"}},
		{name: "nested envelope member next to null records", out: notes, body: `{"items":null,"meta":{"owner":["` + ct + `"]},"total":0}`,
			want: `{"items":null,"meta":{"owner":[null]},"total":0}`, withheld: []string{"meta.owner"}},
		{name: "envelope and record both scrubbed", out: notes, body: `{"cursor":"` + ct + `","items":[{"id":"n1","x":"` + ct + `"}]}`,
			want: `{"cursor":null,"items":[{"id":"n1","x":null}]}`, withheld: []string{"cursor", "x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := tr.Response(context.Background(), fx.Pipeline, tc.out, transform.Response{Status: 200, ContentType: "application/json", Body: []byte(tc.body)})
			enf := res.Enforcement
			if res.Status != 200 || string(res.Body) != tc.want || bytes.Contains(res.Body, []byte("vault:v")) {
				t.Fatalf("got %d %s\nwant %s", res.Status, res.Body, tc.want)
			}
			if !json.Valid(res.Body) {
				t.Fatalf("invalid JSON %s", res.Body)
			}
			if !slices.Equal(enf.Withheld, tc.withheld) || res.Headers[transform.HeaderWithheld] != strings.Join(tc.withheld, ",") {
				t.Errorf("withheld %v, header %q, want %v", enf.Withheld, res.Headers[transform.HeaderWithheld], tc.withheld)
			}
			for _, f := range tc.released {
				if !slices.Contains(enf.FieldsReleased, f) {
					t.Errorf("%s not logged as released: %v", f, enf.FieldsReleased)
				}
			}
			for _, f := range tc.notRel {
				if slices.Contains(enf.FieldsReleased, f) {
					t.Errorf("%s logged as released although nothing of it was served: %v", f, enf.FieldsReleased)
				}
			}
		})
	}
}

// TestPartialResponsesFailClosed: a 206, or any response with a Content-Range, is a slice of
// a representation; a slice that is valid JSON would be minimized as a whole record. It is
// replaced with 502 response.partial, except a non-JSON body on a body: any route (which
// passes unchanged whole or not).
func TestPartialResponsesFailClosed(t *testing.T) {
	tr, err := transform.New(transform.Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	read := check(t, "GET", "/api/customers/c-1001", fx.Agent(), "essential.service.operations.support", "case-7")
	anyBody := withRoute(read, func(r *routes.Route) { r.Body = routes.BodyAny })
	tests := []struct {
		name   string
		out    *pipeline.Outcome
		resp   transform.Response
		status int
	}{
		{"206 with a denied field's bare value", read, transform.Response{Status: 206, ContentType: "application/json", ContentRange: "bytes 60-77/200", Body: []byte(`"4111111111111111"`)}, 502},
		{"206 with an inner object", read, transform.Response{Status: 206, ContentType: "application/json", Body: []byte(`{"notes":"diabetic"}`)}, 502},
		{"206 without a body", read, transform.Response{Status: 206, ContentType: "application/json"}, 502},
		{"Content-Range on a 200", read, transform.Response{Status: 200, ContentType: "application/json", ContentRange: "bytes 0-9/200", Body: []byte(`{"id":"c"}`)}, 502},
		{"416 with Content-Range", read, transform.Response{Status: 416, ContentType: "application/json", ContentRange: "bytes */200", Body: []byte(`{}`)}, 502},
		{"206 of text on a JSON route", read, transform.Response{Status: 206, ContentType: "text/plain", Body: []byte(`4111111111111111`)}, 502},
		{"206 of JSON on a body: any route", anyBody, transform.Response{Status: 206, ContentType: "application/json", Body: []byte(`{"notes":"diabetic"}`)}, 502},
		{"206 of a file on a body: any route passes", anyBody, transform.Response{Status: 206, ContentType: "application/pdf", ContentRange: "bytes 0-3/9", Body: []byte(`%PDF`)}, 206},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := tr.Response(context.Background(), fx.Pipeline, tc.out, tc.resp)
			if res.Status != tc.status {
				t.Fatalf("status %d body %s", res.Status, res.Body)
			}
			if tc.status != 502 {
				if res.Replaced || !bytes.Equal(res.Body, tc.resp.Body) {
					t.Fatalf("changed: %s", res.Body)
				}
				return
			}
			if !res.Replaced || !strings.Contains(string(res.Body), transform.ReasonPartial) || strings.Contains(string(res.Body), "4111") ||
				strings.Contains(string(res.Body), "diabetic") || res.Enforcement.Status != 502 {
				t.Fatalf("not replaced: %+v %s", res.Enforcement, res.Body)
			}
		})
	}
}

// withRoute copies out with its route changed by fn (the route map has no such route).
func withRoute(out *pipeline.Outcome, fn func(*routes.Route)) *pipeline.Outcome {
	o := *out
	m := *o.Match
	r := *m.Route
	fn(&r)
	m.Route = &r
	o.Match = &m
	return &o
}
