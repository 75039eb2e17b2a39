package vaultkeys

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the `vault:` section of the sidecar configuration.
type Config struct {
	// Address is Vault's URL, e.g. "https://vault.internal:8200". Default $VAULT_ADDR, else
	// http://127.0.0.1:8200.
	Address string `yaml:"address" json:"address"`
	// Namespace is the Vault Enterprise namespace ("" for none).
	Namespace string `yaml:"namespace" json:"namespace"`
	// CACert is a PEM file with the CA that signed Vault's TLS certificate ("" = system roots).
	CACert string `yaml:"ca_cert" json:"ca_cert"`
	// Auth selects how consentry logs in to Vault.
	Auth AuthConfig `yaml:"auth" json:"auth"`
	// TransitMount is the path of the transit secrets engine. Default "transit".
	TransitMount string `yaml:"transit_mount" json:"transit_mount"`
	// KeyName is the template of a customer's transit key name for one key class. Placeholders:
	// {customer} (the CRM customer id, restricted to [A-Za-z0-9_.-]), {pseudonym} (the keyed
	// pseudonym of the id, keeps customer ids out of Vault paths and the ledger, but makes the
	// pseudonym key as critical as Vault itself) and {class}. It must start with the prefix the
	// Vault policy grants (deploy/vault/consentry.hcl grants "consentry-*").
	// Default "consentry-{customer}-{class}".
	KeyName string `yaml:"key_name" json:"key_name"`
	// Classes are the key classes (decision key scopes) consentry manages; erasure destroys the
	// customer's key of every class. Default contact, identity, financial, health, notes. A
	// policy whose catalogue gives a field a key_scope outside these is refused at activation
	// (at start and for every bundle): an erasure would leave that class's keys alive. Classes
	// that would give two customers the same key name are refused: with the default key_name,
	// health and mental-health would make customer x's mental-health key and customer
	// x-mental's health key both consentry-x-mental-health (customer ids may contain '-').
	Classes []string `yaml:"classes" json:"classes"`
	// KeyType is the transit key type consentry creates on the write path: aes256-gcm96
	// (default), aes128-gcm96 or chacha20-poly1305. Existing keys of any of these types are read.
	KeyType string `yaml:"key_type" json:"key_type"`
	// Timeout bounds every Vault call made for one request (all key classes are fetched
	// concurrently under it). A call that does not finish in time withholds the fields. Default 1s.
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// Cache bounds the in-memory key cache.
	Cache CacheConfig `yaml:"cache" json:"cache"`
	// LedgerPath is the shredded-keys ledger: an append-only, hash-chained JSON-lines file of
	// destruction records (docs/key-model.md). Default "var/vaultkeys/shredded-keys.jsonl".
	LedgerPath string `yaml:"ledger_path" json:"ledger_path"`
	// ReplayErasuresOnStart makes `consentry run` re-apply the ledger to Vault once it is
	// logged in (what `consentry keys replay-erasures` does): a key that came back with a
	// Vault restore is destroyed again without an operator remembering to. Default true.
	ReplayErasuresOnStart *bool `yaml:"replay_erasures_on_start" json:"replay_erasures_on_start"`
	// PseudonymKeyFile holds the secret key (one line, at least 16 bytes) of the HMAC that turns
	// customer ids into the pseudonyms used in destruction records and the ledger. Required
	// (or PseudonymKey) unless the integrator passes Options.Pseudonymize — `consentry run`
	// passes the decision log's pseudonymizer so both name a customer the same way.
	PseudonymKeyFile string `yaml:"pseudonym_key_file" json:"pseudonym_key_file"`
	// PseudonymKey is the pseudonym key inline (prefer PseudonymKeyFile; tests and the demo).
	PseudonymKey string `yaml:"pseudonym_key" json:"pseudonym_key"`
}

