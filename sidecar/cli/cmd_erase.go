package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/consentry/consentry/vaultkeys"
)

// `consentry erase`: crypto-shred a customer. Through a running sidecar's admin API (--admin),
// the destruction record also goes to the decision log; directly against Vault (--config), it
// goes to the shredded-keys ledger and stdout, and running sidecars sharing the ledger see the
// erasure within a second. Directly, the ledger must already exist: a relative
// vault.ledger_path resolved from another working directory than the sidecar's would
// otherwise start a new ledger that no sidecar reads, and the erasure would be forgotten by
// the next key creation or Vault restore.

func init() {
	c := &Command{
		Name:    "erase",
		Summary: "crypto-shred a customer: destroy their Vault keys so every copy of their encrypted data becomes unreadable",
		Usage:   "--customer ID --reason TEXT [--admin URL --token-file FILE | --config FILE] [--actor NAME]",
	}
	c.Run = func(ctx context.Context, env *Env, args []string) error {
		fs := NewFlags(c, env)
		kf := addKeysFlags(fs)
		customer := fs.String("customer", "", "customer id (required)")
		reason := fs.String("reason", "", "why (consent withdrawn, erasure request ticket, retention expiry...) (required)")
		actor := fs.String("actor", "", "who asks (default cli:$USER); with --admin the authenticated admin is the actor")
		adminURL := fs.String("admin", "", "erase through a running sidecar's admin API at this base URL (the decision log records it)")
		tokenFile := fs.String("token-file", "", "file holding the admin token (default $CONSENTRY_ADMIN_TOKEN)")
		if err := ParseFlags(fs, args); err != nil {
			return err
		}
		if *customer == "" || strings.TrimSpace(*reason) == "" {
			return Usagef("--customer and --reason are required")
		}
		if *adminURL != "" {
			return eraseViaAdmin(ctx, env, *adminURL, *tokenFile, *customer, *reason)
		}
		if *actor == "" {
			*actor = "cli:unknown"
			if u, err := user.Current(); err == nil {
				*actor = "cli:" + u.Username
			}
		}
		m, err := kf.open(ctx, env)
		if err != nil {
			return err
		}
		defer m.Close()
		rec, err := m.Erase(ctx, *customer, *actor, *reason)
		if rec != nil {
			enc := json.NewEncoder(env.Stdout)
			enc.SetIndent("", "  ")
			if werr := enc.Encode(rec); werr != nil {
				return werr
			}
		}
		if errors.Is(err, vaultkeys.ErrInvalidCustomer) {
			return Usagef("%v", err)
		}
		if err != nil {
			return err
		}
		// The absolute path: the operator can check it is the ledger the sidecars read.
		fmt.Fprintf(env.Stderr, "erase: keys destroyed and recorded in the shredded-keys ledger %s; the state store and the decision log were not told (use --admin for the whole erasure)\n", m.Ledger().Path())
		return nil
	}
	Register(c)
}

func eraseViaAdmin(ctx context.Context, env *Env, base, tokenFile, customer, reason string) error {
	token := os.Getenv("CONSENTRY_ADMIN_TOKEN")
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return Usagef("--token-file: %v", err)
		}
		token = strings.TrimSpace(string(b))
	}
	body, _ := json.Marshal(vaultkeys.EraseRequest{Reason: reason})
	u := strings.TrimRight(base, "/") + "/v1/customers/" + url.PathEscape(customer) + "/erase"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return Usagef("--admin: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := adminHTTPClient(30 * time.Second).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 3 {
		return fmt.Errorf("admin API answered %s to %s (Location %q); redirects are not followed, nothing was erased: pass the admin listener's own URL as --admin",
			resp.Status, u, resp.Header.Get("Location"))
	}
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	env.Stdout.Write(out)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		env.Stdout.Write([]byte("\n"))
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		// The admin API answers an erasure with its destruction record; a 200 without one is
		// some other server (a proxy's or login page), which erased nothing.
		var ok struct {
			Record json.RawMessage `json:"record"`
		}
		if json.Unmarshal(out, &ok) != nil || len(ok.Record) == 0 || string(ok.Record) == "null" {
			return fmt.Errorf("admin API answered %s without an erasure record: is %s the sidecar's admin listener? nothing is known to be erased", resp.Status, base)
		}
		return nil
	case resp.StatusCode == http.StatusBadRequest:
		return Usagef("admin API refused: %s", resp.Status)
	default:
		return fmt.Errorf("admin API: %s", resp.Status)
	}
}

// adminHTTPClient is the client of the CLI's admin API calls. It never follows a redirect: Go
// resends a POST answered 301, 302 or 303 as a GET without its body, so a redirect (http to
// https, a moved host, an SSO gateway's login page) would end in some page's 200, reported as
// done while nothing was. A 3xx is returned as it is, for the caller to fail on.
func adminHTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
