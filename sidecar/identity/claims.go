package identity

import (
	"crypto/x509"
	"slices"
	"strings"

	"github.com/consentry/consentry/sidecar/input"
)

// mapClaims builds the subject from verified claims. The returned subject is shared by every
// request presenting the same token (token cache): callers must not modify it.
func mapClaims(cfg ClaimsConfig, raw map[string]any) (input.Subject, error) {
	s := input.Subject{AuthMethod: "jwt"}
	var err error
	if s.ID, err = stringClaim(raw, cfg.Subject); err != nil {
		return s, fail(ReasonClaims, "claim %q: %v", cfg.Subject, err)
	}
	if s.ID == "" {
		return s, fail(ReasonClaims, "claim %q (subject id) is missing", cfg.Subject)
	}
	if s.Type, err = stringClaim(raw, cfg.Type); err != nil {
		return s, fail(ReasonClaims, "claim %q: %v", cfg.Type, err)
	}
	if s.Type == "" {
		s.Type = cfg.DefaultType
	}
	if s.Roles, err = listClaim(raw, cfg.Roles); err != nil {
		return s, fail(ReasonClaims, "claim %q: %v", cfg.Roles, err)
	}
	if s.ProcessorID, err = stringClaim(raw, cfg.ProcessorID); err != nil {
		return s, fail(ReasonClaims, "claim %q: %v", cfg.ProcessorID, err)
	}
	if s.CustomerID, err = stringClaim(raw, cfg.CustomerID); err != nil {
		return s, fail(ReasonClaims, "claim %q: %v", cfg.CustomerID, err)
	}
	if s.Type == input.SubjectProcessor && s.ProcessorID == "" {
		// A processor is bound by its agreement, looked up by this id: without one it would
		// act as a processor no agreement can restrict.
		return s, fail(ReasonClaims, "a processor subject needs claim %q", cfg.ProcessorID)
	}
	if cfg.MFA != "" {
		switch v := lookup(raw, cfg.MFA).(type) {
		case bool:
			s.MFA = v
		case string:
			s.MFA = v == "true"
		}
	} else {
		amr, _ := listClaim(raw, "amr")
		s.MFA = slices.ContainsFunc(amr, func(m string) bool { return slices.Contains(cfg.MFAMethods, m) })
	}
	for _, name := range cfg.Expose {
		if v := lookup(raw, name); v != nil {
			if s.Claims == nil {
				s.Claims = map[string]any{}
			}
			s.Claims[name] = v
		}
	}
	return s, nil
}

// lookup follows a dotted claim path.
func lookup(raw map[string]any, path string) any {
	if v, ok := raw[path]; ok {
		return v
	}
	var cur any = raw
	for _, p := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	return cur
}

func stringClaim(raw map[string]any, path string) (string, error) {
	switch v := lookup(raw, path).(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	default:
		return "", errNotString
	}
}

// listClaim reads an array of strings or a space-separated string (OAuth "scope" style).
func listClaim(raw map[string]any, path string) ([]string, error) {
	switch v := lookup(raw, path).(type) {
	case nil:
		return nil, nil
	case string:
		return strings.Fields(v), nil
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, errNotString
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, errNotString
	}
}

// SPIFFEFromCert returns the SPIFFE id (the single spiffe:// URI SAN) of a verified client
// certificate, for front doors that terminate mTLS themselves. "" when there is none or more
// than one (ambiguous identities are not guessed at).
func SPIFFEFromCert(cert *x509.Certificate) string {
	if cert == nil {
		return ""
	}
	id := ""
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" {
			if id != "" {
				return ""
			}
			id = u.String()
		}
	}
	return id
}
