// Package e2e holds the end-to-end suite: every test starts real processes - the consentry
// and democrm binaries, a real Vault dev server, the machine's PostgreSQL - and talks to them
// over real HTTP and gRPC, the way a CRM client, Envoy and an operator would. The demo
// (`make demo`) runs the same stack and the same tour (sidecar/demo), so what the demo shows
// is what this suite proves.
package e2e
