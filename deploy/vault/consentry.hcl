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
# other transit key, and no encrypt/decrypt/datakey endpoints at all.
path "transit/keys/consentry-*" {
  capabilities = ["create", "read", "update", "delete"]
}

# Token lifecycle: the lifetime watcher renews the token; the token method checks it at login.
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
