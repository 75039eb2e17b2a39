package identity

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/consentry/consentry/sidecar/input"
)

// Config is the `identity:` section.
type Config struct {
	// Issuers are the trusted JWT issuers. A token is verified against the issuer named by its
	// "iss" claim; a token from any other issuer is rejected (identity.issuer_unknown).
	Issuers []IssuerConfig `yaml:"issuers" json:"issuers"`
	// Services map mTLS peer identities (SPIFFE ids, as Envoy reports them in
	// attributes.source.principal) to service subjects. Used only when the request carries no
	// bearer token.
	Services []ServiceConfig `yaml:"services" json:"services"`
	// ClockSkew is the tolerance applied to exp and nbf. Default 30s.
	ClockSkew time.Duration `yaml:"clock_skew" json:"clock_skew"`
	// TokenCacheSize bounds the cache of verified tokens (signature checks are the costly part
	// of authentication). 0 means the default 10000; negative disables the cache.
	TokenCacheSize int `yaml:"token_cache_size" json:"token_cache_size"`
	// TokenCacheTTL caps how long a verified token is trusted without re-verification (so a
	// key removed from the JWKS stops working within this time). Default 60s.
	TokenCacheTTL time.Duration `yaml:"token_cache_ttl" json:"token_cache_ttl"`
}

// IssuerConfig is one trusted token issuer.
type IssuerConfig struct {
	// Issuer is the exact "iss" value.
	Issuer string `yaml:"issuer" json:"issuer"`
	// Audiences: the token's "aud" must contain at least one. Required (a token minted for
	// another service must not be accepted here).
	Audiences []string `yaml:"audiences" json:"audiences"`
	// JWKSFile is a JSON Web Key Set file. Exactly one of JWKSFile and JWKSURL.
	JWKSFile string `yaml:"jwks_file" json:"jwks_file"`
	// JWKSURL is fetched and cached. It must be https:// (the key set decides who may call),
	// except on a loopback host (localhost, 127.0.0.0/8, ::1) or with JWKSInsecureHTTP. A
	// redirect to another host, or from https to http, is refused.
	JWKSURL string `yaml:"jwks_url" json:"jwks_url"`
	// JWKSCAFile is a PEM bundle of the CA certificates that verify the JWKS server instead of
	// the system roots (an identity provider with a private CA). Only with an https jwks_url.
	// Read at start.
	JWKSCAFile string `yaml:"jwks_ca_file" json:"jwks_ca_file"`
	// JWKSInsecureHTTP accepts an http:// jwks_url on a non-loopback host. Anyone on the
	// network path can then replace the issuer's keys and mint accepted tokens: for test
	// setups only.
	JWKSInsecureHTTP bool `yaml:"jwks_insecure_http" json:"jwks_insecure_http"`
	// Algorithms allowed for this issuer. Default RS256, ES256, EdDSA. "none" and HMAC
	// algorithms are never accepted.
	Algorithms []string `yaml:"algorithms" json:"algorithms"`
	// RefreshInterval re-reads the key set in the background. Default 10m.
	RefreshInterval time.Duration `yaml:"refresh_interval" json:"refresh_interval"`
	// MinRefreshInterval bounds refreshes triggered by an unknown "kid" (so a flood of tokens
	// with random kids cannot hammer the identity provider). Default 30s.
	MinRefreshInterval time.Duration `yaml:"min_refresh_interval" json:"min_refresh_interval"`
	// FetchTimeout bounds one JWKS fetch. Default 5s.
	FetchTimeout time.Duration `yaml:"fetch_timeout" json:"fetch_timeout"`
	// Claims maps token claims onto the subject.
	Claims ClaimsConfig `yaml:"claims" json:"claims"`
}

// ClaimsConfig maps claims to the input subject. Claim names may be dotted paths into nested
// objects ("realm_access.roles").
type ClaimsConfig struct {
	// Subject is the claim holding the subject id. Default "sub".
	Subject string `yaml:"subject" json:"subject"`
	// Type is the claim holding the subject type (employee, customer, processor, service).
	// Default "subject_type".
	Type string `yaml:"type" json:"type"`
	// DefaultType is used when the token has no type claim ("" = no type: the policy denies).
	DefaultType string `yaml:"default_type" json:"default_type"`
	// Roles is the claim holding roles: an array of strings or a space-separated string. Default "roles".
	Roles string `yaml:"roles" json:"roles"`
	// ProcessorID is the claim naming a processor subject's organisation. Default "processor_id".
	ProcessorID string `yaml:"processor_id" json:"processor_id"`
	// CustomerID is the claim naming the customer a customer subject is. Default "customer_id".
	CustomerID string `yaml:"customer_id" json:"customer_id"`
	// MFA is a boolean claim proving a second factor. When empty, MFA is read from "amr".
	MFA string `yaml:"mfa" json:"mfa"`
	// MFAMethods are "amr" values that prove a second factor. Default ["mfa"].
	MFAMethods []string `yaml:"mfa_methods" json:"mfa_methods"`
	// Expose lists the claims copied into input.subject.claims (and so into the decision log).
	// Default iss, aud, azp, amr, jti, iat, exp: never personal data unless configured.
	Expose []string `yaml:"expose" json:"expose"`
}

// ServiceConfig maps one mTLS identity to a subject.
type ServiceConfig struct {
	// SPIFFEID is the exact peer identity, "spiffe://trust-domain/ns/billing/sa/batch".
	SPIFFEID string `yaml:"spiffe_id" json:"spiffe_id"`
	// ID is the subject id. Required.
	ID string `yaml:"id" json:"id"`
	// Type is service (default) or processor.
	Type string `yaml:"type" json:"type"`
	// Roles of the service.
	Roles []string `yaml:"roles" json:"roles"`
	// ProcessorID for processor services (required with type processor).
	ProcessorID string `yaml:"processor_id" json:"processor_id"`
}

