package vaultkeys

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/consentry/consentry/sidecar/input"
)

// DestructionSink receives destruction records for the decision log. The integrator adapts the
// decision log to it; Erase returns an error when it fails (the keys are destroyed and the
// ledger has the record either way).
type DestructionSink interface {
	RecordDestruction(ctx context.Context, rec *DestructionRecord) error
}

// DestructionSinkFunc adapts a function to DestructionSink.
type DestructionSinkFunc func(ctx context.Context, rec *DestructionRecord) error

// RecordDestruction calls f.
func (f DestructionSinkFunc) RecordDestruction(ctx context.Context, rec *DestructionRecord) error {
	return f(ctx, rec)
}

var _ DestructionSink = DestructionSinkFunc(nil)

// EraseFunc adapts Erase to callers that need only the error, such as the consent store's
// Eraser (erasure on consent withdrawal): consent.Options{Eraser: m.EraseFunc()}.
type EraseFunc func(ctx context.Context, customerID, actor, reason string) error

// Erase calls f.
func (f EraseFunc) Erase(ctx context.Context, customerID, actor, reason string) error {
	return f(ctx, customerID, actor, reason)
}

// EraseFunc returns m.Erase without the record.
func (m *Manager) EraseFunc() EraseFunc {
	return func(ctx context.Context, customerID, actor, reason string) error {
		_, err := m.Erase(ctx, customerID, actor, reason)
		return err
	}
}

// Erase crypto-shreds a customer: every copy of their ciphertext, wherever it is stored
// (CRM database, its backups, retired disks), becomes unreadable.
//
// Order matters and is chosen to fail safe:
//  1. the customer's key names are blocked in the cache at once (this process's next request
//     sees the erasure; keys are zeroed) and never re-created;
//  2. the key versions present in Vault are read (for the record);
//  3. the destruction record is appended to the ledger and fsynced — from here on the erasure
//     is durable: a failure below is finished by `consentry keys replay-erasures`;
//  4. each key is made deletable (deletion_allowed) and deleted from Vault;
//  5. the record goes to the decision log (DestructionSink).
func (m *Manager) Erase(ctx context.Context, customerID, actor, reason string) (*DestructionRecord, error) {
	if strings.TrimSpace(reason) == "" {
		return nil, errors.New("erase: a reason is required")
	}
	if strings.TrimSpace(actor) == "" {
		return nil, errors.New("erase: an actor is required")
	}
	if customerID == "" {
		return nil, fmt.Errorf("erase: %w: empty", ErrInvalidCustomer)
	}
	names := make([]string, 0, len(m.cfg.Classes))
	for _, class := range m.cfg.Classes {
		n, err := m.KeyName(customerID, class)
		if errors.Is(err, ErrInvalidCustomer) && input.ValidID(customerID) {
			// A CRM id (an email, say) that the key_name template cannot hold: no key can
			// have been created for it, so there is nothing to destroy; the erasure is still
			// recorded. Anything else that is no id at all is refused below.
			names = nil
			break
		}
		if err != nil {
			return nil, fmt.Errorf("erase: %w", err)
		}
		names = append(names, n)
	}
	m.cache.block(names)

	var readErrs []error
	rec, retry, err := m.ledger.RecordOf(m.Pseudonym(customerID), actor, reason)
	if err != nil {
		return nil, fmt.Errorf("erase: ledger: %w", err)
	}
	// The same erasure retried (same actor and reason: the consent store's sweep retries a
	// request as it was made) reuses its record, even when other erasures of the customer
	// were recorded since; any other erasure is a record of its own. So is a retry whose
	// record misses one of today's key names (the key_name template or the classes
	// changed): the ledger must name every key that a Vault restore brings back.
	retry = retry && !slices.ContainsFunc(names, func(n string) bool {
		return !slices.ContainsFunc(rec.Keys, func(k DestroyedKey) bool { return k.Name == n })
	})
	if !retry {
		rec = &DestructionRecord{
			Time:              m.now().UTC().Truncate(time.Microsecond),
			CustomerPseudonym: m.Pseudonym(customerID),
			Actor:             actor,
			Reason:            reason,
		}
		for _, n := range names {
			versions, existed, err := m.keyVersions(ctx, n)
			if err != nil {
				// Unknown: the record still names the key, and deletion is attempted below.
				readErrs = append(readErrs, err)
				existed = true
			}
			rec.Keys = append(rec.Keys, DestroyedKey{Name: n, Versions: versions, Existed: existed})
		}
		if err := m.ledger.Append(rec); err != nil {
			return nil, fmt.Errorf("erase: ledger: %w", err)
		}
		m.metrics.erasures.Inc()
	}
	var delErrs []error
	for _, k := range rec.Keys {
		// Also the keys that did not exist when read: a write may have created one since (its
		// check for an erasure passed before the block). Deleting an absent key is a no-op.
		if err := m.destroyKey(ctx, k.Name); err != nil {
			delErrs = append(delErrs, err)
		}
	}
	if len(delErrs) > 0 {
		return rec, fmt.Errorf("erase: recorded in the ledger but not all keys destroyed in Vault (run `consentry keys replay-erasures`): %w",
			errors.Join(append(readErrs, delErrs...)...))
	}
	if m.sink != nil {
		if err := m.sink.RecordDestruction(ctx, rec); err != nil {
			return rec, fmt.Errorf("erase: keys destroyed, but the decision log did not take the record: %w", err)
		}
	}
	m.logger.Info("customer keys destroyed", "customer", rec.CustomerPseudonym, "keys", len(rec.Keys), "actor", actor, "seq", rec.Seq)
	return rec, nil
}

