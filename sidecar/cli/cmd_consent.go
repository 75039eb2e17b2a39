package cli

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/config"
	"github.com/consentry/consentry/sidecar/consent"
)

// The consent commands talk to a running sidecar's admin API, so that the change is
// validated once, recorded durably, and visible to decisions at once on every replica.

func init() {
	Register(&Command{Name: "consent grant", Summary: "record a customer's consent for a purpose (with its proof)",
		Usage: "--customer ID --purpose P --notice-version V --notice-hash SHA256 --channel C [--expires RFC3339] [--captured-at T] [--event-id ID] [ADMIN FLAGS]",
		Run:   runConsentGrant})
	Register(&Command{Name: "consent withdraw", Summary: "record a withdrawal of consent (may trigger erasure, see state.erase_on_withdrawal)",
		Usage: "--customer ID --purpose P [--channel C] [--reason TEXT] [--event-id ID] [ADMIN FLAGS]",
		Run:   runConsentWithdraw})
	Register(&Command{Name: "consent show", Summary: "show a customer's state and current consents (--history: the whole ledger)",
		Usage: "--customer ID [--history] [--json] [ADMIN FLAGS]",
		Run:   runConsentShow})
	Register(&Command{Name: "consent import", Summary: "import consent records from a CRM's CSV export (--dry-run, rejected rows report)",
		Usage: "--file FILE.csv [--dry-run] [--rejects OUT.csv] [--map COLUMN=FIELD,...] [--purpose P] [--channel C] [--notice-version V --notice-hash H] [--default-status granted|withdrawn] [--timezone ZONE] [--captured-now] [--retention-in-past confirm] [ADMIN FLAGS]",
		Run:   runConsentImport})
}

type adminFlags struct{ admin, tokenFile, config *string }

func addAdminFlags(fs *flag.FlagSet) adminFlags {
	return adminFlags{
		admin:     fs.String("admin", "", "admin API base URL (default: admin.listen of --config, $CONSENTRY_ADMIN_URL, or http://127.0.0.1:9400)"),
		tokenFile: fs.String("token-file", "", "file holding the admin token (default: $CONSENTRY_ADMIN_TOKEN, or admin.token of --config)"),
		config:    fs.String("config", "", "sidecar configuration file to take the admin address and token from"),
	}
}

func (a adminFlags) client(ctx context.Context) (*consent.Client, error) {
	// Precedence: --admin, the config's admin.listen, $CONSENTRY_ADMIN_URL, the default. The
	// config's address wins over the environment because its token goes with it: a stray
	// $CONSENTRY_ADMIN_URL must not receive the token of the config named on the command.
	cl := &consent.Client{BaseURL: *a.admin, Token: os.Getenv("CONSENTRY_ADMIN_TOKEN"), Context: ctx}
	if *a.config != "" {
		cfg, err := config.Load(*a.config)
		if err != nil {
			return nil, Exit(ExitConfig, err)
		}
		if cl.BaseURL == "" {
			cl.BaseURL = "http://" + cfg.Admin.Listen
		}
		if cl.Token == "" {
			cl.Token = cfg.Admin.Token
		}
	}
	if cl.BaseURL == "" {
		cl.BaseURL = os.Getenv("CONSENTRY_ADMIN_URL")
	}
	if cl.BaseURL == "" {
		cl.BaseURL = "http://127.0.0.1:9400"
	}
	if *a.tokenFile != "" {
		b, err := os.ReadFile(*a.tokenFile)
		if err != nil {
			return nil, Usagef("--token-file: %v", err)
		}
		cl.Token = strings.TrimSpace(string(b))
	}
	return cl, nil
}

func timeFlag(name, v string) (*time.Time, error) {
	if v == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return nil, Usagef("--%s: %q is not RFC 3339 (2026-12-31T00:00:00Z)", name, v)
	}
	return &t, nil
}

