// Command democrm is the demo CRM: a small customer-records HTTP API over SQLite that
// consentry is put in front of. It knows nothing about consentry.
//
//	democrm [serve] -listen 127.0.0.1:8081 -db democrm.db
//	democrm seed -db democrm.db -n 2000 -seed 42 -vault-addr http://127.0.0.1:8200 -vault-token root
//	democrm seed -db democrm.db -n 50 -plaintext
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/consentry/consentry/cmd/democrm/internal/crm"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	var ue usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, "democrm:", err)
		os.Exit(2)
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "democrm:", err)
		os.Exit(1)
	}
}

type usageError struct{ error }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && (args[0] == "serve" || args[0] == "seed") {
		cmd, args = args[0], args[1:]
	}
	if cmd == "seed" {
		return seed(ctx, args, stdout, stderr)
	}
	return serve(ctx, args, stdout, stderr)
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("democrm serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8081", "address to serve the CRM API on (port 0 picks a free one)")
	dbPath := fs.String("db", "democrm.db", "SQLite database file (created if missing)")
	if err := parse(fs, args); err != nil {
		return err
	}
	store, err := crm.Open(*dbPath)
	if err != nil {
		return err
	}
	defer store.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	srv := &http.Server{Handler: crm.NewServer(store, log), ReadHeaderTimeout: 10 * time.Second}
	// The e2e suite and the demo read this line to learn the address.
	fmt.Fprintf(stdout, "democrm listening on http://%s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

func seed(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("democrm seed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dbPath := fs.String("db", "democrm.db", "SQLite database file (created if missing)")
	n := fs.Int("n", 2000, "number of customers")
	seedVal := fs.Uint64("seed", 42, "random seed; the same seed gives the same data set")
	plaintext := fs.Bool("plaintext", false, "store sensitive fields unencrypted, without Vault (tests only)")
	addr := fs.String("vault-addr", os.Getenv("VAULT_ADDR"), "Vault address (default $VAULT_ADDR)")
	token := fs.String("vault-token", os.Getenv("VAULT_TOKEN"), "Vault token (default $VAULT_TOKEN)")
	mount := fs.String("transit-mount", "transit", "transit secrets engine mount")
	enable := fs.Bool("enable-transit", true, "enable the transit engine at -transit-mount if it is not mounted")
	workers := fs.Int("workers", 8, "concurrent Vault requests")
	force := fs.Bool("force", false, "replace the records of an already seeded database")
	if err := parse(fs, args); err != nil {
		return err
	}
	opts := crm.SeedOptions{N: *n, Seed: *seedVal, Plaintext: *plaintext, Mount: *mount, Workers: *workers, Force: *force}
	if !*plaintext {
		if *addr == "" {
			return usageError{errors.New("seed: -vault-addr (or VAULT_ADDR) is required unless -plaintext")}
		}
		client, err := crm.NewVaultClient(*addr, *token, *workers)
		if err != nil {
			return err
		}
		if *enable {
			if err := crm.EnsureTransit(ctx, client, *mount); err != nil {
				return err
			}
		}
		opts.Vault = client
	}
	store, err := crm.Open(*dbPath)
	if err != nil {
		return err
	}
	defer store.Close()
	stats, err := crm.Seed(ctx, store, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "seeded %d customers, %d notes, %d cases into %s in %s (transit keys: %d, encryption: %s)\n",
		stats.Customers, stats.Notes, stats.Cases, *dbPath, stats.Total.Round(time.Millisecond), stats.Keys,
		stats.Encrypt.Round(time.Millisecond))
	return nil
}
