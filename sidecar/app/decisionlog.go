package app

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/auditlog/vaultsign"
	"github.com/consentry/consentry/sidecar/config"
	"github.com/consentry/consentry/vaultkeys"
)

// DefaultDecisionLogDir is where `consentry run` keeps the decision log when the configuration
// names no decision_log.dir.
const DefaultDecisionLogDir = "var/decisions"

// DecisionLogFiles is the decision log a configuration describes, with the files `consentry
// run` uses for it: the configured ones, or the ones it generates under <dir>.keys/ on first
// start. It is the only place that defaulting lives, so every CLI command given --config
// reads exactly the log and the keys the sidecar writes with.
type DecisionLogFiles struct {
	// Config is the decision_log section with Dir, and SigningKeyFile and PseudonymKeyFile
	// when run generates them, filled in.
	Config auditlog.Config
	// SigningPublicKeyFile is the public half of a generated signing key ("" when the
	// configuration names its own key, a Vault transit key or unsigned checkpoints).
	SigningPublicKeyFile string
	// GeneratedSigningKey and GeneratedPseudonymKey: the file is run's generated one (it
	// exists once run has started with this configuration).
	GeneratedSigningKey, GeneratedPseudonymKey bool
}

// ResolveDecisionLog applies run's defaults to a decision_log section.
func ResolveDecisionLog(lc auditlog.Config) DecisionLogFiles {
	if lc.Dir == "" {
		lc.Dir = filepath.FromSlash(DefaultDecisionLogDir)
	}
	f := DecisionLogFiles{}
	keyDir := lc.Dir + ".keys"
	if lc.SigningKeyFile == "" && lc.SigningVaultKey == "" && !lc.UnsignedCheckpoints {
		lc.SigningKeyFile = filepath.Join(keyDir, "signing.pem")
		f.SigningPublicKeyFile = filepath.Join(keyDir, "signing.pub")
		f.GeneratedSigningKey = true
	}
	if lc.PseudonymKeyFile == "" {
		lc.PseudonymKeyFile = filepath.Join(keyDir, "pseudonym.key")
		f.GeneratedPseudonymKey = true
	}
	f.Config = lc
	return f
}

// DecisionLogConfig reads cfg's decision_log section (absent: all defaults) and resolves it
// as run does.
func DecisionLogConfig(cfg *config.Config) (DecisionLogFiles, error) {
	var lc auditlog.Config
	if _, err := cfg.Section("decision_log", &lc); err != nil {
		return DecisionLogFiles{}, err
	}
	return ResolveDecisionLog(lc), nil
}

// generateKeys writes the keys run generates when the configuration names none.
func (a *App) generateKeys(f DecisionLogFiles) error {
	lc := f.Config
	if f.GeneratedSigningKey {
		if err := ensureFile(lc.SigningKeyFile, func() error {
			_, err := auditlog.WriteKeyPair(lc.SigningKeyFile, f.SigningPublicKeyFile)
			return err
		}); err != nil {
			return fmt.Errorf("decision_log.signing_key_file: %w", err)
		}
		a.Log.Warn("decision_log.signing_key_file not set: checkpoints are signed with a generated key; configure one (consentry audit keygen) so verifiers can pin it", "file", lc.SigningKeyFile)
	}
	if f.GeneratedPseudonymKey {
		if err := ensureFile(lc.PseudonymKeyFile, func() error { return auditlog.WritePseudonymKey(lc.PseudonymKeyFile) }); err != nil {
			return fmt.Errorf("decision_log.pseudonym_key_file: %w", err)
		}
	}
	return nil
}

// checkDecisionLog validates the decision log's configuration and the key files it names,
// without opening the log (run --check): no lock, no checkpoint, no generated key. Keys run
// would generate are not looked for.
func (a *App) checkDecisionLog(f DecisionLogFiles) error {
	c := f.Config.WithDefaults()
	if err := c.Validate(); err != nil {
		return err
	}
	if c.SigningVaultKey != "" && !a.hasVault {
		return errors.New("decision_log.signing_vault_key: needs the vault section")
	}
	if err := checkSigningVaultKey(c.SigningVaultKey); err != nil {
		return err
	}
	if u := c.Upload; u != nil && u.BearerTokenFile != "" {
		if _, err := os.ReadFile(u.BearerTokenFile); err != nil {
			return fmt.Errorf("decision_log.upload.bearer_token_file: %w", err)
		}
	}
	if c.SigningKeyFile != "" && !f.GeneratedSigningKey {
		if _, err := auditlog.LoadSigner(c.SigningKeyFile); err != nil {
			return fmt.Errorf("decision_log.signing_key_file: %w", err)
		}
	}
	if !f.GeneratedPseudonymKey {
		if _, err := auditlog.ReadKeyFile(c.PseudonymKeyFile); err != nil {
			return fmt.Errorf("decision_log.pseudonym_key_file: %w", err)
		}
	}
	a.checkSink = checkSink{}
	return nil
}

// checkSigningVaultKey refuses a signing_vault_key that cannot be a transit key name. Vault is
// asked for the key only in the background, so a MOUNT/NAME value (the mount is
// vault.transit_mount) would leave the sidecar unready for good instead of failing start-up.
func checkSigningVaultKey(name string) error {
	if strings.Contains(name, "/") {
		return fmt.Errorf("decision_log.signing_vault_key: %q: give the bare transit key name; its mount is vault.transit_mount", name)
	}
	// A name Vault's path cannot carry as given (?, #, spaces, ...) would leave the sidecar
	// unready for good instead of failing here.
	for i, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || i > 0 && (c == '-' || c == '_' || c == '.')) {
			return fmt.Errorf("decision_log.signing_vault_key: %q: a transit key name is letters, digits and - _ . (not first)", name)
		}
	}
	return nil
}