// AuthConfig selects and parameterizes the Vault auth method.
type AuthConfig struct {
	// Method is token (default), approle or kubernetes.
	Method string `yaml:"method" json:"method"`
	// Mount is the auth method's mount path. Default "approle" or "kubernetes".
	Mount string `yaml:"mount" json:"mount"`

	// Token (method token) is the Vault token inline; prefer TokenFile. When both are empty,
	// $VAULT_TOKEN is used.
	Token string `yaml:"token" json:"token"`
	// TokenFile (method token) holds the token; it is re-read on every re-authentication, so a
	// Vault Agent sink file works.
	TokenFile string `yaml:"token_file" json:"token_file"`

	// RoleID (method approle) is the AppRole role id (not a secret).
	RoleID string `yaml:"role_id" json:"role_id"`
	// SecretIDFile (method approle) holds the secret id; re-read on every login.
	SecretIDFile string `yaml:"secret_id_file" json:"secret_id_file"`
	// SecretID (method approle) is the secret id inline (tests and the demo).
	SecretID string `yaml:"secret_id" json:"secret_id"`

	// Role (method kubernetes) is the Vault role bound to the pod's service account.
	Role string `yaml:"role" json:"role"`
	// JWTFile (method kubernetes) is the service account token. Default
	// /var/run/secrets/kubernetes.io/serviceaccount/token. Re-read on every login (projected
	// tokens rotate).
	JWTFile string `yaml:"jwt_file" json:"jwt_file"`

	// BackoffMin and BackoffMax bound the exponential backoff between failed logins.
	// Defaults 250ms and 30s.
	BackoffMin time.Duration `yaml:"backoff_min" json:"backoff_min"`
	BackoffMax time.Duration `yaml:"backoff_max" json:"backoff_max"`
}

// CacheConfig bounds the key cache. Keys live only in process memory, never on disk.
type CacheConfig struct {
	// TTL is how long a released key stays cached. Default 30s. Negative disables the cache.
	TTL time.Duration `yaml:"ttl" json:"ttl"`
	// MaxEntries bounds the number of cached keys (one per customer and class). Default 10000.
	MaxEntries int `yaml:"max_entries" json:"max_entries"`
	// MaxBytes bounds the key bytes held (all versions of all cached keys). Default 4 MiB.
	MaxBytes int `yaml:"max_bytes" json:"max_bytes"`
}

// Auth methods.
const (
	AuthToken      = "token"
	AuthAppRole    = "approle"
	AuthKubernetes = "kubernetes"
)

// DefaultKeyName is the default key name template.
const DefaultKeyName = "consentry-{customer}-{class}"

// DefaultClasses are the key classes of the default policy library's catalog.
var DefaultClasses = []string{"contact", "identity", "financial", "health", "notes"}

// WithDefaults returns c with zero values replaced by defaults.
func (c Config) WithDefaults() Config {
	if c.Address == "" {
		c.Address = os.Getenv("VAULT_ADDR")
	}
	if c.Address == "" {
		c.Address = "http://127.0.0.1:8200"
	}
	if c.Auth.Method == "" {
		c.Auth.Method = AuthToken
	}
	if c.Auth.Mount == "" {
		switch c.Auth.Method {
		case AuthAppRole:
			c.Auth.Mount = "approle"
		case AuthKubernetes:
			c.Auth.Mount = "kubernetes"
		}
	}
	if c.Auth.Method == AuthKubernetes && c.Auth.JWTFile == "" {
		c.Auth.JWTFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	}
	if c.Auth.BackoffMin == 0 {
		c.Auth.BackoffMin = 250 * time.Millisecond
	}
	if c.Auth.BackoffMax == 0 {
		c.Auth.BackoffMax = 30 * time.Second
	}
	if c.TransitMount == "" {
		c.TransitMount = "transit"
	}
	c.TransitMount = strings.Trim(c.TransitMount, "/")
	if c.KeyName == "" {
		c.KeyName = DefaultKeyName
	}
	if len(c.Classes) == 0 {
		c.Classes = append([]string(nil), DefaultClasses...)
	}
	if c.KeyType == "" {
		c.KeyType = "aes256-gcm96"
	}
	if c.Timeout == 0 {
		c.Timeout = time.Second
	}
	if c.Cache.TTL == 0 {
		c.Cache.TTL = 30 * time.Second
	}
	if c.Cache.MaxEntries == 0 {
		c.Cache.MaxEntries = 10000
	}
	if c.Cache.MaxBytes == 0 {
		c.Cache.MaxBytes = 4 << 20
	}
	if c.LedgerPath == "" {
		c.LedgerPath = "var/vaultkeys/shredded-keys.jsonl"
	}
	return c
}

