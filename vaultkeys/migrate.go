package vaultkeys

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
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
	// Refused, when set, is called for every reason a record is refused (a record may have
	// several, one per field). Refused records are not written, and EncryptJSONLines returns
	// ErrRecordsRefused at the end.
	Refused func(Refusal)
}

// MigrateStats counts what EncryptJSONLines did.
type MigrateStats struct {
	// Records counts the records read; all but the Refused ones were written.
	Records   int `json:"records"`
	Encrypted int `json:"fields_encrypted"`
	// Skipped counts values already in transit ciphertext form (the migration is re-runnable).
	Skipped int `json:"fields_already_encrypted"`
	// Erased counts records of erased customers, written out with their sensitive fields
	// removed: their keys are gone and must not be created again.
	Erased int `json:"records_erased"`
	// Refused counts records not written because a sensitive value in them cannot be
	// encrypted as it is (Refusal says why).
	Refused int `json:"records_refused"`
}

// Refusal is one reason a record was refused by EncryptJSONLines. It names the record by its
// line and the field by its path, never a value.
type Refusal struct {
	Line int `json:"line"`
	// Field is the sensitive field concerned ("" when the record as a whole is refused,
	// e.g. for its customer id).
	Field  string `json:"field,omitempty"`
	Reason string `json:"reason"`
}

func (r Refusal) String() string {
	if r.Field == "" {
		return fmt.Sprintf("line %d: %s", r.Line, r.Reason)
	}
	return fmt.Sprintf("line %d: field %s: %s", r.Line, r.Field, r.Reason)
}

// ErrRecordsRefused is returned, after the whole input was read, when records were refused:
// the output lacks them, so it is no complete migration of the input.
var ErrRecordsRefused = errors.New("records refused")

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
// streaming: each configured field is replaced by transit ciphertext of its customer's key of
// the field's class (created when missing). A string is encrypted as its text; a number or
// boolean as its JSON text, as the write path does, so reads serve it the same way (as a
// string). Values already encrypted are kept, so an interrupted migration can be re-run; null
// and "" stay as they are. Object key order is not preserved. Records of erased customers
// lose every sensitive field, whatever its value.
//
// A record that holds a sensitive value which cannot be encrypted as it is — an object or an
// array (no one value: its members would stay plaintext and survive an erasure), a field
// found both under its literal dotted name and nested ({"contact.email": ..., "contact":
// {"email": ...}}: which one the CRM reads is unknown), a field inside an array, or a
// customer id that is missing, ambiguous or cannot name a key — is refused: not written,
// reported through opts.Refused, counted, and the call returns ErrRecordsRefused once the
// whole input has been read, so every refusal is named in one pass.
func (m *Manager) EncryptJSONLines(ctx context.Context, r io.Reader, w io.Writer, opts MigrateOptions) (MigrateStats, error) {
	var st MigrateStats
	if opts.CustomerField == "" {
		opts.CustomerField = "id"
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = 1000
	}
	fields := make([]string, 0, len(opts.Fields))
	for f, c := range opts.Fields {
		if !m.knownClass(c) {
			return st, fmt.Errorf("field %s: %w %q", f, ErrUnknownScope, c)
		}
		fields = append(fields, f)
	}
	sort.Strings(fields) // refusals in a stable order

	br := bufio.NewReaderSize(r, 1<<20)
	bw := bufio.NewWriterSize(w, 1<<20)
	defer bw.Flush()
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			out, refusals, err := m.migrateRecord(ctx, line, opts, fields, &st)
			if err != nil {
				return st, fmt.Errorf("line %d: %w", lineNo, err)
			}
			st.Records++
			if len(refusals) > 0 {
				st.Refused++
				for _, rf := range refusals {
					rf.Line = lineNo
					if opts.Refused != nil {
						opts.Refused(rf)
					}
				}
			} else if _, err := bw.Write(append(out, '\n')); err != nil {
				return st, err
			}
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
	if err := bw.Flush(); err != nil {
		return st, err
	}
	if st.Refused > 0 {
		return st, fmt.Errorf("%d of %d records not written: %w", st.Refused, st.Records, ErrRecordsRefused)
	}
	return st, nil
}