// errSignerPending is what the Vault signer answers until its transit key has been read.
var errSignerPending = errors.New("vault transit signing key not read yet")

// vaultSigner signs checkpoints with the Vault transit key decision_log.signing_vault_key,
// read when Vault answers rather than at start: a Vault that is down or still logging in when
// the sidecar starts must not stop it (docs/operations.md). Until the key is read, Sign fails,
// so the log handles it as a signer failing at runtime: decisions are appended, the checkpoint
// is left out and alarmed (alarm=decision_log_checkpoint), and readiness check
// "decision_log_signer" names the problem.
type vaultSigner struct {
	keys        *vaultkeys.Manager
	mount, name string
	log         *slog.Logger

	signer  atomic.Pointer[vaultsign.Signer]
	lastErr atomic.Pointer[error]

	// pinned is the signer whose KeyID the log read last. The log asks for the key id, then
	// signs; the key read in between must not sign a checkpoint that names no key.
	mu     sync.Mutex
	pinned *vaultsign.Signer
}

var _ auditlog.Signer = (*vaultSigner)(nil)

func newVaultSigner(keys *vaultkeys.Manager, name string, log *slog.Logger) *vaultSigner {
	s := &vaultSigner{keys: keys, mount: keys.Config().TransitMount, name: name, log: log}
	err := error(errSignerPending)
	s.lastErr.Store(&err)
	return s
}

// resolve reads the transit key once; nil once it has been read.
func (s *vaultSigner) resolve(ctx context.Context) error {
	if s.signer.Load() != nil {
		return nil
	}
	if err := s.keys.Ready(ctx); err != nil {
		err = fmt.Errorf("waiting for the Vault login: %w", err)
		s.lastErr.Store(&err)
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.keys.Config().Timeout*4)
	defer cancel()
	vs, err := vaultsign.New(ctx, s.keys.Client(), s.mount, s.name)
	if err != nil {
		err = fmt.Errorf("decision_log.signing_vault_key: %w", err)
		s.lastErr.Store(&err)
		return err
	}
	// Reading the key is not signing with it: a token that may read transit/keys but not
	// update transit/sign would be ready while every checkpoint fails. Sign a probe.
	probe := []byte("consentry decision log signer probe")
	if sig, err := vs.Sign(ctx, probe); err != nil || !ed25519.Verify(vs.Public(), probe, sig) {
		if err == nil {
			err = errors.New("the signature does not verify with the key's public key")
		}
		err = fmt.Errorf("decision_log.signing_vault_key: signing a probe: %w", err)
		s.lastErr.Store(&err)
		return err
	}
	// Cleared before the signer is published: a checkpoint that then fails to sign records
	// its error after this, never before it.
	s.lastErr.Store(nil)
	s.signer.Store(vs)
	s.log.Info("decision log checkpoints are signed by the Vault transit key", "key", s.mount+"/"+s.name, "key_id", vs.KeyID())
	return nil
}

// Ready is the readiness check "decision_log_signer".
func (s *vaultSigner) Ready(context.Context) error {
	if e := s.lastErr.Load(); e != nil {
		return fmt.Errorf("checkpoints are not signed (retrying): %w", *e)
	}
	return nil
}

// KeyID implements auditlog.Signer ("" until the key is read; Sign then fails).
func (s *vaultSigner) KeyID() string {
	vs := s.signer.Load()
	s.mu.Lock()
	s.pinned = vs
	s.mu.Unlock()
	if vs == nil {
		return ""
	}
	return vs.KeyID()
}

// Algorithm implements auditlog.Signer.
func (s *vaultSigner) Algorithm() string { return "ed25519" }

// Sign implements auditlog.Signer with the signer KeyID named.
func (s *vaultSigner) Sign(ctx context.Context, msg []byte) ([]byte, error) {
	s.mu.Lock()
	vs := s.pinned
	s.mu.Unlock()
	if vs == nil {
		if e := s.lastErr.Load(); e != nil {
			return nil, fmt.Errorf("%w: %v", errSignerPending, *e)
		}
		return nil, errSignerPending
	}
	// Readiness follows signing: a grant revoked or a key disabled at runtime makes the
	// replica unready until a checkpoint is signed again.
	sig, err := vs.Sign(ctx, msg)
	if err != nil {
		err = fmt.Errorf("signing a checkpoint: %w", err)
		s.lastErr.Store(&err)
		return nil, err
	}
	s.lastErr.Store(nil)
	return sig, nil
}

// Name implements Component.
func (s *vaultSigner) Name() string { return "decision-log-signer" }

// Run reads the transit key once Vault answers, retrying with backoff (1s doubling to 10s, as often as the log retries signing),
// then idles until shutdown (a component that returns would stop the sidecar).
func (s *vaultSigner) Run(ctx context.Context) error {
	wait := time.Second
	for {
		err := s.resolve(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		s.log.Error("decision log: the Vault transit signing key cannot be read; checkpoints are not signed until it can", "err", err, "alarm", "decision_log_checkpoint", "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
	<-ctx.Done()
	return nil
}
