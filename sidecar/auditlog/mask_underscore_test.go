package auditlog

import (
	"bytes"
	"testing"
)

// TestUnderscoreCredentialHeadersNeverLogged: CGI-style stacks read Proxy_Authorization as
// Proxy-Authorization, so the underscore spelling of a credential header is a credential too.
func TestUnderscoreCredentialHeadersNeverLogged(t *testing.T) {
	f := newFixture(t)
	l := f.open(t)
	e := entry(t, 0)
	e.Input.Request.Headers["proxy_authorization"] = []string{"Basic c2VjcmV0LXVuZGVyc2NvcmU="}
	e.Input.Request.Headers["x_api_key"] = []string{"key-underscore"}
	if err := l.Append(t.Context(), e); err != nil {
		t.Fatal(err)
	}
	l.Close()
	var raw []byte
	var erased []string
	if err := ScanEvents(f.dir, func(ev *Event, line []byte) error {
		if ev.Type == TypeDecision {
			raw, erased = append([]byte(nil), line...), ev.Erased
		}
		return nil
	}); err != nil || raw == nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"c2VjcmV0LXVuZGVyc2NvcmU=", "key-underscore"} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("log line contains %q", secret)
		}
	}
	for _, p := range erased {
		if !CredentialPointer(p) {
			t.Errorf("erased %s is not reported as a credential pointer", p)
		}
	}
	for p, want := range map[string]bool{
		"/input/request/headers/proxy_authorization": true,
		"/input/request/headers/X_Api_Key":           true,
		"/input/request/query/access_token":          true,
		"/input/request/query/access-token":          false,
		"/input/request/headers/x-purpose":           false,
	} {
		if got := CredentialPointer(p); got != want {
			t.Errorf("CredentialPointer(%s) = %v, want %v", p, got, want)
		}
	}
}
