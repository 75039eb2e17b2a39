package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/consentry/consentry/sidecar/auditlog"
)

func init() { Register(auditDiskTestCmd()) }

// auditDiskTestCmd measures the disk a strict decision log will use (auditlog.DiskTest).
func auditDiskTestCmd() *Command {
	c := &Command{Name: "audit disk-test", Summary: "measure how long strict mode waits for this disk per decision (the floor, before CPU and hashing)",
		Usage: "DIR|--config FILE [--rate N] [--duration D] [--record-bytes N] [--max-p99 D] [--json]"}
	c.Run = func(ctx context.Context, env *Env, args []string) error {
		fs := NewFlags(c, env)
		cfgPath := fs.String("config", "", "consentry config: test decision_log.dir with its preallocate_bytes")
		rate := fs.Int("rate", 4000, "decisions per second offered (open loop)")
		duration := fs.Duration("duration", 5*time.Second, "length of each mode's run")
		recordBytes := fs.Int("record-bytes", 1500, "bytes logged per decision")
		maxP99 := fs.Duration("max-p99", 0, "exit 1 when the preallocated mode's p99 is over this budget (0: report only)")
		asJSON := fs.Bool("json", false, "print the results as JSON")
		pos, err := auditParseArgs(fs, args)
		if err != nil {
			return err
		}
		if *rate < 1 || *duration <= 0 || *recordBytes < 1 {
			return Usagef("--rate, --duration and --record-bytes must be positive")
		}
		dir, err := decisionLogDir("", pos, *cfgPath)
		if err != nil {
			return err
		}
		o := auditlog.DiskTestOptions{Dir: dir, Rate: *rate, Duration: *duration, RecordBytes: *recordBytes}
		if *cfgPath != "" {
			f, err := decisionLogConfig(*cfgPath)
			if err != nil {
				return err
			}
			o.PreallocateBytes = max(f.Config.PreallocateBytes, 0) // -1 (append) still shows both modes
		}
		if !*asJSON {
			fmt.Fprintf(env.Stderr, "writing a scratch file in %s: %d decisions/s of %d bytes, %s per mode...\n", dir, *rate, *recordBytes, *duration)
		}
		res, err := auditlog.DiskTest(ctx, o)
		if errors.Is(err, auditlog.ErrDiskTestOptions) {
			return Exit(ExitUsage, err)
		} else if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(env.Stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(res); err != nil {
				return err
			}
		} else {
			writeDiskTest(env, res)
		}
		if *maxP99 > 0 && res[0].P99 > *maxP99 {
			return Exit(ExitFailure, fmt.Errorf("p99 %s is over the budget of %s: strict mode cannot meet it on this disk", fmtMS(res[0].P99), *maxP99))
		}
		return nil
	}
	return c
}

func writeDiskTest(env *Env, res []auditlog.DiskTestResult) {
	tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tp50\tp90\tp99\tp99.9\tmax\tflush p50\tflush p99\tevents/commit\t")
	for _, r := range res {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t\n", r.Mode, fmtMS(r.P50), fmtMS(r.P90), fmtMS(r.P99), fmtMS(r.P999), fmtMS(r.Max),
			fmtMS(r.FlushP50), fmtMS(r.FlushP99), float64(r.Events)/float64(max(r.Commits, 1)))
	}
	_ = tw.Flush()
	fmt.Fprintln(env.Stdout, "\nLatency from each decision's arrival until its event is flushed, with one writer doing nothing else:")
	fmt.Fprintln(env.Stdout, "the least strict mode adds to a decision on this disk. Under load the sidecar adds its own CPU time;")
	fmt.Fprintln(env.Stdout, "see docs/operations.md, \"Is this disk fast enough for strict mode?\".")
}

func fmtMS(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d.Microseconds())/1000) }