func printJSON(env *Env, v any) error {
	enc := json.NewEncoder(env.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func consentEventFlags(fs *flag.FlagSet) (*consent.ConsentInput, *string) {
	in := &consent.ConsentInput{}
	fs.StringVar(&in.CustomerID, "customer", "", "customer id (required)")
	fs.StringVar(&in.Purpose, "purpose", "", "purpose, a fideslang data-use key from the catalogue (required)")
	fs.StringVar(&in.Channel, "channel", "", "how consent was captured: web, email, phone, paper, ...")
	fs.StringVar(&in.EventID, "event-id", "", "client event id (idempotency: a second event with it is refused)")
	fs.StringVar(&in.CapturedBy, "captured-by", "", "who captured it (default: the admin actor)")
	fs.StringVar(&in.Reason, "reason", "", "free text")
	captured := fs.String("captured-at", "", "when the customer gave/withdrew it, RFC 3339 (default now)")
	return in, captured
}

func runConsentGrant(ctx context.Context, env *Env, args []string) error {
	c := commands["consent grant"]
	fs := NewFlags(c, env)
	in, captured := consentEventFlags(fs)
	fs.StringVar(&in.NoticeVersion, "notice-version", "", "version of the privacy notice agreed to (required)")
	fs.StringVar(&in.NoticeHash, "notice-hash", "", "SHA-256 of the notice text (required)")
	expires := fs.String("expires", "", "expiry, RFC 3339 (optional)")
	af := addAdminFlags(fs)
	if err := ParseFlags(fs, args); err != nil {
		return err
	}
	return sendConsent(ctx, env, af, in, *captured, *expires, "/consents")
}

func runConsentWithdraw(ctx context.Context, env *Env, args []string) error {
	c := commands["consent withdraw"]
	fs := NewFlags(c, env)
	in, captured := consentEventFlags(fs)
	af := addAdminFlags(fs)
	if err := ParseFlags(fs, args); err != nil {
		return err
	}
	return sendConsent(ctx, env, af, in, *captured, "", "/consents/withdrawals")
}

func sendConsent(ctx context.Context, env *Env, af adminFlags, in *consent.ConsentInput, captured, expires, path string) error {
	if in.CustomerID == "" || in.Purpose == "" {
		return Usagef("--customer and --purpose are required")
	}
	var err error
	if in.CapturedAt, err = timeFlag("captured-at", captured); err != nil {
		return err
	}
	if in.ExpiresAt, err = timeFlag("expires", expires); err != nil {
		return err
	}
	cl, err := af.client(ctx)
	if err != nil {
		return err
	}
	var res consent.Result
	if err := cl.Do("POST", path, in, &res); err != nil {
		return err
	}
	return printJSON(env, res)
}

func runConsentShow(ctx context.Context, env *Env, args []string) error {
	c := commands["consent show"]
	fs := NewFlags(c, env)
	customer := fs.String("customer", "", "customer id (required)")
	history := fs.Bool("history", false, "show the whole consent ledger of the customer")
	asJSON := fs.Bool("json", false, "print JSON")
	af := addAdminFlags(fs)
	if err := ParseFlags(fs, args); err != nil {
		return err
	}
	if *customer == "" {
		return Usagef("--customer is required")
	}
	cl, err := af.client(ctx)
	if err != nil {
		return err
	}
	id := url.PathEscape(*customer)
	if *history {
		var h struct {
			Events []consent.Event `json:"events"`
		}
		if err := cl.Do("GET", "/customers/"+id+"/consents/history", nil, &h); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, h)
		}
		for _, e := range h.Events {
			fmt.Fprintf(env.Stdout, "%6d  %s  %-9s  %-40s  notice=%s channel=%s by=%s event=%s\n", e.Seq, e.CapturedAt.Format(time.RFC3339),
				termSafe(e.Kind), termSafe(e.Purpose), termSafe(e.NoticeVersion), termSafe(e.Channel), termSafe(e.CapturedBy), termSafe(e.EventID))
		}
		return nil
	}
	var v consent.CustomerView
	if err := cl.Do("GET", "/customers/"+id, nil, &v); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env, v)
	}
	fmt.Fprintf(env.Stdout, "customer %s  erased=%v", termSafe(v.Customer.ID), v.Customer.Erased)
	if v.Customer.RetentionUntil != nil {
		fmt.Fprintf(env.Stdout, "  retention_until=%s", v.Customer.RetentionUntil.Format(time.RFC3339))
	}
	fmt.Fprintln(env.Stdout)
	for _, c := range v.Consents {
		exp := ""
		if c.ExpiresAt != nil {
			exp = " expires=" + c.ExpiresAt.Format(time.RFC3339)
		}
		fmt.Fprintf(env.Stdout, "  %-40s %-9s notice=%s channel=%s%s event=%s\n", termSafe(c.Purpose), termSafe(c.Status), termSafe(c.NoticeVersion), termSafe(c.Channel), exp, termSafe(c.EventID))
	}
	return nil
}

