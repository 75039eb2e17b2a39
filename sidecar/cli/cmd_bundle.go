package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/bundle/build"
	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/verify"
)

func init() {
	Register(&Command{Name: "bundle build", Summary: "compile, test and package a policy directory as an OPA bundle (optionally signed)",
		Usage: "DIR -o bundle.tar.gz [--revision R] [--skip-tests] [--signing-key KEY --keyid ID [--signing-alg ALG] [--scope S]] [--max-size-bytes N] [--activation-timeout D]",
		Run:   runBundleBuild})
	Register(&Command{Name: "bundle sign", Summary: "sign a bundle tarball (RS256/ES256, keyid, optional scope)",
		Usage: "BUNDLE --signing-key KEY --keyid ID [--signing-alg ALG] [--scope S] [-o OUT] [--max-size-bytes N]",
		Run:   runBundleSign})
	Register(&Command{Name: "bundle verify", Summary: "verify a bundle's signature, files and hashes, and that it compiles strictly",
		Usage: "BUNDLE --verification-key PUB --keyid ID [--signing-alg ALG] [--scope S] [--max-size-bytes N] [--activation-timeout D]",
		Run:   runBundleVerify})
	Register(&Command{Name: "bundle inspect", Summary: "show a bundle's revision, roots, files and (unverified) signature claims",
		Usage: "BUNDLE [--json]",
		Run:   runBundleInspect})
	Register(&Command{Name: "bundle keygen", Summary: "create a bundle signing key pair (PEM: BASE.key, BASE.pub)",
		Usage: "-o BASE [--alg ES256|RS256]",
		Run:   runBundleKeygen})
}

// parseInterleaved parses flags that may follow positional arguments (`build DIR -o X`).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := ParseFlags(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func onePositional(c *Command, pos []string, what string) (string, error) {
	if len(pos) != 1 {
		return "", Usagef("expected one %s argument (usage: consentry %s %s)", what, c.Name, c.Usage)
	}
	return pos[0], nil
}

type signFlags struct{ key, alg, keyid, scope *string }

// algFlagHelp: the algorithm follows the key unless given, so `bundle keygen` (ES256 by
// default) and sign/build/verify with default flags agree.
const algFlagHelp = "signing algorithm: RS256/384/512, PS256/384/512, ES256/384/512 (default: from the key - RSA: RS256, EC P-256/384/521: ES256/384/512)"

func addSignFlags(fs *flag.FlagSet) signFlags {
	return signFlags{
		key:   fs.String("signing-key", "", "PEM private key to sign with"),
		alg:   fs.String("signing-alg", "", algFlagHelp),
		keyid: fs.String("keyid", "", "key id put in the signature (sidecars select the verification key by it)"),
		scope: fs.String("scope", "", "optional scope claim"),
	}
}

// addMaxSizeFlag adds --max-size-bytes (build.MaxSizeFlag): these commands read no
// configuration, so the sidecar's policy.max_size_bytes reaches them only as this flag.
func addMaxSizeFlag(fs *flag.FlagSet) *int64 {
	return fs.Int64(build.MaxSizeFlag[2:], bundle.DefaultMaxSizeBytes,
		"size limit for the tarball and each file in it (4 x for the inflated bundle): the policy.max_size_bytes of the sidecars that will load the bundle")
}

// addActivationTimeoutFlag adds --activation-timeout: the engine.activation_timeout of the
// sidecars that will load the policy, which these commands (no --config) cannot read.
func addActivationTimeoutFlag(fs *flag.FlagSet) *time.Duration {
	return fs.Duration("activation-timeout", engine.DefaultActivationTimeout,
		"bound on compiling the policy and computing its tables: the engine.activation_timeout of the sidecars that will load it")
}

// checkLimits refuses (bad usage) a size limit or activation timeout that is not positive.
func checkLimits(maxSize *int64, activation *time.Duration) error {
	if maxSize != nil && *maxSize <= 0 {
		return Usagef("%s must be positive, got %d", build.MaxSizeFlag, *maxSize)
	}
	if activation != nil && *activation <= 0 {
		return Usagef("--activation-timeout must be positive, got %s", *activation)
	}
	return nil
}

