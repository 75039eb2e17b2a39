package bundle

import "testing"

func TestDisplayURLHidesCredentials(t *testing.T) {
	for raw, want := range map[string]string{
		"https://bundles.example/consentry.tar.gz":             "https://bundles.example/consentry.tar.gz",
		"https://user:s3cret@bundles.example/b.tar.gz":         "https://user:xxxxx@bundles.example/b.tar.gz",
		"https://bundles.example/b.tar.gz?X-Amz-Signature=abc": "https://bundles.example/b.tar.gz?redacted",
		"https://u:p@bundles.example/b.tar.gz?token=abc&x=1":   "https://u:xxxxx@bundles.example/b.tar.gz?redacted",
		"http://[::1]:namedport/b":                             "(unparsable URL)",
	} {
		if got := displayURL(raw); got != want {
			t.Errorf("displayURL(%q) = %q, want %q", raw, got, want)
		}
	}
}