// migrateRecord returns the record to write, or the reasons it is refused (nothing is
// encrypted, and no key created, for a refused record).
func (m *Manager) migrateRecord(ctx context.Context, line []byte, opts MigrateOptions, fields []string, st *MigrateStats) ([]byte, []Refusal, error) {
	var rec map[string]any
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if err := dec.Decode(&rec); err != nil {
		return nil, nil, fmt.Errorf("not a JSON object: %w", err)
	}
	id, refusal := customerIDOf(rec, opts.CustomerField)
	if refusal != "" {
		return nil, []Refusal{{Reason: refusal}}, nil
	}

	type work struct {
		field, class string
		at           loc
		plain        []byte
	}
	var todo []work
	var found [][]loc // every place a sensitive field was found, for an erased customer
	var refusals []Refusal
	skipped := 0
	for _, f := range fields {
		locs, inArray := locate(rec, f, false, nil)
		if len(locs) == 0 {
			continue
		}
		found = append(found, locs)
		switch {
		case inArray:
			refusals = append(refusals, Refusal{Field: f, Reason: "found inside an array: each element's value would stay plaintext"})
			continue
		case len(locs) > 1:
			refusals = append(refusals, Refusal{Field: f, Reason: "found both under its literal dotted name and nested: which one the CRM reads is ambiguous"})
			continue
		}
		at := locs[0]
		var plain []byte
		switch v := at.get().(type) {
		case nil:
			continue // null: nothing to encrypt
		case string:
			if v == "" {
				continue
			}
			if IsCiphertext(v) {
				skipped++
				continue
			}
			plain = []byte(v)
		case json.Number:
			plain = []byte(v.String()) // its JSON text, as the write path encrypts it
		case bool:
			plain = []byte(strconv.FormatBool(v))
		case map[string]any, []any:
			refusals = append(refusals, Refusal{Field: f, Reason: "holds an object or array, which cannot be encrypted as one value: make it a string, or list its members as fields"})
			continue
		default:
			return nil, nil, fmt.Errorf("field %s: unexpected JSON value %T", f, v)
		}
		todo = append(todo, work{field: f, class: opts.Fields[f], at: at, plain: plain})
	}
	if len(found) == 0 {
		b, err := json.Marshal(rec)
		return b, nil, err
	}
	// An erased customer's record loses every sensitive field, whatever it holds and
	// whatever else is wrong with it: nothing sensitive is left to refuse.
	m.refreshLedger(false)
	erased := m.ledger.Erased(m.Pseudonym(id))
	if !erased && len(refusals) > 0 {
		return nil, refusals, nil
	}
	var ks *KeySet
	if !erased && len(todo) > 0 {
		classes := make([]string, 0, len(todo))
		for _, w := range todo {
			if !slices.Contains(classes, w.class) {
				classes = append(classes, w.class)
			}
		}
		var err error
		ks, err = m.KeysForMigration(ctx, id, classes)
		switch {
		case errors.Is(err, ErrErased):
			erased = true
		case errors.Is(err, ErrInvalidCustomer):
			// An id the key_name template cannot hold (an email, "a..b"): no key can encrypt
			// its values, and the id is not repeated in the report.
			return nil, []Refusal{{Reason: fmt.Sprintf("the customer id in field %q cannot name a transit key (%s)", opts.CustomerField, nameRule)}}, nil
		case err != nil:
			return nil, nil, fmt.Errorf("customer %s: %w", m.Pseudonym(id), err)
		}
	}
	if erased {
		for _, locs := range found {
			for _, at := range locs {
				at.remove()
			}
		}
		st.Erased++
		b, err := json.Marshal(rec)
		return b, nil, err
	}
	st.Skipped += skipped
	for _, w := range todo {
		ct, err := ks.Encrypt(w.class, w.plain)
		clear(w.plain)
		if err != nil {
			return nil, nil, fmt.Errorf("field %s: %w", w.field, err)
		}
		w.at.set(ct)
		st.Encrypted++
	}
	b, err := json.Marshal(rec)
	return b, nil, err
}