// Validate reports the first invalid key, named as in the YAML file.
func (c Config) Validate() error {
	u, err := url.Parse(c.Address)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("vault.address: %q is not an http(s) URL", c.Address)
	}
	switch c.Auth.Method {
	case AuthToken:
	case AuthAppRole:
		if c.Auth.RoleID == "" {
			return errors.New("vault.auth.role_id: required for method approle")
		}
		if c.Auth.SecretID == "" && c.Auth.SecretIDFile == "" {
			return errors.New("vault.auth.secret_id_file: required for method approle (or secret_id)")
		}
	case AuthKubernetes:
		if c.Auth.Role == "" {
			return errors.New("vault.auth.role: required for method kubernetes")
		}
	default:
		return fmt.Errorf("vault.auth.method: %q is not token, approle or kubernetes", c.Auth.Method)
	}
	if c.Auth.BackoffMin <= 0 || c.Auth.BackoffMax < c.Auth.BackoffMin {
		return fmt.Errorf("vault.auth.backoff_min/backoff_max: need 0 < min <= max, got %s and %s", c.Auth.BackoffMin, c.Auth.BackoffMax)
	}
	if c.TransitMount == "" || strings.ContainsAny(c.TransitMount, " ?#") {
		return fmt.Errorf("vault.transit_mount: %q is not a mount path", c.TransitMount)
	}
	// Each placeholder once: key names fill in only the first, and the check below that two
	// customers never share a key reasons about one of each.
	if strings.Count(c.KeyName, "{class}") != 1 {
		return fmt.Errorf("vault.key_name: %q must contain {class} once: one key per customer and class", c.KeyName)
	}
	if strings.Count(c.KeyName, "{customer}")+strings.Count(c.KeyName, "{pseudonym}") != 1 {
		return fmt.Errorf("vault.key_name: %q must contain exactly one of {customer} or {pseudonym}, once", c.KeyName)
	}
	rest := strings.NewReplacer("{customer}", "c", "{pseudonym}", "p", "{class}", "k").Replace(c.KeyName)
	if !validName(rest) {
		return fmt.Errorf("vault.key_name: %q yields invalid transit key names (letters, digits, _ . - only)", c.KeyName)
	}
	seen := map[string]bool{}
	for _, k := range c.Classes {
		if !validName(k) || seen[k] {
			return fmt.Errorf("vault.classes: %q is empty, duplicated or not [A-Za-z0-9_.-]", k)
		}
		seen[k] = true
	}
	if x, a, y, b, ok := keyNameCollision(c.KeyName, c.Classes); ok {
		return fmt.Errorf("vault.classes: %q and %q give two customers the same transit key under vault.key_name %q "+
			"(customer %q's %s key and customer %q's %s key are both %q: one customer's release would export the other's key "+
			"and erasing one would destroy the other's data); rename one of the two classes",
			a, b, c.KeyName, x, a, y, b, keyNameOf(c.KeyName, x, a))
	}
	if _, ok := aeadTypes[c.KeyType]; !ok {
		return fmt.Errorf("vault.key_type: %q is not aes256-gcm96, aes128-gcm96 or chacha20-poly1305", c.KeyType)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("vault.timeout: must be positive, got %s", c.Timeout)
	}
	if c.Cache.MaxEntries < 0 || c.Cache.MaxBytes < 0 {
		return errors.New("vault.cache.max_entries/max_bytes: must not be negative")
	}
	if c.LedgerPath == "" {
		return errors.New("vault.ledger_path: required")
	}
	if c.PseudonymKey != "" && len(c.PseudonymKey) < 16 {
		return errors.New("vault.pseudonym_key: must be at least 16 bytes")
	}
	return nil
}

