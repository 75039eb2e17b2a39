package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/consentry/consentry/sidecar/app"
	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/config"
	"github.com/consentry/consentry/vaultkeys"
)

// Key commands: `keys encrypt` migrates a CRM export to encrypted fields, `keys
// replay-erasures` re-applies the shredded-keys ledger after a Vault restore. The logic lives
// in vaultkeys; see docs/key-model.md. Like `erase`, they work on the ledger the sidecar reads
// and refuse one that does not exist (keysFlags.open).

func init() {
	Register(keysEncryptCmd())
	Register(keysReplayCmd())
}

// keysFlags are the flags every command that talks to Vault directly shares.
type keysFlags struct {
	config, address, ledger *string
}

func addKeysFlags(fs *flag.FlagSet) keysFlags {
	return keysFlags{
		config:  fs.String("config", "consentry.yaml", "consentry configuration file (its vault: section; when vault.pseudonym_key_file is not set, customers are named with the decision log's pseudonym key, as consentry run does: decision_log.pseudonym_key_file or <dir>.keys/pseudonym.key)"),
		address: fs.String("vault-addr", "", "override vault.address"),
		ledger:  fs.String("ledger", "", "override vault.ledger_path"),
	}
}

// open loads the vault section and opens a key manager on the sidecar's existing ledger (see
// existingLedger). The pseudonymizer rule is the one `consentry run` must follow too:
// vault.pseudonym_key(_file) when set, else the decision log's customer pseudonymizer, so
// ledger, decision log and sidecar agree on pseudonyms.
func (k keysFlags) open(ctx context.Context, env *Env) (*vaultkeys.Manager, error) {
	cfg, err := config.Load(*k.config)
	if err != nil {
		return nil, Exit(ExitConfig, err)
	}
	var vc vaultkeys.Config
	if _, err := cfg.Section("vault", &vc); err != nil {
		return nil, Exit(ExitConfig, err)
	}
	if *k.address != "" {
		vc.Address = *k.address
	}
	if *k.ledger != "" {
		vc.LedgerPath = *k.ledger
	}
	vc = vc.WithDefaults()
	if err := vc.Validate(); err != nil {
		return nil, Exit(ExitConfig, cfg.KeyError(err))
	}
	if vc.LedgerPath, err = existingLedger(vc.LedgerPath); err != nil {
		return nil, err
	}
	opts := vaultkeys.Options{Logger: slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if vc.PseudonymKey == "" && vc.PseudonymKeyFile == "" {
		// The decision log's key as run uses it: configured, or generated under <dir>.keys/.
		lf, err := app.DecisionLogConfig(cfg)
		if err != nil {
			return nil, Exit(ExitConfig, err)
		}
		key, err := auditlog.ReadKeyFile(lf.Config.PseudonymKeyFile)
		if err != nil {
			if lf.GeneratedPseudonymKey {
				err = fmt.Errorf("%w (the key `consentry run` generates on first start; set vault.pseudonym_key_file or decision_log.pseudonym_key_file otherwise)", err)
			}
			return nil, Exit(ExitConfig, fmt.Errorf("decision_log.pseudonym_key_file: %w", err))
		}
		ps, err := auditlog.NewPseudonymizer(key)
		if err != nil {
			return nil, Exit(ExitConfig, fmt.Errorf("decision_log.pseudonym_key_file: %w", err))
		}
		opts.Pseudonymize = ps.Customer
	}
	lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	m, err := vaultkeys.New(lctx, vc, opts)
	if err != nil {
		return nil, Exit(ExitConfig, err)
	}
	if err := m.Ready(ctx); err != nil {
		m.Close()
		return nil, fmt.Errorf("vault at %s: %w", vc.Address, err)
	}
	return m, nil
}

// existingLedger returns the absolute path of the shredded-keys ledger at path, refusing one
// that does not exist. The key manager would create it empty, and a relative path (the
// default) resolved from another working directory than the sidecar's names a file no
// sidecar uses: `erase` would record there an erasure no sidecar reads, `keys encrypt` would
// find no erasure in it and create the keys of erased customers again, and `keys
// replay-erasures` would destroy nothing.
func existingLedger(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", Exit(ExitConfig, fmt.Errorf("vault.ledger_path %q: %w", path, err))
	}
	if _, err := os.Stat(abs); errors.Is(err, fs.ErrNotExist) {
		hint := ""
		if !filepath.IsAbs(path) {
			hint = fmt.Sprintf("; %q is relative, so it was resolved from this working directory: run the command from the sidecar's working directory, or set an absolute vault.ledger_path", path)
		}
		return "", Exit(ExitConfig, fmt.Errorf("vault.ledger_path: no shredded-keys ledger at %s: the ledger must exist%s; or pass --ledger with the path of the ledger the sidecar uses "+
			"(`consentry run` creates it on its first start; before any start, create it empty where the sidecar will read it. This command does not create one: "+
			"a new ledger holds none of the erasures the sidecar recorded, and no sidecar reads what is recorded in it)", abs, hint))
	} else if err != nil {
		return "", Exit(ExitConfig, fmt.Errorf("vault.ledger_path: %w", err))
	}
	return abs, nil
}

