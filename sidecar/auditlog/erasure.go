package auditlog

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Erasure is the decision log's copy of a cryptographic erasure (the "erasure" record): the
// reviewer reading the log for a customer sees, in the same chain as the decisions, when the
// customer's keys were destroyed, by whom and why, and where the full destruction record is
// (the key ledger's sequence number and hash). It names key classes, never key names, since
// key names may contain the raw customer id.
type Erasure struct {
	// Customer is the customer's pseudonym (the same one decisions carry).
	Customer string `json:"customer"`
	// Classes are the key classes destroyed (contact, identity, financial, health, ...).
	Classes []string `json:"classes"`
	Actor   string   `json:"actor"`
	Reason  string   `json:"reason"`
	// LedgerSeq and LedgerHash locate the destruction record in the vaultkeys ledger.
	LedgerSeq  int64  `json:"ledger_seq"`
	LedgerHash string `json:"ledger_hash"`
	// Complete is false when Vault failed part-way (replay-erasures finishes the destruction).
	Complete bool `json:"complete"`
}

// AppendErasure records an erasure with the same durability as a decision: in strict mode it
// returns once the record is fsynced. e.Customer is the customer's pseudonym as
// Pseudonymizer().Customer computes it (the key manager is given that function, so its
// destruction records carry it); a raw id must never be passed.
func (l *Log) AppendErasure(ctx context.Context, at time.Time, e Erasure) error {
	if b := l.broken.Load(); b != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, *b)
	}
	if e.Customer == "" {
		return errors.New("erasure: customer pseudonym required")
	}
	if e.Classes == nil {
		e.Classes = []string{}
	}
	r := &record{kvs: make([]kv, 0, 4), arena: getBuf()}
	classes := make([]any, len(e.Classes))
	for i, c := range e.Classes {
		classes[i] = c
	}
	if err := r.add("erasure", map[string]any{
		"customer": e.Customer, "classes": classes, "actor": e.Actor, "reason": e.Reason,
		"ledger_seq": e.LedgerSeq, "ledger_hash": e.LedgerHash, "complete": e.Complete,
	}); err != nil {
		r.release()
		return err
	}
	r.addString("timestamp", at.UTC().Format(time.RFC3339Nano))
	r.addString("type", TypeErasure)
	r.sort()
	return l.enqueue(ctx, r)
}
