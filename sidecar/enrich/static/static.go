// Package static is an enrich.Provider backed by one YAML or JSON file of customers, consent
// records, cases and processor agreements, held in memory. It suits small deployments, demos
// and tests; the consent store (sidecar/consent) is the production provider.
//
// File format (YAML or JSON; timestamps RFC 3339):
//
//	customers:  [{id, retention_until, erased, erased_at}]
//	consents:   [{customer_id, purpose, status, notice_version, notice_hash, channel, captured_by,
//	              granted_at, expires_at, withdrawn_at, event_id}]
//	cases:      [{id, customer_id, assignees: [...], status, purpose}]
//	agreements: [{processor_id, purposes: [...], categories: [...], valid_from, valid_until}]
//
// Case ids and agreement processor ids are unique in the file (as customer ids): one listed
// twice is refused at load, never resolved silently to the last entry.
//
// consentry run reads the file once, at start: restart it to apply a changed file. Reload
// is for programs embedding the provider: it swaps the whole data set atomically (requests in
// flight keep the set they started with) and keeps the previous one when the file is invalid.
package static

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync/atomic"

	"gopkg.in/yaml.v3"

	"github.com/consentry/consentry/sidecar/enrich"
	"github.com/consentry/consentry/sidecar/input"
)

// File is the on-disk form.
type File struct {
	Customers  []input.CustomerState `json:"customers"`
	Consents   []Consent             `json:"consents"`
	Cases      []input.Case          `json:"cases"`
	Agreements []input.Agreement     `json:"agreements"`
}

// Consent is a consent record with the customer it belongs to.
type Consent struct {
	CustomerID string `json:"customer_id"`
	input.Consent
}

// Provider serves enrichment from memory.
type Provider struct {
	path string
	data atomic.Pointer[index]
}

var _ enrich.Provider = (*Provider)(nil)

type index struct {
	customers  map[string]*input.CustomerState
	consents   map[string][]input.Consent
	cases      map[string]*input.Case
	agreements map[string]*input.Agreement
}

// Load reads a file (YAML or JSON).
func Load(path string) (*Provider, error) {
	p := &Provider{path: path}
	if err := p.Reload(); err != nil {
		return nil, err
	}
	return p, nil
}

// New builds a provider from data already in memory.
func New(f File) (*Provider, error) {
	ix, err := build(f)
	if err != nil {
		return nil, err
	}
	p := &Provider{}
	p.data.Store(ix)
	return p, nil
}

// Parse builds a provider from YAML or JSON bytes.
func Parse(raw []byte) (*Provider, error) {
	f, err := decode(raw)
	if err != nil {
		return nil, err
	}
	return New(f)
}

// Reload re-reads the file the provider was loaded from. On error the previous data stays.
func (p *Provider) Reload() error {
	if p.path == "" {
		return fmt.Errorf("static enrichment: not loaded from a file")
	}
	raw, err := os.ReadFile(p.path)
	if err != nil {
		return fmt.Errorf("static enrichment: %w", err)
	}
	f, err := decode(raw)
	if err != nil {
		return fmt.Errorf("static enrichment %s: %w", p.path, err)
	}
	ix, err := build(f)
	if err != nil {
		return fmt.Errorf("static enrichment %s: %w", p.path, err)
	}
	p.data.Store(ix)
	return nil
}

// decode reads YAML (a superset of JSON) into the JSON-tagged input types by way of a JSON
// round trip, so the file format is exactly the input document's.
func decode(raw []byte) (File, error) {
	var generic any
	if err := yaml.Unmarshal(raw, &generic); err != nil {
		return File{}, fmt.Errorf("parse: %w", err)
	}
	js, err := json.Marshal(generic)
	if err != nil {
		return File{}, fmt.Errorf("parse: %w", err)
	}
	var f File
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return File{}, fmt.Errorf("parse: %w", err)
	}
	return f, nil
}