func runConsentImport(ctx context.Context, env *Env, args []string) error {
	c := commands["consent import"]
	fs := NewFlags(c, env)
	file := fs.String("file", "", "CSV export with a header row (- for stdin)")
	dry := fs.Bool("dry-run", false, "validate every row against the catalogue and the stored state; write nothing")
	rejects := fs.String("rejects", "", "write rejected rows (line, customer_id, code, reason) to this CSV file")
	mapping := fs.String("map", "", "column mapping for unusual headers: COLUMN=FIELD,... (fields: customer_id, purpose, status, opt_out, notice_version, notice_hash, channel, captured_at, captured_by, expires_at, event_id, retention_until, reason); a mapped column wins over one whose header is an alias of the same field")
	purpose := fs.String("purpose", "", "purpose for rows without a purpose column")
	channel := fs.String("channel", "", "channel for rows without one (default import)")
	nv := fs.String("notice-version", "", "notice version for rows without one")
	nh := fs.String("notice-hash", "", "notice hash for rows without one")
	defaultStatus := fs.String("default-status", "", "granted or withdrawn: the status of every row of a file without a status or opt-out column (refused otherwise)")
	timezone := fs.String("timezone", "", "IANA time zone of times written without one, e.g. Europe/Berlin (default UTC)")
	retentionInPast := fs.String("retention-in-past", "", "confirm: accept retention_until deadlines already past (the customer is no longer served and, with retention erasure on, erased at the next sweep); such rows are rejected otherwise")
	capturedNow := fs.Bool("captured-now", false, "stamp rows without a capture date with the import time (refused otherwise: an undated row could undo a later withdrawal)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	af := addAdminFlags(fs)
	if err := ParseFlags(fs, args); err != nil {
		return err
	}
	if *file == "" {
		return Usagef("--file is required")
	}
	switch *defaultStatus {
	case "", consent.KindGranted, consent.KindWithdrawn:
	default:
		return Usagef("--default-status: %q is neither granted nor withdrawn", *defaultStatus)
	}
	if *retentionInPast != "" && *retentionInPast != consent.RetentionInPastConfirm {
		return Usagef("--retention-in-past: the only value is %q", consent.RetentionInPastConfirm)
	}
	in := env.Stdin
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return Usagef("--file: %v", err)
		}
		defer f.Close()
		in = f
	}
	cl, err := af.client(ctx)
	if err != nil {
		return err
	}
	q := url.Values{}
	q.Set("dry_run", strconv.FormatBool(*dry))
	if *capturedNow {
		q.Set("captured_at", "now")
	}
	for k, v := range map[string]string{"map": *mapping, "purpose": *purpose, "channel": *channel, "notice_version": *nv, "notice_hash": *nh,
		"default_status": *defaultStatus, "timezone": *timezone, "retention_in_past": *retentionInPast} {
		if v != "" {
			q.Set(k, v)
		}
	}
	rep, err := cl.Import(in, q.Encode())
	var failed *consent.ImportFailure
	if err != nil && !errors.As(err, &failed) {
		return err
	}
	// Also when the import stopped part-way: the totals so far, the rejected rows and which
	// lines were written are what the operator needs to go on.
	if *rejects != "" {
		if werr := writeRejects(*rejects, rep.Rejections); werr != nil {
			return errors.Join(err, werr)
		}
	}
	if *asJSON {
		if err := printJSON(env, rep); err != nil {
			return err
		}
	} else {
		printImportReport(env.Stdout, rep, failed)
	}
	if failed != nil && *asJSON {
		return Exit(ExitFailure, fmt.Errorf("%w\n%s", err, failed.Summary()))
	}
	if failed != nil {
		return Exit(ExitFailure, err) // the summary is in the report above
	}
	if rep.Rejected > 0 {
		return Exit(ExitFailure, fmt.Errorf("%d of %d rows rejected", rep.Rejected, rep.Rows))
	}
	return nil
}

func printImportReport(w io.Writer, rep consent.ImportReport, failed *consent.ImportFailure) {
	mode := "imported"
	switch {
	case failed != nil && rep.DryRun:
		mode = "dry run stopped by an error (nothing written)"
	case failed != nil:
		mode = "import stopped by an error; so far"
	case rep.DryRun:
		mode = "dry run (nothing written)"
	}
	fmt.Fprintf(w, "%s: %d rows, %d accepted, %d already recorded, %d rejected, %d customers' retention set\n",
		mode, rep.Rows, rep.Accepted, rep.Duplicates, rep.Rejected, rep.Customers)
	if n := rep.Rows - rep.Accepted - rep.Duplicates - rep.Rejected; n > 0 {
		fmt.Fprintf(w, "  %d rows read but not processed (not written)\n", n)
	}
	if len(rep.IgnoredColumns) > 0 {
		cols := make([]string, len(rep.IgnoredColumns))
		for i, c := range rep.IgnoredColumns {
			cols[i] = strconv.Quote(c)
		}
		fmt.Fprintf(w, "  columns not read: %s\n", strings.Join(cols, ", "))
	}
	for _, r := range rep.Rejections {
		fmt.Fprintf(w, "  line %d  customer=%s  %s: %s\n", r.Line, termSafe(r.CustomerID), termSafe(r.Code), termSafe(r.Reason))
	}
	if failed != nil {
		fmt.Fprintf(w, "  %s\n", failed.Summary())
	}
}

func writeRejects(path string, rs []consent.Rejection) error {
	err := writePrivate(path, func(f io.Writer) error { // customer ids
		w := csv.NewWriter(f)
		_ = w.Write([]string{"line", "customer_id", "code", "reason"})
		for _, r := range rs {
			// The customer id and the reason quote the rejected row: a cell of the export
			// (=HYPERLINK(...)) must not become a formula in the spreadsheet that opens this.
			_ = w.Write([]string{strconv.Itoa(r.Line), auditlog.CSVSafe(r.CustomerID), auditlog.CSVSafe(r.Code), auditlog.CSVSafe(r.Reason)})
		}
		w.Flush()
		return w.Error()
	})
	if err != nil {
		return fmt.Errorf("--rejects: %w", err)
	}
	return nil
}

// termSafe escapes what a terminal would act on instead of print - control characters
// (ESC sequences, carriage returns, C1), bidirectional overrides and invalid UTF-8 - in
// text that comes from the state store: ids and names a CSV import or an API client chose.
func termSafe(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || unsafeRune(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case unsafeRune(r):
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
		i += n
	}
	return b.String()
}

func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == 0x200e || r == 0x200f || r == 0x061c
}
