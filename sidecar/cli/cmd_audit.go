package cli

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/consentry/consentry/sidecar/app"
	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/config"
)

// Decision-log commands: verify, query, report, keygen. The logic lives in sidecar/auditlog.

func init() {
	Register(auditVerifyCmd())
	Register(auditQueryCmd())
	Register(auditReportCmd())
	Register(auditKeygenCmd())
}

// auditParseArgs parses flags that may follow positional arguments ("verify DIR --json").
func auditParseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := ParseFlags(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// decisionLogConfig reads the decision_log section of a consentry config file and resolves
// it as `consentry run` does (app.ResolveDecisionLog): the log directory and the key files
// run generates under <dir>.keys/ when the configuration names none.
func decisionLogConfig(path string) (app.DecisionLogFiles, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return app.DecisionLogFiles{}, Exit(ExitConfig, err)
	}
	f, err := app.DecisionLogConfig(cfg)
	if err != nil {
		return f, Exit(ExitConfig, err)
	}
	return f, nil
}

// logPseudonymizer loads the pseudonym key from --pseudonym-key or the config's decision_log.
func logPseudonymizer(keyFile, configPath string) (*auditlog.Pseudonymizer, error) {
	if keyFile == "" && configPath != "" {
		f, err := decisionLogConfig(configPath)
		if err != nil {
			return nil, err
		}
		keyFile = f.Config.PseudonymKeyFile
	}
	if keyFile == "" {
		return nil, Exit(ExitUsage, errNoPseudonymKey)
	}
	k, err := auditlog.ReadKeyFile(keyFile)
	if err != nil {
		return nil, err
	}
	return auditlog.NewPseudonymizer(k)
}

// errNoPseudonymKey: neither --pseudonym-key nor --config names the key.
var errNoPseudonymKey = errors.New("--pseudonym-key (or --config: the decision log's pseudonym key) is needed to look a customer up")

type auditKeyList []string

func (s *auditKeyList) String() string     { return strings.Join(*s, ",") }
func (s *auditKeyList) Set(v string) error { *s = append(*s, v); return nil }

