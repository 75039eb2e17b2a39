package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/auditlog/replay"
)

func init() {
	c := &Command{Name: "replay", Summary: "re-evaluate logged decisions with a candidate policy and report what would change",
		Usage: "--log DIR --policies DIR|BUNDLE [--fail-on-change [--allow-empty]] [--format text|json] [--examples N] [filters: --purpose --customer --since ...]"}
	c.Run = func(ctx context.Context, env *Env, args []string) error {
		fs := NewFlags(c, env)
		logDir := fs.String("log", "", "decision log directory")
		policies := fs.String("policies", "", "candidate policy: a policy directory, an OPA bundle directory or a bundle .tar.gz")
		failOnChange := fs.Bool("fail-on-change", false, "exit 7 when any decision would change, 8 when no decision was replayed (for CI)")
		allowEmpty := fs.Bool("allow-empty", false, "with --fail-on-change: replaying no decision is not a failure (a new deployment's empty log)")
		format := fs.String("format", "text", "text or json")
		examples := fs.Int("examples", 10, "number of example changes to show")
		keyFile := fs.String("pseudonym-key", "", "pseudonym key file (to filter by --customer)")
		cfgPath := fs.String("config", "", "consentry config (decision_log.pseudonym_key_file)")
		progress := fs.Bool("progress", false, "report scan progress on stderr")
		ff := addLogFilterFlags(fs)
		if err := ParseFlags(fs, args); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			// Flag parsing stops at the first argument: the flags after it (--fail-on-change)
			// would be ignored without a word, and a CI gate would pass whatever changed.
			return Usagef("unexpected argument %q (usage: consentry %s %s)", fs.Arg(0), c.Name, c.Usage)
		}
		if *logDir == "" || *policies == "" {
			return Usagef("--log and --policies are required")
		}
		if *format != "text" && *format != "json" {
			return Usagef("--format must be text or json")
		}
		f, err := ff.filter(func() (*auditlog.Pseudonymizer, error) { return logPseudonymizer(*keyFile, *cfgPath) })
		if err != nil {
			return err
		}
		ps, err := replay.LoadCandidate(*policies)
		if err != nil {
			return compileOrError(err)
		}
		o := replay.Options{Filter: f, Examples: *examples}
		// Replay is evaluation-bound like the sidecar: the same collector policy.
		o.Engine.ApplyGC()
		if *progress {
			o.Progress = func(p auditlog.Progress) {
				fmt.Fprintf(env.Stderr, "scanned %d records, %d selected (%s)\n", p.Scanned, p.Matched, p.Segment)
			}
		}
		rep, err := replay.Run(ctx, *logDir, ps, o)
		if err != nil {
			return compileOrError(err)
		}
		if *format == "json" {
			enc := json.NewEncoder(env.Stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(rep); err != nil {
				return err
			}
		} else {
			rep.WriteText(env.Stdout)
		}
		if *failOnChange && rep.Changed > 0 {
			return Exit(ExitChanged, fmt.Errorf("%d of %d decisions would change", rep.Changed, rep.Replayed))
		}
		if rep.Replayed == 0 {
			// A gate passed on no evidence (an empty log, a wrong --log, or filters that match
			// nothing) would let any candidate through: it fails unless --allow-empty says an
			// empty log is expected.
			if *failOnChange && !*allowEmpty {
				return Exit(ExitNotReplayed, errors.New("no decision was replayed: the candidate policy was not exercised (check --log and the filters; --allow-empty accepts an empty log)"))
			}
			fmt.Fprintln(env.Stderr, "replay: no decision was replayed: check --log and the filters; the candidate policy was not exercised")
		}
		return nil
	}
	Register(c)
}
