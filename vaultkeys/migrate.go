package vaultkeys

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// MigrateOptions configure EncryptJSONLines.
type MigrateOptions struct {
	// CustomerField is the (dotted) field holding the customer id. Default "id".
	CustomerField string
	// Fields maps (dotted) field names to key classes, e.g. "contact.email" -> "contact".
	Fields map[string]string
	// Progress, when set, is called every ProgressEvery records and at the end.
	Progress      func(MigrateStats)
	ProgressEvery int
}

// MigrateStats counts what EncryptJSONLines did.
type MigrateStats struct {
	Records   int `json:"records"`
	Encrypted int `json:"fields_encrypted"`
	// Skipped counts values already in transit ciphertext form (the migration is re-runnable).
	Skipped int `json:"fields_already_encrypted"`
	// Erased counts records of erased customers, written out with their sensitive fields
	// removed: their keys are gone and must not be created again.
	Erased int `json:"records_erased"`
}

// ParseFieldMap parses "contact.email=contact,payment.card_number=financial".
func ParseFieldMap(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		f, c, ok := strings.Cut(kv, "=")
		if !ok || f == "" || c == "" {
			return nil, fmt.Errorf("field map entry %q is not field=class", kv)
		}
		out[f] = c
	}
	if len(out) == 0 {
		return nil, errors.New("field map is empty")
	}
	return out, nil
}

// FieldMapFromCatalog reads field -> key_scope from a policy catalog data.json
// (data.consentry.catalog.fields), e.g. policies/data/consentry/catalog/data.json.
func FieldMapFromCatalog(r io.Reader) (map[string]string, error) {
	var cat struct {
		Fields map[string]struct {
			KeyScope string `json:"key_scope"`
		} `json:"fields"`
	}
	if err := json.NewDecoder(r).Decode(&cat); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	out := map[string]string{}
	for f, v := range cat.Fields {
		if v.KeyScope != "" {
			out[f] = v.KeyScope
		}
	}
	if len(out) == 0 {
		return nil, errors.New("catalog: no field has a key_scope")
	}
	return out, nil
}

// EncryptJSONLines migrates a CRM export (one JSON object per line) to encrypted fields,
// streaming: each configured string field is replaced by transit ciphertext of its customer's
// key of the field's class (created when missing). Values already encrypted are kept, so an
// interrupted migration can be re-run. Object key order is not preserved. Records of erased
// customers lose their sensitive fields.
func (m *Manager) EncryptJSONLines(ctx context.Context, r io.Reader, w io.Writer, opts MigrateOptions) (MigrateStats, error) {
	var st MigrateStats
	if opts.CustomerField == "" {
		opts.CustomerField = "id"
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = 1000
	}
	for f, c := range opts.Fields {
		if !m.knownClass(c) {
			return st, fmt.Errorf("field %s: %w %q", f, ErrUnknownScope, c)
		}
	}
	classes := map[string]bool{}
	for _, c := range opts.Fields {
		classes[c] = true
	}
	classList := make([]string, 0, len(classes))
	for c := range classes {
		classList = append(classList, c)
	}
	sort.Strings(classList)

	br := bufio.NewReaderSize(r, 1<<20)
	bw := bufio.NewWriterSize(w, 1<<20)
	defer bw.Flush()
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			out, err := m.migrateRecord(ctx, line, opts, classList, &st)
			if err != nil {
				return st, fmt.Errorf("line %d: %w", lineNo, err)
			}
			if _, err := bw.Write(append(out, '\n')); err != nil {
				return st, err
			}
			st.Records++
			if opts.Progress != nil && st.Records%opts.ProgressEvery == 0 {
				opts.Progress(st)
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return st, err
		}
		if ctx.Err() != nil {
			return st, ctx.Err()
		}
	}
	if opts.Progress != nil {
		opts.Progress(st)
	}
	return st, bw.Flush()
}

func (m *Manager) migrateRecord(ctx context.Context, line []byte, opts MigrateOptions, classes []string, st *MigrateStats) ([]byte, error) {
	var rec map[string]any
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if err := dec.Decode(&rec); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	idv, _ := getPath(rec, opts.CustomerField)
	var id string
	switch v := idv.(type) {
	case string:
		id = v
	case json.Number:
		id = v.String()
	default:
		return nil, fmt.Errorf("no customer id in field %q", opts.CustomerField)
	}
	needed := false
	for f := range opts.Fields {
		if v, ok := getPath(rec, f); ok {
			if s, ok := v.(string); ok && s != "" && !IsCiphertext(s) {
				needed = true
			}
		}
	}
	var ks *KeySet
	if needed {
		var err error
		ks, err = m.KeysForMigration(ctx, id, classes)
		if errors.Is(err, ErrErased) {
			for f := range opts.Fields {
				deletePath(rec, f)
			}
			st.Erased++
			return json.Marshal(rec)
		}
		if err != nil {
			return nil, fmt.Errorf("customer %s: %w", m.Pseudonym(id), err)
		}
	}
	for f, class := range opts.Fields {
		v, ok := getPath(rec, f)
		s, isStr := v.(string)
		if !ok || !isStr || s == "" {
			continue
		}
		if IsCiphertext(s) {
			st.Skipped++
			continue
		}
		ct, err := ks.Encrypt(class, []byte(s))
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", f, err)
		}
		setPath(rec, f, ct)
		st.Encrypted++
	}
	return json.Marshal(rec)
}

// getPath reads a dotted path; a literal key containing dots wins over nesting.
func getPath(rec map[string]any, path string) (any, bool) {
	if v, ok := rec[path]; ok {
		return v, true
	}
	head, rest, ok := strings.Cut(path, ".")
	if !ok {
		return nil, false
	}
	sub, ok := rec[head].(map[string]any)
	if !ok {
		return nil, false
	}
	return getPath(sub, rest)
}

func setPath(rec map[string]any, path string, v any) {
	if _, ok := rec[path]; ok {
		rec[path] = v
		return
	}
	head, rest, ok := strings.Cut(path, ".")
	if !ok {
		return
	}
	if sub, ok := rec[head].(map[string]any); ok {
		setPath(sub, rest, v)
	}
}

func deletePath(rec map[string]any, path string) {
	if _, ok := rec[path]; ok {
		delete(rec, path)
		return
	}
	head, rest, ok := strings.Cut(path, ".")
	if !ok {
		return
	}
	if sub, ok := rec[head].(map[string]any); ok {
		deletePath(sub, rest)
	}
}