// pseudonymKey returns the configured pseudonym key, reading the file when set.
func (c Config) pseudonymKey() ([]byte, error) {
	if c.PseudonymKey == "" && c.PseudonymKeyFile == "" {
		return nil, errors.New("vault.pseudonym_key_file: required: destruction records name customers by a keyed pseudonym")
	}
	if c.PseudonymKey != "" {
		return []byte(c.PseudonymKey), nil
	}
	b, err := os.ReadFile(c.PseudonymKeyFile)
	if err != nil {
		return nil, fmt.Errorf("vault.pseudonym_key_file: %w", err)
	}
	k := strings.TrimSpace(string(b))
	if len(k) < 16 {
		return nil, errors.New("vault.pseudonym_key_file: key must be at least 16 bytes")
	}
	return []byte(k), nil
}

// ReplayOnStart reports whether the ledger is re-applied at start (default true).
func (c Config) ReplayOnStart() bool {
	return c.ReplayErasuresOnStart == nil || *c.ReplayErasuresOnStart
}

// LoadConfigFile reads the `vault:` section of a consentry YAML configuration file, applies
// defaults and validates it. The CLI uses it; `consentry run` passes its own parsed section.
func LoadConfigFile(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	var doc struct {
		Vault Config `yaml:"vault"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	cfg := doc.Vault.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// keyNameCollision finds two classes a and b and two different customer ids x and y whose key
// names are the same: name(x, a) == name(y, b). Customer ids are any name-safe string (what
// Manager.KeyName accepts), and so, to be safe for any Options.Pseudonymize, are pseudonyms.
// The built-in pseudonyms have a fixed length, which alone would rule a collision out, but
// Validate cannot see the pseudonymizer the sidecar is given.
//
// With the id before the class, a name is P+id+S+class+Q. P and Q are the same in every name,
// so name(x, a) == name(y, b) with a != b means x+S+a == y+S+b: one of S+a, S+b is a proper
// suffix of the other, say S+b == u+S+a, and then x == y+u. A collision exists exactly when
// such a u can end an id (name-safe, not ending in '.' or '-', short enough): e.g. S "-",
// classes "health" and "mental-health", u "-mental", ids "x-mental" and "x". With the class
// first (P+class+S+id+Q) it is the mirror image: a+S is a proper prefix of b+S, b+S == a+S+u,
// x == u+y, and u must be able to start an id.
func keyNameCollision(template string, classes []string) (x, a, y, b string, found bool) {
	id := "{customer}"
	if !strings.Contains(template, id) {
		id = "{pseudonym}"
	}
	ii, ki := strings.Index(template, id), strings.Index(template, "{class}")
	for _, a := range classes {
		for _, b := range classes {
			if ii < ki {
				sep := template[ii+len(id) : ki]
				long, short := sep+b, sep+a
				if len(long) > len(short) && strings.HasSuffix(long, short) {
					if u := long[:len(long)-len(short)]; validName("x" + u) {
						return "x" + u, a, "x", b, true
					}
				}
			} else {
				sep := template[ki+len("{class}") : ii]
				long, short := b+sep, a+sep
				if len(long) > len(short) && strings.HasPrefix(long, short) {
					if u := long[len(short):]; validName(u + "x") {
						return u + "x", a, "x", b, true
					}
				}
			}
		}
	}
	return "", "", "", "", false
}

// keyNameOf fills in the template as Manager.KeyName does for a customer id (or pseudonym).
func keyNameOf(template, id, class string) string {
	name := strings.Replace(template, "{class}", class, 1)
	return strings.NewReplacer("{customer}", id, "{pseudonym}", id).Replace(name)
}

// validName reports whether s is usable in a transit key name: Vault's GenericNameRegex
// additionally forbids a leading or trailing '.' or '-', and Vault refuses every request path
// holding "..", so a name with ".." can never be created, read or deleted (a customer "a..b"
// would have every read withheld, every write refused and every erasure fail forever).
func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	return vaultCanHold(s)
}

// vaultCanHold reports whether Vault can have a transit key named s (validName without the
// length bound, which is consentry's own): a ledger may name keys Vault cannot hold, recorded
// before validName refused them, and those keys are absent by construction.
func vaultCanHold(s string) bool {
	if s == "" || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9', b == '_':
		case b == '.' || b == '-':
			if i == 0 || i == len(s)-1 {
				return false
			}
		default:
			return false
		}
	}
	return true
}