// options resolves the algorithm against the key (keyAlgorithm) and returns the signing options.
func (s signFlags) options() (*build.SignOptions, error) {
	alg, err := keyAlgorithm(*s.key, *s.alg)
	if err != nil {
		return nil, err
	}
	return &build.SignOptions{KeyFile: *s.key, Algorithm: alg, KeyID: *s.keyid, Scope: *s.scope}, nil
}

func runBundleBuild(ctx context.Context, env *Env, args []string) error {
	c := commands["bundle build"]
	fs := NewFlags(c, env)
	out := fs.String("o", "bundle.tar.gz", "output bundle file")
	rev := fs.String("revision", "", "manifest revision (default: RFC 3339 UTC timestamp + content hash)")
	skip := fs.Bool("skip-tests", false, "build without running the policy tests")
	sf := addSignFlags(fs)
	maxSize := addMaxSizeFlag(fs)
	activation := addActivationTimeoutFlag(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	dir, err := onePositional(c, pos, "policy directory")
	if err != nil {
		return err
	}
	if err := checkLimits(maxSize, activation); err != nil {
		return err
	}
	opts := build.Options{Revision: *rev, SkipTests: *skip, MaxSizeBytes: *maxSize, Engine: engine.Config{ActivationTimeout: *activation}}
	if *sf.key != "" {
		if opts.Sign, err = sf.options(); err != nil {
			return err
		}
	} else if *sf.keyid != "" || *sf.scope != "" {
		return Usagef("--keyid and --scope need --signing-key")
	}
	res, err := build.Build(ctx, dir, opts)
	if res != nil && res.Tests != nil {
		for _, f := range res.Tests.Failures {
			fmt.Fprintln(env.Stderr, "FAIL", f)
		}
	}
	var ce *engine.CompileError
	switch {
	case errors.As(err, &ce):
		for _, e := range ce.Errs {
			fmt.Fprintln(env.Stderr, e)
		}
		return Exit(ExitCompile, err)
	case errors.Is(err, engine.ErrActivationTimeout), bundle.ReasonOf(err) == bundle.ReasonNoDecision, bundle.ReasonOf(err) == bundle.ReasonTooLarge:
		// Bundles a sidecar would refuse (activation_timeout, no_decision, too_large), as for
		// a compile error.
		return Exit(ExitCompile, err)
	case errors.Is(err, build.ErrTestsFailed), errors.Is(err, verify.ErrScenarioFile):
		// A scenario file that cannot be read is tests that cannot run, as in `consentry test`.
		return Exit(ExitTestsFailed, err)
	case err != nil:
		return Exit(ExitFailure, err)
	}
	if err := os.WriteFile(*out, res.Tarball, 0o644); err != nil {
		return Exit(ExitFailure, err)
	}
	tests := "skipped"
	if res.Tests != nil {
		tests = fmt.Sprintf("%d passed", res.Tests.Passed)
	}
	signed := "unsigned"
	if opts.Sign != nil {
		signed = "signed by " + opts.Sign.KeyID
	}
	fmt.Fprintf(env.Stdout, "built %s: revision %s, roots %v, %d modules, tests %s, %s\n", *out, res.Revision, res.Roots, res.Modules, tests, signed)
	return nil
}

// readBundleFile reads a bundle tarball, at most limit + 1 bytes of it (limit:
// --max-size-bytes): enough for Sign and Verify to refuse a larger one (too_large) without
// reading it whole.
func readBundleFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit+1))
}