func keysEncryptCmd() *Command {
	c := &Command{
		Name:    "keys encrypt",
		Summary: "encrypt the sensitive fields of a CRM export (JSON lines) with each customer's Vault keys",
		Usage:   "--config FILE [--ledger FILE] [--in FILE] [--out FILE] [--fields a=contact,b=financial | --catalog data.json] [--customer-field id]",
	}
	c.Run = func(ctx context.Context, env *Env, args []string) error {
		fs := NewFlags(c, env)
		kf := addKeysFlags(fs)
		in := fs.String("in", "-", "input JSON lines file (- = stdin)")
		out := fs.String("out", "-", "output file (- = stdout); written to FILE.partial and renamed when complete")
		fields := fs.String("fields", "", "field=class pairs, comma separated (dotted fields for nested objects)")
		catalog := fs.String("catalog", "policies/data/consentry/catalog/data.json", "policy catalog whose fields' key_scope give the field map (when --fields is not given)")
		idField := fs.String("customer-field", "id", "field holding the customer id")
		every := fs.Int("progress-every", 10000, "report progress on stderr every N records")
		if err := ParseFlags(fs, args); err != nil {
			return err
		}
		var fieldMap map[string]string
		var err error
		if *fields != "" {
			fieldMap, err = vaultkeys.ParseFieldMap(*fields)
		} else {
			var f *os.File
			if f, err = os.Open(*catalog); err == nil {
				fieldMap, err = vaultkeys.FieldMapFromCatalog(f)
				f.Close()
			}
		}
		if err != nil {
			return Usagef("field map: %v", err)
		}
		var r io.Reader = env.Stdin
		if *in != "-" {
			f, err := os.Open(*in)
			if err != nil {
				return Usagef("--in: %v", err)
			}
			defer f.Close()
			r = f
		}
		m, err := kf.open(ctx, env)
		if err != nil {
			return err
		}
		defer m.Close()
		w := env.Stdout
		var tmp *os.File
		if *out != "-" {
			if tmp, err = os.Create(*out + ".partial"); err != nil {
				return err
			}
			defer func() {
				if tmp != nil {
					tmp.Close()
					os.Remove(tmp.Name())
				}
			}()
			w = tmp
		}
		start := time.Now()
		progress := func(s vaultkeys.MigrateStats) {
			fmt.Fprintf(env.Stderr, "keys encrypt: %d records, %d fields encrypted, %d already encrypted, %d erased customers, %d refused (%s)\n",
				s.Records, s.Encrypted, s.Skipped, s.Erased, s.Refused, time.Since(start).Round(time.Millisecond))
		}
		// Each refused record is named as it is met (line and field, never a value); the
		// run goes on so that one pass names them all, and then fails.
		refused := func(r vaultkeys.Refusal) { fmt.Fprintf(env.Stderr, "keys encrypt: refused %s\n", r) }
		st, err := m.EncryptJSONLines(ctx, r, w, vaultkeys.MigrateOptions{CustomerField: *idField, Fields: fieldMap,
			Progress: progress, ProgressEvery: *every, Refused: refused})
		if errors.Is(err, vaultkeys.ErrRecordsRefused) {
			// Not a migration of the whole export: --out is not written (a CRM loaded from it
			// would lose the refused records), and stdout lacks them.
			return fmt.Errorf("%w: a sensitive value in them cannot be encrypted as it is (named above); fix them in the export and run again", err)
		}
		if err != nil {
			return fmt.Errorf("after %d records: %w", st.Records, err)
		}
		if st.Records > 0 && st.Encrypted == 0 && st.Skipped == 0 && st.Erased == 0 {
			// A field map that matches nothing (a typo) would write the export back in
			// plaintext and call it migrated.
			return fmt.Errorf("no field of --fields was found in %d records: nothing was encrypted (check the field paths)", st.Records)
		}
		if tmp != nil {
			if err := tmp.Sync(); err != nil {
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), filepath.Clean(*out)); err != nil {
				return err
			}
			tmp = nil
		}
		return nil
	}
	return c
}

func keysReplayCmd() *Command {
	c := &Command{
		Name:    "keys replay-erasures",
		Summary: "destroy again every key in the shredded-keys ledger (run after restoring Vault from a snapshot)",
		Usage:   "--config FILE [--ledger FILE]",
	}
	c.Run = func(ctx context.Context, env *Env, args []string) error {
		fs := NewFlags(c, env)
		kf := addKeysFlags(fs)
		if err := ParseFlags(fs, args); err != nil {
			return err
		}
		m, err := kf.open(ctx, env)
		if err != nil {
			return err
		}
		defer m.Close()
		rep, rerr := m.ReplayErasures(ctx)
		if rep != nil {
			enc := json.NewEncoder(env.Stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(rep); err != nil {
				return err
			}
		}
		return rerr
	}
	return c
}