func auditVerifyCmd() *Command {
	c := &Command{Name: "audit verify", Summary: "verify a decision log: hash chain, sequence, signed checkpoints, truncation",
		Usage: "DIR|--config FILE [--public-key FILE]... [--allow-unsigned] [--sealed] [--json]"}
	c.Run = func(ctx context.Context, env *Env, args []string) error {
		fs := NewFlags(c, env)
		var keys auditKeyList
		fs.Var(&keys, "public-key", "Ed25519 public key (PEM) that signs checkpoints; repeatable")
		cfgPath := fs.String("config", "", "consentry config: verify its decision log (when DIR is not given) with the signing key consentry run uses (decision_log.signing_key_file, or the generated <dir>.keys/signing.pub)")
		unsigned := fs.Bool("allow-unsigned", false, "accept unsigned checkpoints (development logs)")
		sealed := fs.Bool("sealed", false, "fail when records follow the last signed checkpoint (a stopped log)")
		asJSON := fs.Bool("json", false, "print the report as JSON")
		pos, err := auditParseArgs(fs, args)
		if err != nil {
			return err
		}
		dir, err := decisionLogDir("", pos, *cfgPath)
		if err != nil {
			return err
		}
		if *cfgPath != "" {
			f, err := decisionLogConfig(*cfgPath)
			if err != nil {
				return err
			}
			switch {
			case f.GeneratedSigningKey:
				keys = append(keys, f.SigningPublicKeyFile) // the public half run wrote next to it
				// A key stored beside the log proves the chain and checkpoints agree, not that
				// nobody rewrote both: say so, and what would.
				fmt.Fprintf(env.Stderr, "note: verifying with %s, generated beside the log; whoever can rewrite the log can usually replace it too. Keep a copy elsewhere and pass it with --public-key to prove the log was not rewritten.\n", f.SigningPublicKeyFile)
			case f.Config.SigningKeyFile != "":
				keys = append(keys, f.Config.SigningKeyFile)
			case f.Config.SigningVaultKey != "" && len(keys) == 0:
				// The key is in Vault: without its public half every checkpoint would be
				// reported forged.
				return Usagef("decision_log.signing_vault_key %q: the checkpoint key is a Vault transit key; pass its public half with --public-key", f.Config.SigningVaultKey)
			}
		}
		pubs := map[string]ed25519.PublicKey{}
		for _, k := range keys {
			pk, err := auditlog.LoadPublicKey(k)
			if err != nil {
				return Exit(ExitUsage, err)
			}
			pubs[auditlog.KeyIDOf(pk)] = pk
		}
		start := time.Now()
		rep, err := auditlog.Verify(dir, auditlog.VerifyOptions{PublicKeys: pubs, AllowUnsigned: *unsigned, RequireSealed: *sealed, Context: ctx})
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(env.Stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(rep)
		} else {
			el := time.Since(start)
			fmt.Fprintf(env.Stdout, "%d segments, %d records (%d decisions, %d intents, %d erasures, %d checkpoints), seq %d..%d, head %s, %d unsealed, %s (%.0f records/s)\n",
				rep.Segments, rep.Records, rep.Decisions, rep.Intents, rep.Erasures, rep.Checkpoints, rep.FirstSeq, rep.LastSeq, rep.Head, rep.UnsealedTail,
				el.Round(time.Millisecond), float64(rep.Records)/max(el.Seconds(), 1e-9))
			printUnresolvedIntents(env.Stdout, rep.UnresolvedIntents)
			for _, p := range rep.Problems {
				fmt.Fprintf(env.Stdout, "FAIL %-18s seq %-8d %s %s\n", p.Kind, p.Seq, p.Segment, p.Message)
			}
		}
		if !rep.OK() {
			return Exit(ExitVerifyFailed, fmt.Errorf("%d problems found", rep.ProblemCount))
		}
		if !*asJSON {
			fmt.Fprintln(env.Stdout, "OK")
		}
		return nil
	}
	return c
}

