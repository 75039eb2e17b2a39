package app

import (
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/consentry/consentry/vaultkeys"
)

// checkVault validates the vault section for `consentry run --check` without contacting Vault:
// a login from CI would spend a use of a limited AppRole secret id and mint a token wherever
// Vault is reachable. The files the section names for consentry itself are read (the CA
// bundle, the pseudonym key, the shredded-keys ledger, created empty if missing as run does);
// the login credentials (token_file, secret_id_file, jwt_file) are not: they are mounted where
// the sidecar runs, not in CI, and only Vault can judge them - /ready does, after start.
func checkVault(vc vaultkeys.Config) error {
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
	if _, err := vaultkeys.OpenLedger(vc.LedgerPath); err != nil {
		return fmt.Errorf("vault.ledger_path: %w", err)
	}
	return nil
}
