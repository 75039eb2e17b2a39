package demo

import (
	"fmt"
	"strings"
)

// TryIt is the closing text: how to poke the running stack by hand.
func TryIt(s *Stack) string {
	tok, _ := s.Token(Agent)
	mkt, _ := s.Token(Marketer)
	var b strings.Builder
	fmt.Fprintf(&b, `
consentry is running. Try it (tokens are valid for an hour; Ctrl-C stops everything):

  # support agent, assigned case: contact details decrypted, card withheld
  curl -s %[1]s/api/customers/c-000001 -H 'Authorization: Bearer %[2]s' \
       -H 'X-Purpose: %[3]s' -H 'X-Case-Id: case-1'

  # the same without the case: 403 case.missing
  curl -s %[1]s/api/customers/c-000001 -H 'Authorization: Bearer %[2]s' -H 'X-Purpose: %[3]s'

  # marketing list: only opted-in customers
  curl -s '%[1]s/api/customers?page_size=10' -H 'Authorization: Bearer %[4]s' -H 'X-Purpose: %[5]s'

  # admin API: a customer's consent history, status of every component
  curl -s %[6]s/v1/customers/c-000003/consents/history -H 'Authorization: Bearer %[7]s'
  curl -s %[6]s/status -H 'Authorization: Bearer %[7]s'

  # the audit trail
  bin/consentry audit verify %[8]s --public-key %[9]s/signing.pub
  bin/consentry audit query %[8]s --purpose %[5]s

  config: %[10]s    logs: %[11]s/logs/
`, s.ProxyURL, tok, PurposeSupport, mkt, PurposeMarketing, s.AdminURL, s.AdminToken,
		rel(s.Opts.Root, s.DecisionDir), rel(s.Opts.Root, s.KeysDir), rel(s.Opts.Root, s.ConfigPath), rel(s.Opts.Root, s.Opts.Dir))
	return b.String()
}