func build(f File) (*index, error) {
	ix := &index{
		customers:  map[string]*input.CustomerState{},
		consents:   map[string][]input.Consent{},
		cases:      map[string]*input.Case{},
		agreements: map[string]*input.Agreement{},
	}
	for i := range f.Customers {
		c := f.Customers[i]
		if c.ID == "" {
			return nil, fmt.Errorf("customers[%d].id: required", i)
		}
		if _, dup := ix.customers[c.ID]; dup {
			return nil, fmt.Errorf("customers[%d].id: %q listed twice", i, c.ID)
		}
		ix.customers[c.ID] = &c
	}
	for i, c := range f.Consents {
		if c.CustomerID == "" || c.Purpose == "" || c.Status == "" {
			return nil, fmt.Errorf("consents[%d]: customer_id, purpose and status are required", i)
		}
		switch c.Status {
		case input.ConsentGranted, input.ConsentWithdrawn, input.ConsentExpired:
		default:
			return nil, fmt.Errorf("consents[%d].status: %q is not granted, withdrawn or expired", i, c.Status)
		}
		ix.consents[c.CustomerID] = append(ix.consents[c.CustomerID], c.Consent)
	}
	// A case's assignees decide need-to-know, an agreement's purposes what a processor may
	// receive: two entries under one id are a mistake in the file, and silently taking the
	// last one could grant what the first withheld.
	caseAt := map[string]int{}
	for i := range f.Cases {
		c := f.Cases[i]
		if c.ID == "" {
			return nil, fmt.Errorf("cases[%d].id: required", i)
		}
		if j, dup := caseAt[c.ID]; dup {
			return nil, fmt.Errorf("cases[%d].id: %q is listed twice (also cases[%d])", i, c.ID, j)
		}
		caseAt[c.ID] = i
		if c.Assignees == nil {
			c.Assignees = []string{}
		}
		ix.cases[c.ID] = &c
	}
	agreementAt := map[string]int{}
	for i := range f.Agreements {
		a := f.Agreements[i]
		if a.ProcessorID == "" {
			return nil, fmt.Errorf("agreements[%d].processor_id: required", i)
		}
		if j, dup := agreementAt[a.ProcessorID]; dup {
			return nil, fmt.Errorf("agreements[%d].processor_id: %q is listed twice (also agreements[%d])", i, a.ProcessorID, j)
		}
		agreementAt[a.ProcessorID] = i
		ix.agreements[a.ProcessorID] = &a
	}
	return ix, nil
}

// Enrich returns the state for one request. Returned values are copies.
func (p *Provider) Enrich(ctx context.Context, q enrich.Query) (input.Enrichment, error) {
	if err := ctx.Err(); err != nil {
		return input.Enrichment{}, err
	}
	ix := p.data.Load()
	e := ix.forCustomer(q.CustomerID)
	if q.CaseID != "" {
		if c, ok := ix.cases[q.CaseID]; ok {
			cp := *c
			e.Case = &cp
		}
	}
	if q.ProcessorID != "" {
		if a, ok := ix.agreements[q.ProcessorID]; ok {
			cp := *a
			e.Agreement = &cp
		}
	}
	return e, nil
}

// EnrichBatch returns the state for many customers in one call.
func (p *Provider) EnrichBatch(ctx context.Context, q enrich.Query, ids []string) (map[string]input.Enrichment, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	shared, err := p.Enrich(ctx, enrich.Query{CaseID: q.CaseID, ProcessorID: q.ProcessorID})
	if err != nil {
		return nil, err
	}
	ix := p.data.Load()
	out := make(map[string]input.Enrichment, len(ids))
	for _, id := range ids {
		e := ix.forCustomer(id)
		e.Case, e.Agreement = shared.Case, shared.Agreement
		out[id] = e
	}
	return out, nil
}

func (ix *index) forCustomer(id string) input.Enrichment {
	e := input.Enrichment{Consents: []input.Consent{}}
	if id == "" {
		return e
	}
	e.Consents = append(e.Consents, ix.consents[id]...)
	if c, ok := ix.customers[id]; ok {
		cp := *c
		e.Customer = &cp
	}
	return e
}