func runBundleSign(_ context.Context, env *Env, args []string) error {
	c := commands["bundle sign"]
	fs := NewFlags(c, env)
	out := fs.String("o", "", "output file (default: overwrite BUNDLE)")
	sf := addSignFlags(fs)
	maxSize := addMaxSizeFlag(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	in, err := onePositional(c, pos, "bundle")
	if err != nil {
		return err
	}
	if *sf.key == "" || *sf.keyid == "" {
		return Usagef("--signing-key and --keyid are required")
	}
	if err := checkLimits(maxSize, nil); err != nil {
		return err
	}
	so, err := sf.options()
	if err != nil {
		return err
	}
	so.MaxSizeBytes = *maxSize
	raw, err := readBundleFile(in, *maxSize)
	if err != nil {
		return Exit(ExitFailure, err)
	}
	signed, err := build.Sign(raw, *so)
	if err != nil {
		return Exit(ExitFailure, err)
	}
	if *out == "" {
		*out = in
	}
	if err := os.WriteFile(*out, signed, 0o644); err != nil {
		return Exit(ExitFailure, err)
	}
	fmt.Fprintf(env.Stdout, "signed %s with %s (%s)\n", *out, *sf.keyid, so.Algorithm)
	return nil
}

func runBundleVerify(ctx context.Context, env *Env, args []string) error {
	c := commands["bundle verify"]
	fs := NewFlags(c, env)
	key := fs.String("verification-key", "", "PEM public key")
	alg := fs.String("signing-alg", "", algFlagHelp)
	keyid := fs.String("keyid", "", "key id the key is known by (the signature's kid must match)")
	scope := fs.String("scope", "", "scope the signature must carry")
	maxSize := addMaxSizeFlag(fs)
	activation := addActivationTimeoutFlag(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	in, err := onePositional(c, pos, "bundle")
	if err != nil {
		return err
	}
	if *key == "" || *keyid == "" {
		return Usagef("--verification-key and --keyid are required")
	}
	if err := checkLimits(maxSize, activation); err != nil {
		return err
	}
	if *alg, err = keyAlgorithm(*key, *alg); err != nil {
		return err
	}
	raw, err := readBundleFile(in, *maxSize)
	if err != nil {
		return Exit(ExitFailure, err)
	}
	vc := bundle.VerificationConfig{Keys: []bundle.KeyConfig{{ID: *keyid, Algorithm: *alg, KeyFile: *key}}, Scope: *scope}
	v, err := build.Verify(ctx, raw, build.VerifyOptions{Verification: vc, MaxSizeBytes: *maxSize, Engine: engine.Config{ActivationTimeout: *activation}})
	if err != nil {
		if bundle.ReasonOf(err) == "" {
			return Exit(ExitUsage, err) // bad key configuration
		}
		return Exit(ExitVerifyFailed, err)
	}
	fmt.Fprintf(env.Stdout, "OK %s: revision %s, signed by %s, %d modules\n", in, v.Revision, v.KeyID, len(v.Bundle.Modules))
	return nil
}

func runBundleInspect(_ context.Context, env *Env, args []string) error {
	c := commands["bundle inspect"]
	fs := NewFlags(c, env)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	in, err := onePositional(c, pos, "bundle")
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(in)
	if err != nil {
		return Exit(ExitFailure, err)
	}
	info, err := build.Inspect(raw)
	if err != nil {
		return Exit(ExitFailure, err)
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	fmt.Fprintf(env.Stdout, "revision: %s\nroots:    %v\nschemas:  %v\n", info.Revision, info.Roots, info.Schemas)
	if s := info.Signature; s != nil {
		iat := ""
		if s.IssuedAt > 0 {
			iat = time.Unix(s.IssuedAt, 0).UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(env.Stdout, "signature (NOT verified - use `bundle verify`): alg %s, kid %q, scope %q, issued %s, %d files\n", s.Algorithm, s.KeyID, s.Scope, iat, len(s.Files))
	} else {
		fmt.Fprintln(env.Stdout, "signature: none")
	}
	for _, w := range info.Warnings {
		fmt.Fprintf(env.Stdout, "warning: %s\n", w)
	}
	fmt.Fprintln(env.Stdout, "files:")
	for _, f := range info.Files {
		fmt.Fprintf(env.Stdout, "  %-50s %8d  sha256:%s\n", f.Name, f.Size, f.SHA256[:16])
	}
	return nil
}

func runBundleKeygen(_ context.Context, env *Env, args []string) error {
	c := commands["bundle keygen"]
	fs := NewFlags(c, env)
	out := fs.String("o", "", "output base path (writes BASE.key and BASE.pub)")
	alg := fs.String("alg", "ES256", "ES256, ES384 or RS256")
	if _, err := parseInterleaved(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return Usagef("-o BASE is required")
	}
	if err := build.Keygen(*alg, *out); err != nil {
		return Exit(ExitFailure, err)
	}
	fmt.Fprintf(env.Stdout, "wrote %s.key (private - keep it secret) and %s.pub\n", *out, *out)
	return nil
}
