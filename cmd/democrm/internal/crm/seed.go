package crm

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// SeedOptions configures Seed.
type SeedOptions struct {
	// N is the number of customers to create.
	N int
	// Seed makes the data set deterministic.
	Seed uint64
	// Plaintext stores sensitive fields unencrypted (tests of the HTTP API only); Vault is
	// not contacted.
	Plaintext bool
	// Vault is the client used to create transit keys and encrypt; required unless Plaintext.
	Vault *vault.Client
	// Mount is the transit secrets engine mount path (default "transit").
	Mount string
	// Workers bounds concurrent Vault requests (default 8).
	Workers int
	// Force replaces the records of an already seeded database instead of failing.
	Force bool
}

// SeedStats reports what Seed did.
type SeedStats struct {
	Customers, Notes, Cases int
	Keys                    int // transit keys created or reused (customers x classes)
	Encrypt                 time.Duration
	Total                   time.Duration
}

// Seed fills store with a deterministic synthetic data set. Unless opts.Plaintext, every
// sensitive field is encrypted with Vault transit under KeyName(customer, class) before it
// is stored, so plaintext never reaches the database.
func Seed(ctx context.Context, store *Store, opts SeedOptions) (SeedStats, error) {
	start := time.Now()
	if opts.N < 0 {
		return SeedStats{}, fmt.Errorf("seed: negative customer count %d", opts.N)
	}
	if opts.Mount == "" {
		opts.Mount = "transit"
	}
	if opts.Workers <= 0 {
		opts.Workers = 8
	}
	if !opts.Plaintext && opts.Vault == nil {
		return SeedStats{}, errors.New("seed: a Vault client is required unless plaintext seeding is chosen")
	}
	n, err := store.Count(ctx)
	if err != nil {
		return SeedStats{}, fmt.Errorf("seed: %w", err)
	}
	if n > 0 && !opts.Force {
		return SeedStats{}, fmt.Errorf("seed: database already holds %d customers (use -force to replace them)", n)
	}
	d := Generate(opts.N, opts.Seed)
	stats := SeedStats{Customers: len(d.Customers), Notes: len(d.Notes), Cases: len(d.Cases)}
	if !opts.Plaintext {
		t := time.Now()
		if err := encryptAll(ctx, opts.Vault, opts.Mount, d.Customers, d.Notes, opts.Workers); err != nil {
			return stats, fmt.Errorf("seed: %w", err)
		}
		stats.Keys = len(d.Customers) * len(Classes)
		stats.Encrypt = time.Since(t)
	}
	if opts.Force {
		if err := store.Reset(ctx); err != nil {
			return stats, fmt.Errorf("seed: %w", err)
		}
	}
	if err := store.Load(ctx, d.Customers, d.Notes, d.Cases); err != nil {
		return stats, fmt.Errorf("seed: %w", err)
	}
	stats.Total = time.Since(start)
	return stats, nil
}

// classFields returns pointers to the fields of c that belong to class, in a fixed order.
func classFields(c *Customer, class string) []*string {
	switch class {
	case ClassContact:
		return []*string{&c.Contact.Email, &c.Contact.Phone, &c.Address}
	case ClassIdentity:
		return []*string{&c.DateOfBirth}
	case ClassFinancial:
		return []*string{&c.Payment.CardNumber, &c.Payment.CardExpiry}
	case ClassHealth:
		return []*string{&c.Health.Notes}
	}
	return nil
}

