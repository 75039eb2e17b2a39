package auditlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Erasure is the decision log's copy of a cryptographic erasure (the "erasure" record): the
// reviewer reading the log for a customer sees, in the same chain as the decisions, when the
// customer's keys were destroyed, by whom and why, and where the full destruction record is
// (the key ledger's sequence number and hash). It names key classes, never key names, since
// key names may contain the raw customer id.
type Erasure struct {
	// Customer is the customer's pseudonym (the same one decisions carry).
	Customer string `json:"customer"`
	// Classes are the key classes destroyed (contact, identity, financial, health, notes, ...).
	Classes []string `json:"classes"`
	Actor   string   `json:"actor"`
	Reason  string   `json:"reason"`
	// LedgerSeq and LedgerHash locate the destruction record in the vaultkeys ledger.
	LedgerSeq  int64  `json:"ledger_seq"`
	LedgerHash string `json:"ledger_hash"`
	// Complete is false when Vault failed part-way (replay-erasures finishes the destruction).
	Complete bool `json:"complete"`
	// Pseudonymize, when set, is how Customer was made from the raw id (the key manager's own
	// pseudonymizer, when Vault has a pseudonym key of its own); nil: the log's. AppendErasure
	// uses it to find the raw id in Actor and Reason. Not logged.
	Pseudonymize func(customerID string) string `json:"-"`
}

// AppendErasure records an erasure with the same durability as a decision: in strict mode it
// returns once the record is fsynced. e.Customer is the customer's pseudonym as
// Pseudonymizer().Customer computes it (the key manager is given that function, so its
// destruction records carry it); a raw id must never be passed. The customer's raw id in
// Actor or Reason ("Art. 17 request from c-1001") is replaced with that pseudonym: beside it,
// the raw id would name the customer for good in a log that is never rewritten.
func (l *Log) AppendErasure(ctx context.Context, at time.Time, e Erasure) error {
	if b := l.broken.Load(); b != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, *b)
	}
	if e.Customer == "" {
		return errors.New("erasure: customer pseudonym required")
	}
	pseudo := e.Pseudonymize
	if pseudo == nil {
		pseudo = l.build.pseudo.Customer
	}
	e.Actor = replacePseudonymized(e.Actor, e.Customer, pseudo)
	e.Reason = replacePseudonymized(e.Reason, e.Customer, pseudo)
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

// maxIDScan bounds the text replacePseudonymized searches: it tries every candidate id in the
// text (the raw id is not known, only its pseudonym), up to 64 per position.
const maxIDScan = 4096

// replacePseudonymized returns s with every customer id in it whose pseudonym is p replaced
// by p. Candidates are the substrings that are customer ids (input.ValidID: a letter or digit,
// then letters, digits and ._:@+-, at most 128 bytes) standing as whole words (the neighbours
// are not letters, digits, '-' or '_', as replaceInText has it), so "c-1001" is found in "from
// c-1001." and "ada@example.com" in "(ada@example.com)". Text past maxIDScan bytes is cut
// off (fail closed: what was not searched is not logged); the key ledger keeps the full text.
func replacePseudonymized(s, p string, pseudo func(string) string) string {
	if s == "" {
		return s
	}
	if !utf8.ValidString(s) {
		s = sanitizeUTF8(s)
	}
	const cutNote = " [cut: the key ledger holds the full text]"
	if len(s) > maxIDScan {
		cut := maxIDScan
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + cutNote
	}
	var b strings.Builder
	last := 0
	for i := 0; i < len(s); i++ {
		if i < last || (i > 0 && isIDChar(s[i-1])) || !isAlnum(s[i]) {
			continue
		}
		// The longest candidate first: "ada@example.com" before "ada".
		end := i
		for end < len(s) && end-i < 128 && isValidIDChar(s[end]) {
			end++
		}
		for j := end; j > i; j-- {
			if j < len(s) && isIDChar(s[j]) {
				continue
			}
			if pseudo(s[i:j]) == p {
				b.WriteString(s[last:i])
				b.WriteString(p)
				last = j
				break
			}
		}
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// isValidIDChar: the characters input.ValidID allows after the first.
func isValidIDChar(c byte) bool { return isAlnum(c) || strings.IndexByte("._:@+-", c) >= 0 }
