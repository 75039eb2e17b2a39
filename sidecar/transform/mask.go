package transform

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"unicode/utf8"

	"github.com/consentry/consentry/sidecar/decision"
)

// Redacted is what a redacted value (and any mask that cannot be computed) is served as.
const Redacted = "[redacted]"

// minLast4Runes: a value with fewer significant characters is redacted entirely, because
// showing four of them would show half the value or more.
const minLast4Runes = 8

// maskValue computes the mask kind of a plaintext value of field name. Unknown kinds, and
// values a kind cannot be computed from, are redacted: fail closed.
func (t *Transformer) maskValue(name, kind, plain string) string {
	switch kind {
	case decision.MaskLast4:
		return last4(plain)
	case decision.MaskYear:
		return year(plain)
	case decision.MaskHMAC:
		if t.hmacKey == nil {
			return Redacted
		}
		h := hmac.New(sha256.New, t.hmacKey)
		// The field name is part of the input: equal values in different fields do not link.
		h.Write([]byte(name))
		h.Write([]byte{0})
		h.Write([]byte(plain))
		return "hmac-sha256:" + hex.EncodeToString(h.Sum(nil))[:32]
	default:
		return Redacted
	}
}

// last4 keeps the last four significant characters (separators ' ' and '-' ignored).
func last4(s string) string {
	var sig []rune
	for _, r := range s {
		if r != ' ' && r != '-' {
			sig = append(sig, r)
		}
	}
	if len(sig) < minLast4Runes {
		return "****"
	}
	return "****" + string(sig[len(sig)-4:])
}

// year keeps the year of an ISO 8601 date or timestamp ("1984-05-12", "1984-05-12T...").
func year(s string) string {
	s = strings.TrimSpace(s)
	if len(s) < 4 || !utf8.ValidString(s) {
		return Redacted
	}
	for i := 0; i < 4; i++ {
		if s[i] < '0' || s[i] > '9' {
			return Redacted
		}
	}
	if len(s) > 4 && s[4] != '-' {
		return Redacted
	}
	return s[:4]
}
