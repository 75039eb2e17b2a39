# consentry: the least-privilege Vault policy the sidecar needs (docs/key-model.md).
# Install: vault policy write consentry deploy/vault/consentry.hcl
# It assumes transit mounted at "transit/" and the default key name template
# "consentry-{customer}-{class}" (vault.key_name must keep the "consentry-" prefix).

# Release: export the customer's keys of the scopes a decision allowed (decrypt locally).
path "transit/export/encryption-key/consentry-*" {
  capabilities = ["read"]
}

# Write path: create a customer's missing key (POST transit/keys/NAME); erasure: read the key's
# versions for the destruction record, set deletion_allowed (POST .../config) and delete it.
# The prefix glob also covers rotate/trim of consentry's own keys; it grants nothing on any
# other transit key (the decision-log signing key below included), and no encrypt/decrypt/
# datakey endpoints at all.
path "transit/keys/consentry-*" {
  capabilities = ["create", "read", "update", "delete"]
}

# Decision-log checkpoint signing (decision_log.signing_vault_key, docs/decision-log.md): read
# the ed25519 key's public half (once logged in), then sign each checkpoint. The key is named
# outside the "consentry-" prefix so that the erasure grants above (set deletion_allowed, delete)
# cannot reach it: the token may use it but never configure, rotate, export or delete it.
# Create it once: vault write transit/keys/decision-log-signing type=ed25519
# Using another name? Change both exact paths below, and keep it out of "consentry-*".
# Without signing_vault_key (checkpoints signed with signing_key_file) these two grants are unused.
path "transit/keys/decision-log-signing" {
  capabilities = ["read"]
}
path "transit/sign/decision-log-signing" {
  capabilities = ["update"]
}

# Token lifecycle: the lifetime watcher renews the token; the token method checks it at login.
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
