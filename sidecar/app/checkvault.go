package app

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/consentry/consentry/vaultkeys"
)

// checkVault validates the vault section for `consentry run --check` without contacting Vault:
// a login from CI would spend a use of a limited AppRole secret id and mint a token wherever
// Vault is reachable. The files the section names for consentry itself are read (the CA
// bundle, the pseudonym key, the shredded-keys ledger); the login credentials (token_file,
// secret_id_file, jwt_file) are not: they are mounted where the sidecar runs, not in CI, and
// only Vault can judge them - /ready does, after start. Nothing is created (see checkLedger).
func checkVault(vc vaultkeys.Config, log *slog.Logger) error {
	vc = vc.WithDefaults()
	if err := vc.Validate(); err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	if vc.CACert != "" {
		pem, err := os.ReadFile(vc.CACert)
		if err != nil {
			return fmt.Errorf("vault.ca_cert: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return fmt.Errorf("vault.ca_cert: %s holds no PEM certificate", vc.CACert)
		}
	}
	if vc.PseudonymKey == "" && vc.PseudonymKeyFile != "" {
		b, err := os.ReadFile(vc.PseudonymKeyFile)
		if err != nil {
			return fmt.Errorf("vault.pseudonym_key_file: %w", err)
		}
		if len(strings.TrimSpace(string(b))) < 16 {
			return fmt.Errorf("vault.pseudonym_key_file: key must be at least 16 bytes")
		}
	}
	return checkLedger(vc.LedgerPath, log)
}

// checkLedger verifies the chain of the shredded-keys ledger at path without creating it: a
// check run from another working directory than the sidecar's resolves a relative path (the
// default) elsewhere, and a file created there would be a ledger no sidecar reads. A missing
// ledger passes, since the first start creates it, but is reported with its absolute path: on
// a sidecar that has run before, it means the path is wrong, and the start would begin an
// empty ledger that ignores every erasure recorded in the real one. A path that cannot be a
// file (under a regular file, or a directory) fails; whether the directory is writable is left
// to the start, as for the decision log.
func checkLedger(path string, log *slog.Logger) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("vault.ledger_path %q: %w", path, err)
	}
	_, err = vaultkeys.ReadLedger(abs)
	if err == nil {
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("vault.ledger_path: %w", err)
	}
	hint := ""
	if !filepath.IsAbs(path) {
		hint = fmt.Sprintf("; %q is relative, so it was resolved from this working directory: check from the sidecar's working directory, or set an absolute vault.ledger_path", path)
	}
	log.Warn("vault.ledger_path: no shredded-keys ledger yet; `consentry run` creates it, empty, on its first start (--check creates nothing). "+
		"If this sidecar has run before, this is not its ledger, and a start would ignore the erasures recorded in the real one"+hint, "path", abs)
	return nil
}