// encryptAll replaces the sensitive fields of every customer with transit ciphertext.
//
// Transit batches only within one key, and keys are per customer and class, so the unit of
// work is one (customer, class): create the key, then one encrypt with batch_input for all of
// the class's fields. Workers run those units in parallel.
func encryptAll(ctx context.Context, client *vault.Client, mount string, customers []Customer, notes []Note, workers int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	bodies := map[string][]*string{} // customer id -> its notes' bodies (class notes)
	for i := range notes {
		bodies[notes[i].CustomerID] = append(bodies[notes[i].CustomerID], &notes[i].Body)
	}
	jobs := make(chan int)
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
		failed   atomic.Bool
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				for _, class := range Classes {
					fields := classFields(&customers[i], class)
					if class == ClassNotes {
						fields = bodies[customers[i].ID]
					}
					if err := encryptFields(ctx, client, mount, customers[i].ID, class, fields); err != nil {
						once.Do(func() { firstErr = err; failed.Store(true); cancel() })
						break
					}
				}
			}
		}()
	}
	for i := range customers {
		if failed.Load() {
			break
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return firstErr
}

// encryptFields creates the customer's class key (every customer gets one of each class, so a
// note written later has its key) and encrypts the non-empty fields in place under it.
func encryptFields(ctx context.Context, client *vault.Client, mount, customerID, class string, fields []*string) error {
	var targets []*string
	var batch []map[string]any
	for _, f := range fields {
		if *f == "" {
			continue
		}
		targets = append(targets, f)
		batch = append(batch, map[string]any{"plaintext": base64.StdEncoding.EncodeToString([]byte(*f))})
	}
	key := KeyName(customerID, class)
	// consentry's key model exports keys to decrypt locally, so they must be created
	// exportable; an encrypt-time upsert would create a non-exportable key. Writing an
	// existing key is a no-op, which keeps a forced re-seed against the same Vault working.
	if _, err := client.Logical().WriteWithContext(ctx, mount+"/keys/"+key, map[string]any{
		"type":       KeyType,
		"exportable": true,
	}); err != nil {
		return fmt.Errorf("transit create key %s: %w", key, err)
	}
	if len(batch) == 0 {
		return nil
	}
	secret, err := client.Logical().WriteWithContext(ctx, mount+"/encrypt/"+key, map[string]any{
		"batch_input": batch,
	})
	if err != nil {
		return fmt.Errorf("transit encrypt %s: %w", key, err)
	}
	if secret == nil {
		return fmt.Errorf("transit encrypt %s: empty response", key)
	}
	results, ok := secret.Data["batch_results"].([]any)
	if !ok || len(results) != len(targets) {
		return fmt.Errorf("transit encrypt %s: expected %d batch results, got %v", key, len(targets), secret.Data["batch_results"])
	}
	for i, r := range results {
		item, _ := r.(map[string]any)
		if msg, _ := item["error"].(string); msg != "" {
			return fmt.Errorf("transit encrypt %s item %d: %s", key, i, msg)
		}
		ct, _ := item["ciphertext"].(string)
		if !strings.HasPrefix(ct, "vault:v") {
			return fmt.Errorf("transit encrypt %s item %d: no ciphertext in response", key, i)
		}
		*targets[i] = ct
	}
	return nil
}

// NewVaultClient returns a Vault client for addr and token whose connection pool fits
// workers concurrent requests (the default pool would reopen connections under load).
func NewVaultClient(addr, token string, workers int) (*vault.Client, error) {
	cfg := vault.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("vault config: %w", cfg.Error)
	}
	if addr != "" {
		cfg.Address = addr
	}
	if t, ok := cfg.HttpClient.Transport.(*http.Transport); ok {
		t.MaxIdleConnsPerHost = max(workers, 2)
	}
	cfg.Timeout = 30 * time.Second
	client, err := vault.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	if token != "" {
		client.SetToken(token)
	}
	if client.Token() == "" {
		return nil, errors.New("vault client: no token (set -vault-token or VAULT_TOKEN)")
	}
	return client, nil
}

// EnsureTransit enables the transit secrets engine at mount unless it is already mounted.
func EnsureTransit(ctx context.Context, client *vault.Client, mount string) error {
	mounts, err := client.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return fmt.Errorf("list vault mounts: %w", err)
	}
	if m, ok := mounts[strings.Trim(mount, "/")+"/"]; ok {
		if m.Type != "transit" {
			return fmt.Errorf("vault mount %s is %q, not transit", mount, m.Type)
		}
		return nil
	}
	if err := client.Sys().MountWithContext(ctx, mount, &vault.MountInput{Type: "transit"}); err != nil {
		return fmt.Errorf("enable transit at %s: %w", mount, err)
	}
	return nil
}