// keyVersions reads the versions of a transit key; existed is false when Vault has no such key.
func (m *Manager) keyVersions(ctx context.Context, name string) (versions []int, existed bool, err error) {
	if !vaultCanHold(name) {
		// Vault refuses the path (400 for ".."): asking would fail forever, and no such key
		// can exist. Ledgers may name such keys (a customer "a..b" erased before validName
		// refused "..").
		return nil, false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	s, err := m.call(ctx, "read", func() (*api.Secret, error) {
		return m.client.Logical().ReadWithContext(ctx, m.cfg.TransitMount+"/keys/"+name)
	})
	if err != nil {
		return nil, false, err
	}
	if s == nil || s.Data == nil {
		return nil, false, nil
	}
	if keys, ok := s.Data["keys"].(map[string]any); ok {
		for v := range keys {
			if n, err := strconv.Atoi(v); err == nil {
				versions = append(versions, n)
			}
		}
	}
	sort.Ints(versions)
	return versions, true, nil
}

// destroyKey sets deletion_allowed and deletes the key. A key that is already gone is fine,
// and so is one Vault cannot hold (keyVersions).
func (m *Manager) destroyKey(ctx context.Context, name string) error {
	if !vaultCanHold(name) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	_, err := m.call(ctx, "config", func() (*api.Secret, error) {
		return m.client.Logical().WriteWithContext(ctx, m.cfg.TransitMount+"/keys/"+name+"/config",
			map[string]any{"deletion_allowed": true})
	})
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("key %s: allow deletion: %w", name, err)
	}
	_, err = m.call(ctx, "delete", func() (*api.Secret, error) {
		return m.client.Logical().DeleteWithContext(ctx, m.cfg.TransitMount+"/keys/"+name)
	})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("key %s: delete: %w", name, err)
	}
	return nil
}

// isNotFound recognizes transit's answers for a key that does not exist.
func isNotFound(err error) bool {
	var re *api.ResponseError
	if !errors.As(err, &re) {
		return false
	}
	msg := strings.Join(re.Errors, " ")
	if re.StatusCode == http.StatusNotFound {
		// A path no mount serves (a wrong transit_mount) is a 404 too: that is not "this key
		// is gone", and an erasure must not be reported complete because of it.
		return !strings.Contains(msg, "no handler for route")
	}
	return re.StatusCode == http.StatusBadRequest && (strings.Contains(msg, "no existing key") || strings.Contains(msg, "not found"))
}

// ReplayReport is the outcome of ReplayErasures.
type ReplayReport struct {
	// Records is the number of ledger records replayed.
	Records int `json:"records"`
	// Destroyed are keys that had come back (e.g. a Vault restore) and were destroyed again.
	Destroyed []string `json:"destroyed"`
	// Absent counts keys already gone.
	Absent int `json:"absent"`
	// Failed are keys that could not be checked or destroyed (the command exits non-zero).
	Failed map[string]string `json:"failed,omitempty"`
}

// replayConcurrency bounds the Vault calls one replay has in flight (a variable for the
// benchmark that compares it with one at a time). A replay checks every key the ledger names,
// one read each (and a destroy for a key that came back); one at a time, a ledger of 100,000
// erased keys kept a starting sidecar busy for minutes, while Vault serves these small reads
// in parallel without strain.
var replayConcurrency = 16

// ReplayErasures re-applies every ledger record to Vault: any key named by an erasure that
// exists again (because Vault was restored from a snapshot older than the erasure) is
// destroyed again. It is idempotent; run it after every Vault restore, before serving traffic.
// Every named key is blocked in the cache before any Vault call, so the keys are never served
// while the replay runs.
func (m *Manager) ReplayErasures(ctx context.Context) (*ReplayReport, error) {
	m.refreshLedger(true)
	rep := &ReplayReport{Failed: map[string]string{}}
	var names []string
	for _, rec := range m.ledger.Records() {
		rep.Records++
		m.cache.block(keyNames(rec))
		for _, k := range rec.Keys {
			names = append(names, k.Name)
		}
	}
	var mu sync.Mutex
	next := make(chan string)
	var wg sync.WaitGroup
	for range min(replayConcurrency, len(names)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range next {
				existed, err := m.replayKey(ctx, name)
				mu.Lock()
				switch {
				case err != nil:
					rep.Failed[name] = err.Error()
				case existed:
					rep.Destroyed = append(rep.Destroyed, name)
				default:
					rep.Absent++
				}
				mu.Unlock()
			}
		}()
	}
	for _, name := range names {
		next <- name
	}
	close(next)
	wg.Wait()
	sort.Strings(rep.Destroyed)
	if len(rep.Failed) > 0 {
		return rep, fmt.Errorf("replay-erasures: %d keys not verified destroyed", len(rep.Failed))
	}
	return rep, nil
}

// replayKey destroys key name if it exists, and reports whether it did (existed).
func (m *Manager) replayKey(ctx context.Context, name string) (existed bool, err error) {
	if _, existed, err = m.keyVersions(ctx, name); err != nil || !existed {
		return existed, err
	}
	return true, m.destroyKey(ctx, name)
}