var defaultAlgorithms = []string{string(jose.RS256), string(jose.ES256), string(jose.EdDSA)}

var allowedAlgorithms = map[string]bool{
	string(jose.RS256): true, string(jose.RS384): true, string(jose.RS512): true,
	string(jose.PS256): true, string(jose.PS384): true, string(jose.PS512): true,
	string(jose.ES256): true, string(jose.ES384): true, string(jose.ES512): true,
	string(jose.EdDSA): true,
}

// WithDefaults fills defaults.
func (c Config) WithDefaults() Config {
	if c.ClockSkew == 0 {
		c.ClockSkew = 30 * time.Second
	}
	if c.TokenCacheSize == 0 {
		c.TokenCacheSize = 10000
	}
	if c.TokenCacheTTL == 0 {
		c.TokenCacheTTL = time.Minute
	}
	iss := make([]IssuerConfig, len(c.Issuers))
	for i, ic := range c.Issuers {
		iss[i] = ic.withDefaults()
	}
	c.Issuers = iss
	svc := make([]ServiceConfig, len(c.Services))
	for i, s := range c.Services {
		if s.Type == "" {
			s.Type = input.SubjectService
		}
		svc[i] = s
	}
	c.Services = svc
	return c
}

func (ic IssuerConfig) withDefaults() IssuerConfig {
	if len(ic.Algorithms) == 0 {
		ic.Algorithms = defaultAlgorithms
	}
	if ic.RefreshInterval == 0 {
		ic.RefreshInterval = 10 * time.Minute
	}
	if ic.MinRefreshInterval == 0 {
		ic.MinRefreshInterval = 30 * time.Second
	}
	if ic.FetchTimeout == 0 {
		ic.FetchTimeout = 5 * time.Second
	}
	cl := &ic.Claims
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&cl.Subject, "sub")
	def(&cl.Type, "subject_type")
	def(&cl.Roles, "roles")
	def(&cl.ProcessorID, "processor_id")
	def(&cl.CustomerID, "customer_id")
	if len(cl.MFAMethods) == 0 {
		cl.MFAMethods = []string{"mfa"}
	}
	if cl.Expose == nil {
		cl.Expose = []string{"iss", "aud", "azp", "amr", "jti", "iat", "exp"}
	}
	return ic
}

// Validate reports the first invalid key.
func (c Config) Validate() error {
	seen := map[string]bool{}
	for i, ic := range c.Issuers {
		k := fmt.Sprintf("identity.issuers[%d]", i)
		if ic.Issuer == "" {
			return fmt.Errorf("%s.issuer: required", k)
		}
		if seen[ic.Issuer] {
			return fmt.Errorf("%s.issuer: %q listed twice", k, ic.Issuer)
		}
		seen[ic.Issuer] = true
		if len(ic.Audiences) == 0 {
			return fmt.Errorf("%s.audiences: at least one audience is required", k)
		}
		if (ic.JWKSFile == "") == (ic.JWKSURL == "") {
			return fmt.Errorf("%s: exactly one of jwks_file and jwks_url", k)
		}
		if ic.JWKSURL != "" {
			u, err := url.Parse(ic.JWKSURL)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				return fmt.Errorf("%s.jwks_url: %q is not an http(s) URL", k, ic.JWKSURL)
			}
			if u.Scheme == "http" && !loopbackHost(u.Hostname()) && !ic.JWKSInsecureHTTP {
				return fmt.Errorf("%s.jwks_url: %q is plain http: anyone on the path could replace the keys; use https (jwks_ca_file for a private CA), or set jwks_insecure_http for a test setup", k, ic.JWKSURL)
			}
			if ic.JWKSCAFile != "" && u.Scheme != "https" {
				return fmt.Errorf("%s.jwks_ca_file: only with an https jwks_url", k)
			}
		} else if ic.JWKSCAFile != "" || ic.JWKSInsecureHTTP {
			return fmt.Errorf("%s: jwks_ca_file and jwks_insecure_http apply to a jwks_url only", k)
		}
		for _, a := range ic.Algorithms {
			if !allowedAlgorithms[a] {
				return fmt.Errorf("%s.algorithms: %q is not an allowed asymmetric algorithm", k, a)
			}
		}
		if ic.MinRefreshInterval < 0 || ic.RefreshInterval < 0 || ic.FetchTimeout < 0 {
			return fmt.Errorf("%s: intervals must not be negative", k)
		}
	}
	ids := map[string]bool{}
	for i, s := range c.Services {
		k := fmt.Sprintf("identity.services[%d]", i)
		if !strings.HasPrefix(s.SPIFFEID, "spiffe://") {
			return fmt.Errorf("%s.spiffe_id: %q is not a spiffe:// id", k, s.SPIFFEID)
		}
		if ids[s.SPIFFEID] {
			return fmt.Errorf("%s.spiffe_id: %q listed twice", k, s.SPIFFEID)
		}
		ids[s.SPIFFEID] = true
		if s.ID == "" {
			return fmt.Errorf("%s.id: required", k)
		}
		if s.Type != "" && s.Type != input.SubjectService && s.Type != input.SubjectProcessor {
			return fmt.Errorf("%s.type: %q must be service or processor", k, s.Type)
		}
		if s.Type == input.SubjectProcessor && s.ProcessorID == "" {
			// The processor agreement is looked up by this id: without it the service would
			// act as a processor no agreement can bind.
			return fmt.Errorf("%s.processor_id: required for a processor service", k)
		}
	}
	if c.ClockSkew < 0 || c.ClockSkew > 10*time.Minute {
		return errors.New("identity.clock_skew: must be between 0 and 10m")
	}
	return nil
}
