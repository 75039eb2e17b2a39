// Package config loads the sidecar's single YAML configuration file. Every section is the
// documented config struct of the package it configures (engine.Config, admin.Config, ...),
// so the YAML is the documentation (docs/configuration.md). Unknown keys are errors, and
// every error names the file, line and key.
package config

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/consentry/consentry/sidecar/admin"
	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/engine"
)

// Config is the whole configuration file.
type Config struct {
	// Policy says where policies come from and how they are trusted (bundle.Config: a local
	// policy directory, a bundle tarball or a bundle server; docs/bundles.md).
	Policy bundle.Config `yaml:"policy"`
	// Engine tunes evaluation (timeout, capabilities).
	Engine engine.Config `yaml:"engine"`
	// Admin is the admin listener (health, readiness, metrics, admin API).
	Admin admin.Config `yaml:"admin"`
	// Sections holds the raw sections of capabilities this package does not know (front
	// doors, state, decision log, vault, ...); each decodes its own with Section.
	Sections map[string]yaml.Node `yaml:",inline"`

	path string
	root *yaml.Node
}

// Load reads and validates a configuration file.
func Load(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, raw)
}

// Parse decodes raw (named path in errors). Environment references ${VAR} (and
// ${VAR:-default}) are expanded in the parsed values, so secrets need not be written into the
// file (expandNodes). The file is decoded from its expanded document, re-encoded; line
// numbers (LineOf, KeyError) come from the file as written.
func Parse(path string, raw []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return nil, located(path, err)
	}
	expanded, err := expandNodes(path, &root, lookupEnv)
	if err != nil {
		return nil, err
	}
	decoded := &root
	if expanded {
		var buf bytes.Buffer
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(&root); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		raw = buf.Bytes()
		// The re-encoded text has its own line numbers: errors are mapped back through it.
		decoded = &yaml.Node{}
		if err := yaml.Unmarshal(raw, decoded); err != nil {
			return nil, located(path, err)
		}
	}
	c := &Config{path: path, root: &root}
	if err := decodeStrict(path, "", raw, decoded, &root, c); err != nil {
		return nil, err
	}
	for name := range c.Sections {
		if !knownSections[name] {
			return nil, fmt.Errorf("%s:%d: unknown section %q (known: %s)", path, c.LineOf(name), name, strings.Join(sortedKeys(knownSections), ", "))
		}
	}
	if c.Policy.Dir == "" && c.Policy.File == "" && c.Policy.URL == "" {
		c.Policy.Dir = "policies"
	}
	// The policy section is validated when the sidecar assembles (bundle.NewManager): tools
	// that read only other sections (audit, consent, keys) must not need policy trust keys.
	c.Policy = c.Policy.WithDefaults()
	c.Engine = c.Engine.WithDefaults()
	c.Admin = c.Admin.WithDefaults()
	if err := c.Engine.Validate(); err != nil {
		return nil, c.KeyError(err)
	}
	if err := c.Admin.Validate(); err != nil {
		return nil, c.KeyError(err)
	}
	if c.Admin.TokenFile != "" && c.Admin.Token == "" {
		tok, err := os.ReadFile(c.Admin.TokenFile)
		if err != nil {
			return nil, c.KeyError(fmt.Errorf("admin.token_file: %w", err))
		}
		c.Admin.Token = strings.TrimSpace(string(tok))
	}
	return c, nil
}

// Section decodes the named top-level section into out (strictly: unknown keys are errors).
// A missing section leaves out unchanged. ok reports whether the section was present. Errors
// name the file's line and the dotted key ("c.yaml:16: decision_log.preallocate_bytes: ...").
func (c *Config) Section(name string, out any) (ok bool, err error) {
	node, present := c.Sections[name]
	if !present {
		return false, nil
	}
	// The file's own node (expanded, with the file's lines); the decoded copy otherwise.
	orig := c.sectionNode(name)
	if orig == nil {
		orig = &node
	}
	// The strict decoder reads text: the section is re-encoded, and its errors mapped back.
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	if err := enc.Encode(orig); err != nil {
		return true, fmt.Errorf("%s:%d: %s: %w", c.path, orig.Line, name, err)
	}
	var decoded yaml.Node
	if err := yaml.Unmarshal(buf.Bytes(), &decoded); err != nil {
		return true, fmt.Errorf("%s:%d: %s: %w", c.path, orig.Line, name, err)
	}
	return true, decodeStrict(c.path, name, buf.Bytes(), &decoded, &yaml.Node{Kind: yaml.DocumentNode, Line: orig.Line, Content: []*yaml.Node{orig}}, out)
}

// KeyError adds file:line to an error that names a dotted key ("engine.timeout: ...", also
// after a prefix: "vault: vault.timeout: ..."): the line of the most specific key it names
// that the file has. An error that already starts with the file's name is returned as is.
func (c *Config) KeyError(err error) error {
	msg := err.Error()
	if strings.HasPrefix(msg, c.path+":") {
		return err
	}
	if key := c.keyIn(msg); key != "" {
		return fmt.Errorf("%s:%d: %w", c.path, c.LineOf(key), err)
	}
	return fmt.Errorf("%s: %w", c.path, err)
}

// LineOf returns the line of a dotted key ("a.b.c", "a.b[2].c") in the file, or 0; of its
// longest prefix the file has when the file does not set the key itself.
func (c *Config) LineOf(key string) int {
	if c.root == nil || len(c.root.Content) == 0 {
		return 0
	}
	node := c.root.Content[0]
	line := 0
	for _, part := range strings.Split(key, ".") {
		part, index := splitIndex(part)
		if node.Kind != yaml.MappingNode {
			return line
		}
		found := false
		for i := 0; i+1 < len(node.Content); i += 2 {
			if node.Content[i].Value == part {
				line = node.Content[i].Line
				node = node.Content[i+1]
				found = true
				break
			}
		}
		if !found {
			return line
		}
		if index >= 0 {
			if node.Kind != yaml.SequenceNode || index >= len(node.Content) {
				return line
			}
			node = node.Content[index]
			line = node.Line
		}
	}
	return line
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// splitIndex splits "mask[2]" into "mask", 2 (-1: no index).
func splitIndex(part string) (string, int) {
	name, rest, ok := strings.Cut(part, "[")
	if !ok || !strings.HasSuffix(rest, "]") {
		return part, -1
	}
	i, err := strconv.Atoi(strings.TrimSuffix(rest, "]"))
	if err != nil || i < 0 {
		return part, -1
	}
	return name, i
}

// located rewrites yaml.v3's "yaml: line N: msg" as "path:N: msg".
func located(path string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		if n, convErr := strconv.Atoi(m[1]); convErr == nil {
			msg = strings.Replace(msg, m[0]+": ", "", 1)
			return fmt.Errorf("%s:%d: %s", path, n, msg)
		}
	}
	return fmt.Errorf("%s: %s", path, msg)
}

// knownSections are the top-level sections decoded by other packages through Section.
var knownSections = map[string]bool{
	"identity":     true, // sidecar/identity
	"routes":       true, // sidecar/routes
	"pipeline":     true, // sidecar/pipeline
	"envoy":        true, // sidecar/envoy (ext_authz, ext_proc)
	"proxy":        true, // sidecar/proxy (Fiber reverse proxy)
	"state":        true, // sidecar/consent (consent, cases, agreements, customers)
	"decision_log": true, // sidecar/auditlog
	"vault":        true, // vaultkeys
	"transform":    true, // sidecar/transform (response and write-body enforcement)
	"enrichment":   true, // sidecar/enrich/static
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