// printUnresolvedIntents warns of each intent record no decision record resolved: not a
// finding (the chain is intact, verify passes), but a change the CRM may have made unrecorded.
func printUnresolvedIntents(w io.Writer, us []auditlog.UnresolvedIntent) {
	for _, u := range us {
		why := "the sidecar stopped before the CRM's answer was logged"
		if u.Pending {
			// No open or close checkpoint after it: a live log may still be waiting for it.
			why += ", or, on a live log, the answer is still on its way"
		}
		fmt.Fprintf(w, "warning: decision %s (seq %d, %s, %s): a state-changing request was forwarded to the CRM but its outcome was never recorded (%s)\n",
			u.DecisionID, u.Seq, u.Timestamp.UTC().Format(time.RFC3339Nano), u.Segment, why)
	}
	if len(us) > 0 {
		fmt.Fprintf(w, "warning: %d unresolved %s: check the CRM for %s (not a tamper finding)\n", len(us),
			plural(len(us), "intent", "intents"), plural(len(us), "this change", "these changes"))
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// logFilterFlags registers the query filters shared by query, report and replay.
type logFilterFlags struct {
	customer, subject, purpose, caseID, outcome, reason, action, since, until *string
}

func addLogFilterFlags(fs *flag.FlagSet) *logFilterFlags {
	return &logFilterFlags{
		customer: fs.String("customer", "", "customer id (pseudonymized with the log's key before matching)"),
		subject:  fs.String("subject", "", "subject (caller) id: an employee's id, or (with the pseudonym key) a customer's id"),
		purpose:  fs.String("purpose", "", "purpose"),
		caseID:   fs.String("case", "", "case id"),
		outcome:  fs.String("outcome", "", "allow or deny"),
		reason:   fs.String("reason", "", "reason code"),
		action:   fs.String("action", "", "action"),
		since:    fs.String("since", "", "from this time (RFC 3339, a date (UTC), or a duration like 24h meaning that long ago)"),
		until:    fs.String("until", "", "before this time (RFC 3339 or duration ago); a date (UTC) includes that whole day"),
	}
}

// parseLogTime reads a --since or --until value: RFC 3339, a date (UTC) or a duration ago. A
// date-only --until (until) means the end of that day: "--until 2026-11-30" includes the
// 30th, as a reader expects, so the exclusive bound is the next midnight.
func parseLogTime(s string, now time.Time, until bool) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		if until {
			t = t.AddDate(0, 0, 1)
		}
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is neither RFC 3339, a date nor a duration", s)
}

func (ff *logFilterFlags) filter(ps func() (*auditlog.Pseudonymizer, error)) (auditlog.Filter, error) {
	f := auditlog.Filter{Subject: *ff.subject, Purpose: *ff.purpose, Case: *ff.caseID, Outcome: *ff.outcome, Reason: *ff.reason, Action: *ff.action}
	if f.Outcome != "" && f.Outcome != "allow" && f.Outcome != "deny" {
		return f, Usagef("--outcome must be allow or deny")
	}
	var err error
	now := time.Now()
	if f.Since, err = parseLogTime(*ff.since, now, false); err != nil {
		return f, Usagef("--since: %v", err)
	}
	if f.Until, err = parseLogTime(*ff.until, now, true); err != nil {
		return f, Usagef("--until: %v", err)
	}
	if *ff.customer != "" {
		p, err := ps()
		if err != nil {
			return f, err
		}
		f.Customer, f.KeyFingerprint = p.Customer(*ff.customer), p.Fingerprint()
	}
	if f.Subject != "" {
		// A customer subject is logged by the pseudonym of its customer id (which its login
		// takes too), never raw: with the key, --subject matches that as well. Without one it
		// matches employees, whose ids are logged as they are.
		p, err := ps()
		switch {
		case err == nil:
			f.SubjectPseudonym, f.KeyFingerprint = p.Customer(f.Subject), p.Fingerprint()
		case !errors.Is(err, errNoPseudonymKey):
			return f, err
		}
	}
	return f, nil
}

// searchError gives the query and report errors that mean "the wrong data" their exit codes.
func searchError(err error) error {
	switch {
	case errors.Is(err, auditlog.ErrPseudonymKeyMismatch):
		return Exit(ExitWrongKey, err)
	case errors.Is(err, auditlog.ErrNoLog):
		return Exit(ExitNoLog, err)
	}
	return err
}

// warnSearch tells the operator, on stderr, when an empty result may not mean "nothing
// recorded": no decision in the range, or a key the log cannot confirm; when older records
// were deleted; and when writes were forwarded to the CRM with no outcome recorded.
func warnSearch(w io.Writer, st auditlog.QueryStats, f auditlog.Filter) {
	span := func() string {
		return fmt.Sprintf("%s to %s", st.First.UTC().Format(time.RFC3339), st.Last.UTC().Format(time.RFC3339))
	}
	if st.Unresolved > 0 {
		// Query lists them last (a table's OUTCOME says auditlog.OutcomeForwarded), the report
		// among the accesses as "unrecorded".
		fmt.Fprintf(w, "warning: %d state-changing %s forwarded to the CRM but no outcome was recorded (unresolved intent records): the sidecar stopped before the CRM's answer was logged; check the CRM\n",
			st.Unresolved, plural(st.Unresolved, "request was", "requests were"))
	}
	switch {
	case st.Decisions == 0 && st.Matched > st.Unresolved:
		// The customer's erasure records matched (query --customer and report return them).
		fmt.Fprintf(w, "note: no decision record in the time range (%d records in %d segments searched): no access is recorded there, only erasures (%d shown)\n",
			st.Records, st.Segments, st.Matched-st.Unresolved)
	case st.Decisions == 0 && st.Matched == 0:
		fmt.Fprintf(w, "warning: no decision record in the time range: %d records in %d segments searched, none could match\n", st.Records, st.Segments)
	case st.Matched == 0 && f.KeyFingerprint != "" && st.KeyChecked == 0 && st.KeyUnknown > 0:
		fmt.Fprintf(w, "warning: nothing matched in %d decision records (%s), and the log does not name the pseudonym key they were written with "+
			"(checkpoints written before they carried its fingerprint): a --pseudonym-key that is not the log's would look the same; make sure it is\n",
			st.Decisions, span())
	}
	if !st.DeletedBefore.IsZero() && (f.Since.IsZero() || f.Since.Before(st.DeletedBefore)) {
		how := "were deleted by retention"
		if !st.DeletedByRetention {
			how = "are missing from the log, and no retention record accounts for them (run consentry audit verify)"
		}
		fmt.Fprintf(w, "note: records before %s %s\n", st.DeletedBefore.UTC().Format(time.RFC3339Nano), how)
	}
}

func auditQueryCmd() *Command {
	c := &Command{Name: "audit query", Summary: "search the decision log by customer, subject, purpose, case, outcome, reason, time",
		Usage: "[--log] DIR [--customer ID --pseudonym-key FILE] [--subject ID] [--purpose P] [--case ID] [--outcome allow|deny] [--reason CODE] [--since T] [--until T] [--format table|json] [--progress]"}
	c.Run = func(ctx context.Context, env *Env, args []string) error {
		fs := NewFlags(c, env)
		logDir := fs.String("log", "", "decision log directory")
		keyFile := fs.String("pseudonym-key", "", "pseudonym key file (to look up --customer)")
		cfgPath := fs.String("config", "", "consentry config: the decision log and pseudonym key consentry run uses (decision_log.dir, pseudonym_key_file or their defaults)")
		format := fs.String("format", "table", "table or json (JSON lines, the stored records)")
		progress := fs.Bool("progress", false, "report scan progress on stderr")
		ff := addLogFilterFlags(fs)
		pos, err := auditParseArgs(fs, args)
		if err != nil {
			return err
		}
		dir, err := decisionLogDir(*logDir, pos, *cfgPath)
		if err != nil {
			return err
		}
		f, err := ff.filter(func() (*auditlog.Pseudonymizer, error) { return logPseudonymizer(*keyFile, *cfgPath) })
		if err != nil {
			return err
		}
		var prog func(auditlog.Progress)
		if *progress {
			prog = func(p auditlog.Progress) {
				fmt.Fprintf(env.Stderr, "scanned %d records, %d matched (%s)\n", p.Scanned, p.Matched, p.Segment)
			}
		}
		var st auditlog.QueryStats
		switch *format {
		case "table":
			tw := auditlog.NewTableWriter(env.Stdout)
			n := 0
			st, err = auditlog.QueryLog(ctx, dir, f, func(ev *auditlog.Event, _ []byte) error {
				tw.Write(ev)
				if n++; n%1000 == 0 {
					return tw.Flush()
				}
				return nil
			}, prog)
			if ferr := tw.Flush(); err == nil {
				err = ferr
			}
		case "json":
			st, err = auditlog.QueryLog(ctx, dir, f, func(_ *auditlog.Event, line []byte) error {
				_, werr := env.Stdout.Write(append(line, '\n'))
				return werr
			}, prog)
		default:
			return Usagef("--format must be table or json")
		}
		if err != nil {
			return searchError(err)
		}
		warnSearch(env.Stderr, st, f)
		return nil
	}
	return c
}

func decisionLogDir(flagDir string, pos []string, cfgPath string) (string, error) {
	switch {
	case flagDir != "" && len(pos) == 0:
		return flagDir, nil
	case flagDir == "" && len(pos) == 1:
		return pos[0], nil
	case flagDir == "" && len(pos) == 0 && cfgPath != "":
		f, err := decisionLogConfig(cfgPath)
		if err != nil {
			return "", err
		}
		return f.Config.Dir, nil
	}
	return "", Usagef("give the log directory once (--log DIR or DIR)")
}

func auditReportCmd() *Command {
	c := &Command{Name: "audit report", Summary: "a customer's \"who accessed my data and why\" report (GDPR Art. 15)",
		Usage: "--log DIR --customer ID [--pseudonym-key FILE|--config FILE] [--format html|json|csv] [--name-employees] [--since T] [--until T] [--out FILE]"}
	c.Run = func(ctx context.Context, env *Env, args []string) error {
		fs := NewFlags(c, env)
		logDir := fs.String("log", "", "decision log directory")
		keyFile := fs.String("pseudonym-key", "", "pseudonym key file")
		cfgPath := fs.String("config", "", "consentry config: the decision log and pseudonym key consentry run uses (decision_log.dir, pseudonym_key_file or their defaults)")
		customer := fs.String("customer", "", "customer id")
		format := fs.String("format", "html", "html, json or csv")
		named := fs.Bool("name-employees", false, "show employee ids instead of pseudonyms")
		since := fs.String("since", "", "from this time (RFC 3339, a date (UTC) or a duration ago)")
		until := fs.String("until", "", "before this time (RFC 3339 or a duration ago); a date (UTC) includes that whole day")
		out := fs.String("out", "", "write to this file instead of stdout")
		pos, err := auditParseArgs(fs, args)
		if err != nil {
			return err
		}
		if *customer == "" {
			return Usagef("--customer is required")
		}
		if *format != "html" && *format != "json" && *format != "csv" {
			return Usagef("--format must be html, json or csv")
		}
		dir, err := decisionLogDir(*logDir, pos, *cfgPath)
		if err != nil {
			return err
		}
		ps, err := logPseudonymizer(*keyFile, *cfgPath)
		if err != nil {
			return err
		}
		now := time.Now()
		o := auditlog.ReportOptions{CustomerID: *customer, Pseudonymizer: ps, NameEmployees: *named}
		if o.Since, err = parseLogTime(*since, now, false); err != nil {
			return Usagef("--since: %v", err)
		}
		if o.Until, err = parseLogTime(*until, now, true); err != nil {
			return Usagef("--until: %v", err)
		}
		rep, err := auditlog.BuildReport(ctx, dir, o)
		if err != nil {
			return searchError(err)
		}
		warnSearch(env.Stderr, rep.Stats, auditlog.Filter{Customer: rep.Pseudonym, Since: o.Since, Until: o.Until, KeyFingerprint: ps.Fingerprint()})
		write := rep.WriteHTML
		switch *format {
		case "json":
			write = rep.WriteJSON
		case "csv":
			write = rep.WriteCSV
		}
		if *out == "" {
			return write(env.Stdout)
		}
		return writePrivate(*out, write) // one customer's access history
	}
	return c
}

func auditKeygenCmd() *Command {
	c := &Command{Name: "audit keygen", Summary: "create a checkpoint signing key pair and a pseudonym key for the decision log",
		Usage: "--out DIR"}
	c.Run = func(_ context.Context, env *Env, args []string) error {
		fs := NewFlags(c, env)
		out := fs.String("out", "", "directory for signing.pem, signing.pub and pseudonym.key")
		if err := ParseFlags(fs, args); err != nil {
			return err
		}
		if *out == "" {
			return Usagef("--out is required")
		}
		if err := os.MkdirAll(*out, 0o700); err != nil {
			return err
		}
		for _, n := range []string{"signing.pem", "signing.pub", "pseudonym.key"} {
			if _, err := os.Stat(filepath.Join(*out, n)); err == nil {
				return Exit(ExitUsage, fmt.Errorf("%s exists; refusing to overwrite a key", filepath.Join(*out, n)))
			}
		}
		s, err := auditlog.WriteKeyPair(filepath.Join(*out, "signing.pem"), filepath.Join(*out, "signing.pub"))
		if err != nil {
			return err
		}
		if err := auditlog.WritePseudonymKey(filepath.Join(*out, "pseudonym.key")); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "signing key %s (id %s), public key %s, pseudonym key %s\n",
			filepath.Join(*out, "signing.pem"), s.KeyID(), filepath.Join(*out, "signing.pub"), filepath.Join(*out, "pseudonym.key"))
		return nil
	}
	return c
}
