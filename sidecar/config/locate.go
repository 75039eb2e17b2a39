package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Decoding errors name the file's line and the dotted key. The file is decoded from a
// re-encoded document (the expanded file, or one section of it, which the strict decoder
// needs as text), so yaml.v3's "line N" counts lines of that text: decodeStrict maps them back
// through the re-encoded document's nodes, which have the same shape as the file's.

// loc is where a line of the decoded text comes from in the file.
type loc struct {
	line  int
	key   string // dotted key ("decision_log.preallocate_bytes", "decision_log.mask[1].path")
	isKey bool   // from a mapping key (wins over the container that starts on the same line)
}

// decodeStrict decodes src (parsed as decoded, the same document as orig, whose lines are
// the file's) into out with unknown keys refused. prefix is the dotted key of orig ("" for
// the whole file). Errors read "path:LINE: key: message".
func decodeStrict(path, prefix string, src []byte, decoded, orig *yaml.Node, out any) error {
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(true)
	err := dec.Decode(out)
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	lines := map[int]loc{}
	mapLines(decoded, orig, prefix, lines)
	fallback := loc{line: orig.Line, key: prefix}
	var te *yaml.TypeError
	msgs := []string{err.Error()}
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	errs := make([]error, 0, len(msgs))
	for _, msg := range msgs {
		errs = append(errs, locate(path, msg, lines, fallback))
	}
	return errors.Join(errs...)
}

var leadingLine = regexp.MustCompile(`^line (\d+): `)

// locate rewrites one yaml.v3 message ("yaml: line N: msg", "line N: msg") as
// "path:LINE: key: msg", and any other "line M" in it as the file's line.
func locate(path, msg string, lines map[int]loc, fallback loc) error {
	msg = strings.TrimPrefix(msg, "yaml: ")
	at := fallback
	if m := leadingLine.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		if l, ok := lines[n]; ok {
			at = l
		}
		msg = msg[len(m[0]):]
	}
	// "mapping key "x" already defined at line 3": the other line, too.
	msg = yamlLine.ReplaceAllStringFunc(msg, func(s string) string {
		n, _ := strconv.Atoi(strings.TrimPrefix(s, "line "))
		if l, ok := lines[n]; ok {
			return "line " + strconv.Itoa(l.line)
		}
		return s
	})
	switch {
	case at.line > 0 && at.key != "":
		return fmt.Errorf("%s:%d: %s: %s", path, at.line, at.key, msg)
	case at.line > 0:
		return fmt.Errorf("%s:%d: %s", path, at.line, msg)
	case at.key != "":
		return fmt.Errorf("%s: %s: %s", path, at.key, msg)
	}
	return fmt.Errorf("%s: %s", path, msg)
}

// mapLines records, for every line of the decoded document d, the file line and dotted key of
// the corresponding node of o (the same document as read from the file).
func mapLines(d, o *yaml.Node, key string, lines map[int]loc) {
	if d == nil || o == nil || d.Kind != o.Kind {
		return
	}
	if _, seen := lines[d.Line]; !seen && d.Line > 0 {
		lines[d.Line] = loc{line: o.Line, key: key}
	}
	switch d.Kind {
	case yaml.DocumentNode:
		for i := 0; i < len(d.Content) && i < len(o.Content); i++ {
			mapLines(d.Content[i], o.Content[i], key, lines)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(d.Content) && i+1 < len(o.Content); i += 2 {
			k := d.Content[i].Value
			if key != "" {
				k = key + "." + k
			}
			if l, seen := lines[d.Content[i].Line]; !seen || !l.isKey {
				lines[d.Content[i].Line] = loc{line: o.Content[i].Line, key: k, isKey: true}
			}
			mapLines(d.Content[i+1], o.Content[i+1], k, lines)
		}
	case yaml.SequenceNode:
		for i := 0; i < len(d.Content) && i < len(o.Content); i++ {
			mapLines(d.Content[i], o.Content[i], key+"["+strconv.Itoa(i)+"]", lines)
		}
	}
}

// sectionNode is the value of top-level key name in the file as read (expanded, with the
// file's lines), or nil.
func (c *Config) sectionNode(name string) *yaml.Node {
	if c.root == nil || len(c.root.Content) == 0 || c.root.Content[0].Kind != yaml.MappingNode {
		return nil
	}
	top := c.root.Content[0]
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == name {
			return top.Content[i+1]
		}
	}
	return nil
}

// dottedKey finds the config keys an error message names: a dotted key ("vault.timeout:",
// "decision_log.mask[2]: ...", "decision_log.retain_segments/retain_age: ...") wherever it
// stands, as in "vault: vault.timeout: must be positive".
var dottedKey = regexp.MustCompile(`(?:^|[\s(])([a-z][a-z0-9_]*(?:\[\d+\])?(?:\.[a-z0-9_]+(?:\[\d+\])?)*)(?:/[a-z0-9_]+)*:`)

// keyIn returns the most specific key msg names that the file has (its first segment is a
// top-level key of the file), or "".
func (c *Config) keyIn(msg string) string {
	best, depth := "", 0
	for _, m := range dottedKey.FindAllStringSubmatch(msg, -1) {
		k := m[1]
		if c.LineOf(k) == 0 {
			continue
		}
		if d := strings.Count(k, ".") + 1; d > depth {
			best, depth = k, d
		}
	}
	return best
}
